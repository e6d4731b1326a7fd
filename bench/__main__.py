"""Run the benchmark suite and print the ratio table.

    python -m bench                 # full pyperf run (20 processes per benchmark)
    python -m bench --quick         # 3 processes x 3 values: a minute or two
    python -m bench --only lru,pool # some groups only (also: state-writes, analytics-latency, turn-bytes)

Writes the pyperf JSON to bench/results/suite-<UTC time>.json and the table to
bench/results/latest.md. After the timing table come the count tables
(REPORTS below): state-file writes, write-behind vs write-through; analytics
emit() latency percentiles and SQLite transactions per 10,000 events;
bytes per stored conversation turn, compressed vs plain.
Ratios are computed inside one run only: these machines are noisy, so
absolute times from different runs are not compared.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from pathlib import Path

# `python -m bench` puts the checkout first on sys.path; move it last, before
# anything imports fastcore, so this process (which runs the count reports)
# uses the installed fastcore with its compiled modules, as the pyperf workers do.
_CHECKOUT = str(Path(__file__).resolve().parent.parent)
sys.path[:] = [p for p in sys.path if p not in ("", ".", _CHECKOUT)] + [_CHECKOUT]

import pyperf  # noqa: E402

from bench import table  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
# Count tables printed after the timing table: name (for --only) -> module
# path; each module has markdown() -> str. They measure counts and latency
# distributions, which pyperf's mean-time model does not fit.
REPORTS = {
    "state-writes": "bench.workloads.shell_statewrites",
    "analytics-latency": "bench.workloads.shell_analytics",
    "turn-bytes": "bench.workloads.shell_turns",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 processes x 3 values per benchmark")
    parser.add_argument("--only", default="", help="comma-separated groups (e.g. lru,ratewin)")
    parser.add_argument("--output", type=Path, help="pyperf JSON path (default: bench/results/suite-<time>.json)")
    args = parser.parse_args(argv)

    RESULTS.mkdir(exist_ok=True)
    output = (args.output or RESULTS / f"suite-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json").resolve()
    cmd = [sys.executable, str(BENCH_DIR / "suite.py"), "--output", str(output)]
    if args.quick:
        cmd += ["--processes", "3", "--values", "3", "--warmups", "1"]
    only = {name for name in args.only.split(",") if name}
    timed = only - set(REPORTS)
    if timed:
        cmd += ["--only", ",".join(sorted(timed))]
    report = ""
    if timed or not only:
        # Run from outside the checkout so the installed fastcore is the one measured.
        subprocess.run(cmd, check=True, cwd=RESULTS)
        suite = pyperf.BenchmarkSuite.load(str(output))
        report = f"{table.machine(suite)}\n\n{table.markdown(suite)}\n"
    for name, module_name in REPORTS.items():
        if name in only or not only:
            report += f"\n{importlib.import_module(module_name).markdown()}\n"
    (RESULTS / "latest.md").write_text(f"Command: python -m bench {' '.join(argv or sys.argv[1:])}\n\n{report}")
    print(report)
    if timed or not only:
        print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
