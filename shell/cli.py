"""The ``triobot`` command line."""

from __future__ import annotations

import argparse
import json
import sys

import fastcore
from shell import __version__


def _cmd_info(args: argparse.Namespace) -> int:
    """Print the version and which fastcore implementation each module uses."""
    info = {
        "version": __version__,
        "python": sys.version.split()[0],
        "fastcore_compiled": fastcore.COMPILED,
        "fastcore": fastcore.IMPLEMENTATION,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"triobot {info['version']} on Python {info['python']}")
        for name, kind in info["fastcore"].items():
            print(f"  fastcore.{name:<9} {kind}")
    return 0


def _duration(text: str) -> float:
    """argparse type for ``--since``: seconds in ``30m``, ``24h``, ``7d`` ..."""
    from shell.analytics.report import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _cmd_report(args: argparse.Namespace) -> int:
    """Print the analytics summary for the last ``--since`` from ``--db``; exit 1 if it cannot be read."""
    from shell.analytics.report import ReportError, build_report, render

    try:
        report = build_report(args.db, args.since, top=args.top)
    except ReportError as error:
        print(f"triobot report: {error}", file=sys.stderr)
        return 1
    print(render(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triobot", description="A chat-bot runtime for LLMs on Trio.")
    parser.add_argument("--version", action="version", version=f"triobot {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="version and fastcore implementation in use")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=_cmd_info)
    report = commands.add_parser("report", help="analytics summary from the database")
    report.add_argument("--since", type=_duration, default="24h", help="period to cover, e.g. 30m, 24h, 7d (default 24h)")
    # The default is shell.analytics.writer.DEFAULT_PATH, spelt out so that other commands need not import numpy.
    report.add_argument("--db", default="data/analytics.db", help="analytics database (default data/analytics.db)")
    report.add_argument("--top", type=int, default=10, help="commands to list (default 10)")
    report.set_defaults(handler=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
