#!/usr/bin/env python3
"""Row 1 (SIGTERM -> PID 1 gone) split into phases, hermesinit against tini.

    bench/stop_phases.py HERMESINIT_BINARY [STOPS]      (root; needs perf and bench/results/hb)

Runs STOPS interleaved stops of each (the row-1 setup of bench.py), recording only a few
low-rate tracepoints system-wide, then prints the median of each phase:

  term -> fwd          PID 1 woken by the SIGTERM until it signals the main program
  fwd -> chld          the main program's death, until its SIGCHLD reaches PID 1
  chld -> exit_group   PID 1's own work after the reap, to its exit_group
  exit_group -> pexit  into the kernel's do_exit
  pexit -> anon        exit_mm: the page-table teardown (up to the first anon_vma freed)
  anon -> files        exit_mm's rest (page tables, VMAs, pages), up to files_struct freed
  files -> fput_end    the deferred release of PID 1's open files
  fput_end -> obs      exit_notify (the namespace's end) until the observer is woken

The tracing costs each event ~1 us, so totals run above `hb stopbench`'s; compare phases.
"""
import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402

EVENTS = ["-e", "signal:signal_generate", "-e", "sched:sched_process_exit",
          "-e", "sched:sched_wakeup", "--filter", 'comm == "hb"',
          "-e", "raw_syscalls:sys_enter", "--filter", "id == 231",
          "-e", "kmem:kmem_cache_free", "--filter", 'name == "files_cache" || name == "filp" || name == "anon_vma"']
PAT = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")
ORDER = ["term", "fwd", "chld", "exit_group", "pexit", "anon", "files", "fput_end", "obs"]


def drive(binary, stops):
    """Child mode: run the stops (perf records around this process)."""
    b = bench.Bench(argparse.Namespace(hermesinit=binary, hb=os.path.join(HERE, "results", "hb"),
                                       rounds=1, quick=True, env=[]))
    try:
        inits = {"hermesinit": [b.hi, "init", b.hb, "ready", b.fifo],
                 "tini": ["tini", "--", b.hb, "ready", b.fifo]}
        for _ in range(stops):
            for cmd in inits.values():
                b.stopbench(cmd, 1, 50, b.env())
    finally:
        shutil.rmtree(b.w, ignore_errors=True)


def phases(script_text):
    ev = []
    for line in script_text.splitlines():
        m = PAT.match(line)
        if m:
            comm, pid, _tid, _cpu, t, e, rest = m.groups()
            ev.append((float(t) * 1e6, comm.strip(), int(pid), e.split(":")[1], rest))
    res = collections.defaultdict(lambda: collections.defaultdict(list))
    for i, (t, comm, _pid, e, rest) in enumerate(ev):
        if not (e == "signal_generate" and comm == "hb" and "sig=15" in rest):
            continue
        m = re.search(r"comm=(\S+) pid=(\d+)", rest)
        # hermesinit names itself s6-svscan (Hermes looks for that process).
        who, p1 = m.group(1), int(m.group(2))
        if who not in ("s6-svscan", "tini"):
            continue
        mk = {"term": t}
        for (t2, _c2, p2, e2, r2) in ev[i + 1:]:
            if t2 - t > 20000:
                break
            if p2 == p1 and e2 == "signal_generate" and "sig=15" in r2:
                mk.setdefault("fwd", t2)
            if e2 == "signal_generate" and "sig=17" in r2 and f"pid={p1} " in r2:
                mk.setdefault("chld", t2)
            if p2 == p1 and e2 == "sys_enter":
                mk["exit_group"] = t2
            if p2 == p1 and e2 == "sched_process_exit":
                mk["pexit"] = t2
            if "pexit" in mk and p2 == p1:
                if "name=anon_vma" in r2:
                    mk.setdefault("anon", t2)
                if "files_cache" in r2:
                    mk["files"] = t2
                if "name=filp" in r2:
                    mk["fput_end"] = t2
            if "pexit" in mk and e2 == "sched_wakeup":
                mk["obs"] = t2
                break
        if "obs" not in mk:
            continue
        name = "hermesinit" if who == "s6-svscan" else who
        prev = None
        for k in ORDER:
            if k in mk:
                if prev:
                    res[name][f"{prev} -> {k}"].append(mk[k] - mk[prev])
                prev = k
        res[name]["total"].append(mk["obs"] - mk["term"])
    return res


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--drive":
        drive(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("stops", nargs="?", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        subprocess.run(["perf", "record", "-q", "-o", data, "-a"] + EVENTS +
                       ["--", sys.executable, __file__, "--drive", a.binary, str(a.stops)],
                       check=True, stdout=subprocess.DEVNULL)
        text = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,cpu,time,event,trace", "--ns"],
                              check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    res = phases(text)
    names = [n for n in ("hermesinit", "tini") if n in res]
    keys = [k for k in res[names[0]]] if names else []
    print(f"{'phase (median µs)':24s}" + "".join(f"{n:>12s}" for n in names))
    for k in keys:
        print(f"{k:24s}" + "".join(f"{statistics.median(res[n][k]):12.1f}" if res[n].get(k) else f"{'-':>12s}"
                                    for n in names))
    print("stops used: " + ", ".join(f"{n} {len(res[n]['total'])}" for n in names))


if __name__ == "__main__":
    main()
