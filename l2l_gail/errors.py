"""The one exception type the command line turns into a one-line message, and the turning."""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import sys
import threading
from collections.abc import Callable, Iterator

STUCK_EXIT_SECONDS = 20.0
"""A command still shutting down this long after Ctrl-C or SIGTERM prints every thread's stack to
stderr (and goes on shutting down), so a stuck exit says where it is stuck."""


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
    checkpoints and resumes). SIGTERM (``kill``, a batch scheduler's stop, a sweep worker that
    died) takes Ctrl-C's path, so a stopped run also keeps its checkpoint and removes its
    temporary files. Anything else is a bug and keeps its traceback.
    """
    with _interrupts():
        try:
            return int(run() or 0)
        except L2LError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: the last checkpoint is kept; continue with --resume", file=sys.stderr)
            return 130


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt and arm the :data:`STUCK_EXIT_SECONDS` watchdog.

    Only in the main thread (signal handlers can be set nowhere else), and only for a signal
    at its default action: one the shell set to be ignored (a background job's SIGINT) stays
    ignored. The previous handlers are restored on the way out.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ours = [sig for sig, handler in previous.items()
            if handler in (signal.default_int_handler, signal.SIG_DFL)]

    def interrupted(signum: int, frame: object) -> None:
        with contextlib.suppress(ValueError, OSError):  # no file descriptor 2
            faulthandler.dump_traceback_later(STUCK_EXIT_SECONDS, file=2)
        raise KeyboardInterrupt

    for sig in ours:
        signal.signal(sig, interrupted)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        for sig in ours:
            signal.signal(sig, previous[sig])
