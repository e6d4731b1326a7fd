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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triobot", description="A chat-bot runtime for LLMs on Trio.")
    parser.add_argument("--version", action="version", version=f"triobot {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="version and fastcore implementation in use")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=_cmd_info)
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
