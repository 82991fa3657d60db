#!/usr/bin/env python3
"""Compares two builds of one criterion benchmark by paired runs.

Runs BASE and NEW alternately (BASE first in odd rounds, NEW first in even ones) so that the
machine's changes of speed fall on both alike, then prints, for every benchmark, the median
over the rounds of each binary's median time and their ratio.

    scripts/paired_bench.py ROUNDS BASE NEW -- CRITERION_ARGS...

BASE and NEW are benchmark executables, e.g. copies of what `cargo bench -p flagstaff-engine
--bench eval --no-run` prints for each commit; CRITERION_ARGS are passed to both, e.g.
`--bench '^evaluate' --measurement-time 3`. docs/benchmarks.md has the whole procedure.
"""
import re
import statistics
import subprocess
import sys
import tempfile

UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
TIME = re.compile(r"^(?P<name>\S.*?)?\s+time:\s+\[\S+ \S+ (?P<median>\S+) (?P<unit>\S+) \S+ \S+\]")


def run(executable, args, workdir):
    """Each benchmark's median time in ns, by name, from one run of `executable`."""
    out = subprocess.run(
        [executable, *args], capture_output=True, text=True, cwd=workdir, check=True
    ).stdout
    medians, name = {}, None
    for line in out.splitlines():
        match = TIME.match(line)
        if match:
            name = (match.group("name") or name or "?").strip()
            medians[name] = float(match.group("median")) * UNITS[match.group("unit")]
        elif line and not line[0].isspace() and not line.startswith(("Benchmarking", "Found")):
            name = line.strip()  # a long name sits on its own line, its times on the next
    return medians


def main():
    if "--" not in sys.argv or len(sys.argv[: sys.argv.index("--")]) != 4:
        sys.exit(__doc__)
    rounds, base, new = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    args = sys.argv[sys.argv.index("--") + 1 :]
    times = {"base": {}, "new": {}}
    workdir = tempfile.mkdtemp()  # criterion's saved baselines stay out of the tree
    for r in range(rounds):
        order = [("base", base), ("new", new)]
        for which, executable in order if r % 2 == 0 else reversed(order):
            for name, ns in run(executable, args, workdir).items():
                times[which].setdefault(name, []).append(ns)
        print(f"round {r + 1} of {rounds} done", file=sys.stderr)
    print(f"{'benchmark':50} {'base ns':>9} {'new ns':>9} {'new/base':>9}")
    for name, base_times in times["base"].items():
        b = statistics.median(base_times)
        n = statistics.median(times["new"].get(name, [float("nan")]))
        print(f"{name:50} {b:9.2f} {n:9.2f} {n / b:9.3f}")


if __name__ == "__main__":
    main()
