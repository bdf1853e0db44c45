#!/usr/bin/env python3
"""Row 1 (SIGTERM -> PID 1 gone) for several hermesinit builds and tini, interleaved in one run.

    bench/compare_stop.py [--stops N] NAME=BINARY [NAME=BINARY ...]     (root; bench/results/hb)

Two builds measured in separate `bench/run` invocations differ by this VM's drift between runs
(5-10 %); interleaved stops of both, with tini and tini-static, in the same run do not. Prints
each contender's median, quartiles and ratio to tini.
"""
import argparse
import os
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stops", type=int, default=61)
    ap.add_argument("builds", nargs="+", metavar="NAME=BINARY")
    a = ap.parse_args()
    builds = [x.split("=", 1) for x in a.builds]
    if any(len(x) != 2 for x in builds):
        ap.error("each build is NAME=BINARY")
    b = bench.Bench(argparse.Namespace(hermesinit=builds[0][1], hb=os.path.join(HERE, "results", "hb"),
                                       rounds=a.stops, quick=True, env=[]))
    try:
        inits = {}
        for name, path in builds:
            # Each copy is called hermesinit: the binary dispatches on its name.
            d = b.p("bin", "build-" + name)
            os.makedirs(d)
            shutil.copy2(path, os.path.join(d, "hermesinit"))
            inits[name] = [os.path.join(d, "hermesinit"), "init", b.hb, "ready", b.fifo]
        inits["tini"] = ["tini", "--", b.hb, "ready", b.fifo]
        inits["tini-static"] = ["tini-static", "--", b.hb, "ready", b.fifo]
        res = b.run_rounds(list(inits), a.stops,
                           lambda n, r: b.stopbench(inits[n], 1, 50, b.env())["stop_ns"] / 1e3)
    finally:
        shutil.rmtree(b.w, ignore_errors=True)
    tini = statistics.median(res["tini"])
    for n, xs in res.items():
        xs = sorted(xs)
        m = statistics.median(xs)
        print(f"{n:14s} median {m:7.1f} µs  quartiles {xs[len(xs) // 4]:7.1f}–{xs[3 * len(xs) // 4]:7.1f}"
              f"  {m / tini:.3f}× tini  ({len(xs)} stops)")


if __name__ == "__main__":
    main()
