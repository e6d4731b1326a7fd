"""The pyperf script behind ``python -m bench``: one benchmark per (group, variant).

pyperf re-runs this file in worker processes, so registration order must be
deterministic and all set-up happens lazily inside the time functions.
"""

import sys
from pathlib import Path

# Make `bench` importable when run as a script, but append rather than prepend:
# an installed fastcore (with its compiled modules) must win over the checkout.
sys.path.append(str(Path(__file__).resolve().parent.parent))

import pyperf  # noqa: E402

from bench.workloads import GROUPS  # noqa: E402


def _pass_only(cmd, args):
    if args.only:
        cmd.extend(("--only", args.only))


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=_pass_only)
    runner.argparser.add_argument("--only", default="", help="comma-separated groups to run")
    args = runner.parse_args()
    only = {name for name in args.only.split(",") if name}
    unknown = only - {group.GROUP for group in GROUPS}
    if unknown:
        raise SystemExit(f"unknown group(s): {', '.join(sorted(unknown))}")
    for group in GROUPS:
        if only and group.GROUP not in only:
            continue
        for variant, time_func in group.VARIANTS.items():
            runner.bench_time_func(f"{group.GROUP}/{variant}", time_func)


if __name__ == "__main__":
    main()
