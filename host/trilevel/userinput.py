"""User input: the one rule for every command's options, and the errors that report bad input.

The rule, for every numeric option of every `trilevel` command:

* its value is parsed by one of the argparse types below (`int_in`, `float_in` and the named ranges
  built from them), whose error names the accepted range and the value given;
* non-finite values (nan, inf) are refused everywhere;
* 0 and negative values are accepted only where they mean exactly what they say (``--min-lr 0`` is a
  floor of 0, ``--num-workers 0`` loads in the main process, ``--warmup-epochs 0`` is no warm-up), and
  are refused otherwise; a value is never replaced by a default. An option's default is what you get
  by leaving it out (``default=None``, resolved by the library), never by passing 0;
* paths are checked before anything is written (`existing_file`, `output_dir`, `output_file`): a
  refused command leaves no files behind.

Bad input raises `UserError` (or reaches argparse's `error`, see `OneLineParser`). `trilevel.cli.main`
prints it as one line, ``trilevel <command>: error: <message>``, on stderr and exits with `EXIT_USAGE`
(2). Any other exception is a bug and keeps its traceback. A run stopped with Ctrl-C raises
`Interrupted`, which the CLI prints as one line saying where the last checkpoint is and how to resume.

Adding an option to a command::

    from trilevel.userinput import KEEP_RATIO, POSITIVE_INT, float_in
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help="default 300")
    p.add_argument("--clock-mhz", type=float_in(0, open_low=True), default=150.0)

Library code that validates values itself (configs built without the CLI) uses `check_range`.
`tests/test_cli_errors.py` holds every command to this: no option may parse with a bare int/float,
and a table of bad invocations must each end in exit 2, one stderr line and no files written.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

EXIT_USAGE = 2  # bad input (argparse's own code for usage errors)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, the shell convention)


class UserError(Exception):
    """Bad input: a file or option the user gave. The message is one line naming it."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C. `checkpoint` is the last checkpoint on disk (None: nothing saved yet),
    `epoch` the epoch it holds; the CLI turns this into the one-line resume hint, or prints `message`
    instead when one is given (a command without --resume)."""

    def __init__(self, checkpoint: Path | None, epoch: int = 0, epochs: int = 0, message: str = "") -> None:
        super().__init__(message or f"interrupted (last checkpoint: {checkpoint})")
        self.checkpoint, self.epoch, self.epochs, self.message = checkpoint, epoch, epochs, message


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``prog: error: message (see prog --help)``)
    with exit code 2, instead of the usage text and the message. Subparsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _range_text(low: float | None, high: float | None, open_low: bool, open_high: bool) -> str:
    def show(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    if low is not None and high is not None:
        return f"in {'(' if open_low else '['}{show(low)}, {show(high)}{')' if open_high else ']'}"
    if low is not None:
        return f"{'>' if open_low else '>='} {show(low)}"
    if high is not None:
        return f"{'<' if open_high else '<='} {show(high)}"
    return "finite"


def int_in(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [low, high] (None: unbounded on that side)."""
    text = _range_text(low, high, False, False)

    def parse(value: str) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {text}, got {value!r}") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise argparse.ArgumentTypeError(f"must be an integer {text}, got {value}")
        return number

    parse.__name__ = f"integer {text}"
    return parse


def float_in(
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> Callable[[str], float]:
    """argparse type: a finite number in the interval from low to high (open ends excluded)."""
    text = _range_text(low, high, open_low, open_high)

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {text}, got {value!r}") from None
        if not math.isfinite(number) or not _inside(number, low, high, open_low, open_high):
            raise argparse.ArgumentTypeError(f"must be a finite number {text}, got {value}")
        return number

    parse.__name__ = f"number {text}"
    return parse


def _inside(x: float, low: float | None, high: float | None, open_low: bool, open_high: bool) -> bool:
    if low is not None and (x < low or (open_low and x == low)):
        return False
    return not (high is not None and (x > high or (open_high and x == high)))


# The named ranges every command uses (a new range is added here, next to the rule).
POSITIVE_INT = int_in(1)  # counts and sizes: epochs, batch sizes, image sizes, jobs, threads
NON_NEGATIVE_INT = int_in(0)  # 0 is meaningful: --num-workers 0, --launch-cycles 0
SEED = int_in(0, 2**32 - 1)  # numpy's seed range
POSITIVE = float_in(0, open_low=True)  # lr, clock, bandwidth
NON_NEGATIVE = float_in(0)  # floors, decays, epochs of warm-up: 0 means none
KEEP_RATIO = float_in(0, 1, open_low=True)  # R_T, R_A, r_e: 1 keeps everything
FRACTION = float_in(0, 1, open_high=True)  # drop path, label smoothing, momentum, removal fraction


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """The same rule for values that do not come through argparse: UserError unless finite and in range."""
    if not math.isfinite(value) or not _inside(value, low, high, open_low, open_high):
        raise UserError(f"{name} must be a finite number {_range_text(low, high, open_low, open_high)}, "
                        f"got {value}")


def existing_file(value: str) -> Path:
    """argparse type: a readable regular file."""
    path = Path(value)
    if not path.is_file():
        problem = "not a file" if path.exists() else "no such file"
        raise argparse.ArgumentTypeError(f"{value}: {problem}")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{value}: not readable")
    return path


def shared_library(value: str) -> Path:
    """argparse type: an existing ELF shared library (the C-sim build), checked by its magic bytes."""
    path = existing_file(value)
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise argparse.ArgumentTypeError(f"{value}: not a shared library (no ELF header); build one "
                                             "with `make csim`")
    return path


def output_dir(value: str) -> Path:
    """argparse type: a folder to write into; it need not exist, but must not be a file or lie under
    one. Nothing is created here: commands create it once every input has been validated."""
    path = Path(value)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise argparse.ArgumentTypeError(f"{value}: {part} is a file, not a folder")
            if not os.access(part, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"{value}: {part} is not writable")
            break
    return path


def output_file(value: str) -> Path:
    """argparse type: a file to write; not a folder, and its folder (existing or not) can be made."""
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: is a folder, not a file")
    output_dir(str(path.parent))
    return path


def device(value: str) -> str:
    """argparse type: auto | cpu | cuda | cuda:N, with CUDA (and device N) present when asked for."""
    if value in ("auto", "cpu"):
        return value
    kind, _, index = value.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise argparse.ArgumentTypeError(f"{value}: CUDA is not available on this machine")
    if index and int(index) >= count:
        raise argparse.ArgumentTypeError(f"{value}: this machine has {count} CUDA device(s)")
    return value


def unreadable(path: str | os.PathLike, err: BaseException, what: str = "checkpoint") -> str:
    """One line for a file a loader refused (torch.load, Pillow, ...): the path, and the loader's own
    reason cut to its first sentence (torch appends pages of advice, some of it to file a bug)."""
    empty = os.path.isfile(path) and os.path.getsize(path) == 0
    text = (str(err).strip().splitlines() or [""])[0].split(". ")[0].strip().rstrip(".")
    reason = "empty file" if empty else (text[:100] or type(err).__name__)
    return f"{path}: cannot read the {what}: truncated, corrupt or not a {what} ({reason})"


def bars_disabled(progress: bool) -> bool:
    """tqdm's `disable` for a run's progress bars: off with --no-progress, and off when stderr is not
    a terminal (a log gets the per-epoch lines, not bar redraws). The epoch lines print either way."""
    return not (progress and sys.stderr.isatty())
