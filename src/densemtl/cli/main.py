"""``densemtl`` entry point. Each subcommand module exposes ``add_parser(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__

# one module per subcommand; adding a command = adding its module name here
COMMANDS = ("train", "eval", "predict", "figure", "table", "demo", "study", "models", "data", "convert", "export")
_MODULES = {"eval": "evaluate"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densemtl",
        description="Dense multi-task learning with cross-task attention (DenseMTL, WACV 2023).",
    )
    parser.add_argument("--version", action="version", version=f"densemtl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{_MODULES.get(name, name)}", __package__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, TypeError, OSError, FloatingPointError) as e:
        print(f"densemtl {args.command}: error: {error_message(e)}", file=sys.stderr)
        return 2


def error_message(e: Exception) -> str:
    """The one-line message of an error a user can cause (a bad file, key, path or disk)."""
    from ..fileio import os_error_message

    if isinstance(e, OSError):
        return os_error_message(e)
    return str(e.args[0] if isinstance(e, KeyError) and e.args else e)


if __name__ == "__main__":
    sys.exit(main())
