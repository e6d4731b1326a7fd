"""Turn a pyperf suite JSON from ``python -m bench`` into the ratio table.

``python -m bench.table bench/results/FILE.json`` prints it again later.
"""

from __future__ import annotations

import sys

import pyperf

from bench.workloads import GROUPS


def _format_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def rows(suite: pyperf.BenchmarkSuite) -> list[dict]:
    """One row per measured variant: its time and the subject/variant ratio."""
    by_name = {bench.get_name(): bench for bench in suite.get_benchmarks()}
    out = []
    for group in GROUPS:
        subject = by_name.get(f"{group.GROUP}/{group.SUBJECT}")
        targets = dict(group.TARGETS)
        for variant in group.VARIANTS:
            bench = by_name.get(f"{group.GROUP}/{variant}")
            if bench is None:
                continue
            row = {
                "group": group.GROUP,
                "variant": variant,
                "mean": bench.mean(),
                "stdev": bench.stdev() if bench.get_nvalue() > 1 else 0.0,
                "ratio": None,
                "target": targets.get(variant),
            }
            if subject is not None and variant != group.SUBJECT:
                row["ratio"] = subject.mean() / bench.mean()
            out.append(row)
    return out


def markdown(suite: pyperf.BenchmarkSuite) -> str:
    lines = [
        "| group | variant | time per loop (mean ± sd) | subject / variant | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows(suite):
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.3f}"
        target = "—" if row["target"] is None else f"<= {row['target']:.3g}"
        if row["target"] is None or row["ratio"] is None:
            met = ""
        else:
            met = "yes" if row["ratio"] <= row["target"] else "**MISSED**"
        spread = f"{_format_time(row['mean'])} ± {_format_time(row['stdev'])}"
        name = f"**{row['variant']}** (subject)" if row["ratio"] is None else row["variant"]
        lines.append(f"| {row['group']} | {name} | {spread} | {ratio} | {target} | {met} |")
    return "\n".join(lines)


def machine(suite: pyperf.BenchmarkSuite) -> str:
    meta = suite.get_metadata()
    keys = ("cpu_model_name", "cpu_count", "python_version", "platform", "date")
    return ", ".join(f"{key}={meta[key]}" for key in keys if key in meta)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m bench.table RESULTS.json")
    suite = pyperf.BenchmarkSuite.load(argv[0])
    print(machine(suite))
    print(markdown(suite))


if __name__ == "__main__":
    main()
