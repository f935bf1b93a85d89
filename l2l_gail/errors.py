"""The one exception type the command line turns into a one-line message, and the turning."""

from __future__ import annotations

import sys
from collections.abc import Callable


class L2LError(Exception):
    """A user-facing error: bad input, a name collision, a corrupted file, a diverged loss.

    The message must say what is wrong and what to do about it, in one line; the CLI prints
    it as ``error: <message>`` and exits with status 2 instead of showing a traceback.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library messages run to paragraphs), or its type
    name when the message is empty: the reason a one-line error quotes."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def exit_status(run: Callable[[], int | None]) -> int:
    """Call ``run`` as a command's body and return the command's exit status.

    An :class:`L2LError` becomes ``error: <message>`` on stderr and status 2; Ctrl-C becomes one
    line saying the last checkpoint is kept and status 130 (every long-running command here
    checkpoints and resumes). Anything else is a bug and keeps its traceback.
    """
    try:
        return int(run() or 0)
    except L2LError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130
