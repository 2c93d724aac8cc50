"""`trilevel` command line: each subcommand lives in its own module under trilevel.commands.

One error path for every command (trilevel.userinput): bad input is one line on stderr and exit code 2,
Ctrl-C is one line (with the resume command for a training run) and exit code 130; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import warnings

from trilevel.userinput import EXIT_INTERRUPTED, EXIT_USAGE, Interrupted, OneLineParser, UserError

# Each module defines `register(subparsers)`; the parser it adds sets `func(args) -> int`.
COMMAND_MODULES: tuple[str, ...] = (
    "train",
    "demo",
    "macs",
    "latency",
    "bench",
    "export",
    "compare",
    "program",
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="trilevel", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"trilevel.commands.{name}").register(subparsers)
    return parser


def resume_hint(stop: Interrupted, argv: list[str], has_resume: bool = True) -> str:
    """The one line printed after Ctrl-C: where the last checkpoint is and the command that resumes
    (with --resume added for a command that has the option; others resume by running again)."""
    if stop.message:
        return stop.message
    if stop.checkpoint is None:
        return "interrupted before the first checkpoint; nothing to resume, rerun the command to start over"
    again = argv if "--resume" in argv or not has_resume else [*argv, "--resume"]
    of = f" of {stop.epochs}" if stop.epochs else ""
    return (f"interrupted; last checkpoint {stop.checkpoint} (epoch {stop.epoch}{of}); "
            f"resume with: trilevel {shlex.join(again)}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # pynq's utilities import the deprecated pkg_resources: noise on every run that loads a backend.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    name = f"trilevel {argv[0]}" if argv and not argv[0].startswith("-") else "trilevel"
    try:
        try:
            args, unknown = build_parser().parse_known_args(argv)
        except SystemExit as done:  # --help, or a usage error argparse already printed: its exit code
            return done.code if isinstance(done.code, int) else EXIT_USAGE
        name = " ".join(["trilevel", args.command, *filter(None, [getattr(args, "export_command", None)])])
        if unknown:  # reported by the command's name (argparse would name only `trilevel`)
            raise UserError(f"unrecognized arguments: {' '.join(unknown)} (see {name} --help)")
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as stop:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for the whole job
            print(f"{name}: {resume_hint(stop, argv, hasattr(args, 'resume'))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
