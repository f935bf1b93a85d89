"""One job of a sweep: a command that writes one run directory, and :func:`execute`, which runs it.

:func:`execute` starts the command as a child process in its own session, its output appended to
``<run_dir>.log`` beside the run directory (never inside: a run directory holds only what the
run writes), with one torch/BLAS thread, and turns its exit into an :class:`Outcome`.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# One thread per run: a run's numbers then do not depend on the worker's cores (and runs sharing
# a machine do not oversubscribe it).
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
STOP_GRACE_SECONDS = 60.0
"""Time a stopped run gets to leave through its KeyboardInterrupt path before it is killed."""
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


@dataclass(frozen=True)
class Job:
    """One run of a sweep: a command (the arguments after the Python interpreter) and its directory.

    Attributes:
        name: shown in the progress view, e.g. ``hopper/gail/seed0``.
        command: e.g. ``("-m", "l2l_gail.cli", "gail", "train", "--task", "hopper", ...)``.
        run_dir: the directory the command writes (absolute, so that it does not depend on
            the worker's working directory).
        done_file: the file in ``run_dir`` whose presence means the job is finished.
        resume_args: appended to ``command`` when ``run_dir/config.yaml`` exists (a started run).
        check_finished: run the command even when the job is finished, so that it compares its
            configuration with the run's (the ``l2l`` train commands do on ``--resume``, and
            then stop: a finished run has nothing left to do); a grid edited since the run
            finished then fails instead of skipping a run of another configuration.
    """

    name: str
    command: tuple[str, ...]
    run_dir: Path
    done_file: str = "metrics.json"
    resume_args: tuple[str, ...] = ("--resume",)
    check_finished: bool = False

    @property
    def log_path(self) -> Path:
        return self.run_dir.with_name(self.run_dir.name + ".log")

    def finished(self) -> bool:
        return (self.run_dir / self.done_file).is_file()

    def argv(self) -> list[str]:
        """The command, with ``resume_args`` if the run has started."""
        started = (self.run_dir / "config.yaml").is_file()
        return [*self.command, *(self.resume_args if started else ())]

    def shell(self) -> str:
        """The command as one would type it."""
        return shlex.join(["python", *self.argv()])


@dataclass(frozen=True)
class Outcome:
    """How one attempt of a job ended: ``done``, ``skipped`` (found finished), ``failed`` or
    ``interrupted``; ``error`` is one line, ``retry`` says whether another attempt may succeed."""

    status: str
    error: str = ""
    retry: bool = False
    seconds: float = 0.0
    host: str = ""


def execute(job: Job, cwd: str, env: Mapping[str, str]) -> Outcome:
    """Run ``job`` to its end in a child process (this is the Ray task).

    The child gets its own session, so a terminal's Ctrl-C reaches only the sweep, which stops
    runs itself: a KeyboardInterrupt here (Ctrl-C, or Ray cancelling the task) sends the child
    SIGINT -- the ``l2l`` command's own interrupt path, which keeps the last checkpoint -- and
    kills it only if it has not left after :data:`STOP_GRACE_SECONDS`.
    """
    finished = job.finished()
    if finished and not job.check_finished:
        return Outcome("skipped")
    argv = [sys.executable, *job.argv()]
    host = socket.gethostname()
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with job.log_path.open("a") as log:
        log.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} on {host}: {shlex.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(argv, cwd=cwd if os.path.isdir(cwd) else None,
                                env={**os.environ, **THREAD_ENV, **env}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_child_signals)
        try:
            code = _wait(proc)
        except BaseException:
            _stop(proc)
            raise
    outcome = _outcome(job, code, time.perf_counter() - started, host)
    return Outcome("skipped", host=host) if finished and outcome.status == "done" else outcome


def _child_signals() -> None:
    """In the child before exec: accept SIGINT (Ray's processes block it, and the mask is
    inherited) and die with the parent, so that no run outlives a killed worker or sweep."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait(proc: subprocess.Popen) -> int:
    # Short timeouts keep the wait interruptible: Ray cancels a task by raising KeyboardInterrupt.
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=STOP_GRACE_SECONDS)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    finally:
        if proc.poll() is None:  # it would not stop, or a second interrupt came
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _outcome(job: Job, code: int, seconds: float, host: str) -> Outcome:
    if code == 0:
        if job.finished():
            return Outcome("done", seconds=seconds, host=host)
        return Outcome("failed", f"exited without writing {job.done_file}", seconds=seconds, host=host)
    if code == 130:
        return Outcome("interrupted", "interrupted", seconds=seconds, host=host)
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return Outcome("failed", f"killed by {name}{hint}", retry=True, seconds=seconds, host=host)
    # Exit status 2 is the l2l error path (a one-line L2LError, or argparse refusing an option): it
    # depends only on the configuration and the checkpoint, so another attempt would fail alike.
    return Outcome("failed", last_error(job.log_path), retry=code != 2, seconds=seconds, host=host)


def last_error(log_path: Path, limit: int = 300) -> str:
    """The failure's one line from a run's log: the last attempt's last ``error: ...`` line (the
    l2l CLI's or argparse's), else its last line (a traceback's exception)."""
    try:
        with log_path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = [s.strip() for s in f.read().decode(errors="replace").splitlines()]
    except OSError as exc:
        return f"(no log: {exc})"
    header = max((i for i, s in enumerate(lines) if s.startswith("== ")), default=-1)
    lines = [s for s in lines[header + 1:] if s]
    errors = [s for s in lines if s.startswith("error: ") or ": error: " in s]
    line = (errors or lines or ["(no output)"])[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."
