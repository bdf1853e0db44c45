#!/usr/bin/env python3
"""Count the `cpuid` instructions a program executes (each one a VM exit in a guest).

    bench/cpuid_count.py PROGRAM [ARGS…]

Sets a gdb breakpoint on every `cpuid` that objdump finds in PROGRAM (a static binary) or, for a
dynamic one, in its ELF interpreter (ld.so, which answers the C library's CPU queries), runs the
program to its end and prints the count per function. Needs gdb and objdump. BENCHMARKS.md,
"Issue 12, third part": static glibc and tini's ld.so both execute 68 before `main`.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

GDB_SCRIPT = r"""
import gdb, json
gdb.execute("set pagination off"); gdb.execute("set confirm off")
gdb.execute("starti")
image, offsets = json.load(open(ARGS))
base = None
for line in gdb.execute("info proc mappings", to_string=True).splitlines():
    p = line.split()
    if len(p) >= 5 and os.path.realpath(p[-1]) == image and base is None:
        base = int(p[0], 16) - int(p[3], 16)
# A non-PIE executable is mapped at its link addresses.
base = base if base and base >= 0x10000000 else 0
counts = {}
class Site(gdb.Breakpoint):
    def stop(self):
        counts[self.location] = counts.get(self.location, 0) + 1
        return False
for off in offsets:
    Site("*0x%x" % (base + off), internal=True)
gdb.execute("continue")
print("CPUID-TOTAL", sum(counts.values()))
for loc, n in sorted(counts.items(), key=lambda kv: -kv[1]):
    print("CPUID-SITE", n, gdb.execute("info symbol " + loc[1:], to_string=True).strip())
"""


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    prog = os.path.realpath(subprocess.run(["which", sys.argv[1]], capture_output=True, text=True).stdout.strip()
                            or sys.argv[1])
    interp = re.search(r"interpreter: (\S+?)\]", subprocess.run(["readelf", "-l", prog], capture_output=True,
                                                                text=True).stdout)
    image = os.path.realpath(interp.group(1)) if interp else prog
    disasm = subprocess.run(["objdump", "-d", image], capture_output=True, text=True, check=True).stdout
    offsets = [int(m.group(1), 16) for m in re.finditer(r"^\s*([0-9a-f]+):.*\tcpuid", disasm, re.M)]
    with tempfile.TemporaryDirectory() as tmp:
        args = os.path.join(tmp, "args.json")
        with open(args, "w") as fh:
            json.dump([image, offsets], fh)
        script = os.path.join(tmp, "count.py")
        with open(script, "w") as fh:
            fh.write(f"import os\nARGS = {args!r}\n" + GDB_SCRIPT)
        out = subprocess.run(["gdb", "-q", "-batch", "-x", script, "--args", prog] + sys.argv[2:],
                             capture_output=True, text=True).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("CPUID-")]
    if not lines:
        print(f"cpuid_count: gdb gave no count for {prog}:\n{out[-2000:]}", file=sys.stderr)
        return 1
    print(f"{image}: {len(offsets)} cpuid sites")
    for ln in lines:
        kind, rest = ln.split(" ", 1)
        # A stripped binary names no function: "No symbol matches ADDR." stays as it is.
        print(f"executed: {rest}" if kind == "CPUID-TOTAL" else f"  {rest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
