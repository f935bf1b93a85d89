"""Run jobs -- each one command that writes one run directory -- one by one, on a local Ray or a cluster.

A :class:`Job` is a command line (``python -m l2l_gail.cli gail train ...`` or a benchmark script's
single-cell command) and the directory it writes. :func:`execute` runs it as a child process in
its own session, its output appended to ``<run_dir>.log`` beside the run directory (never inside:
a run directory holds only what the run writes), with one torch/BLAS thread. A
:class:`SerialPool` calls :func:`execute` in this process; a :class:`RayPool` calls it as Ray
tasks of one CPU each. :func:`run_jobs` skips finished jobs, schedules the rest, retries
failures that another attempt can fix, shows the progress and stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

# One thread per run: a run's numbers then do not depend on the worker's cores (and runs sharing
# a machine do not oversubscribe it).
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# Driver variables a run's result depends on, sent to workers that may run on other machines.
FORWARDED_ENV_PREFIX = "L2L_"
FORWARDED_ENV = ("ATEN_CPU_CAPABILITY",)
STOP_GRACE_SECONDS = 60.0
"""Time a stopped run gets to leave through its KeyboardInterrupt path before it is killed."""
OBJECT_STORE_BYTES = 100 * 1024**2
"""Ray's shared-memory object store: jobs and outcomes are a few hundred bytes each."""
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
    """

    name: str
    command: tuple[str, ...]
    run_dir: Path
    done_file: str = "metrics.json"
    resume_args: tuple[str, ...] = ("--resume",)

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
    if job.finished():
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
    return _outcome(job, code, time.perf_counter() - started, host)


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
    """The failure's one line from a run's log: the last ``error: ...`` line (the l2l CLI's or
    argparse's), else the last line (a traceback's exception)."""
    try:
        with log_path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = [s.strip() for s in f.read().decode(errors="replace").splitlines()]
    except OSError as exc:
        return f"(no log: {exc})"
    lines = [s for s in lines if s and not s.startswith("== ")]
    errors = [s for s in lines if s.startswith("error: ") or ": error: " in s]
    line = (errors or lines or ["(no output)"])[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ----------------------------------------------------------------------------- pools
class Pool(Protocol):
    """Where jobs run: :class:`SerialPool` or :class:`RayPool`."""

    startup_seconds: float

    @property
    def capacity(self) -> int: ...
    def submit(self, job: Job) -> Any: ...
    def wait(self, handles: Sequence[Any], timeout: float) -> list[tuple[Any, Outcome]]: ...
    def cancel(self, handles: Sequence[Any]) -> None: ...
    def close(self) -> None: ...


def _task_env() -> tuple[str, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX) or k in FORWARDED_ENV}
    return os.getcwd(), env


class SerialPool:
    """One job at a time, in this process's children: ``--jobs 1`` starts no Ray."""

    startup_seconds = 0.0
    capacity = 1

    def __init__(self) -> None:
        self._cwd, self._env = _task_env()

    def submit(self, job: Job) -> Job:
        return job

    def wait(self, handles: Sequence[Job], timeout: float) -> list[tuple[Any, Outcome]]:
        return [(handles[0], execute(handles[0], self._cwd, self._env))]

    def cancel(self, handles: Sequence[Any]) -> None:
        """Nothing runs: :func:`execute` stops its child before the interrupt reaches the sweep."""

    def close(self) -> None:
        pass


class RayPool:
    """Jobs as Ray tasks of one CPU each.

    Args:
        workers: ``address=None``: start a private local Ray with this many CPUs, listening on
            the loopback interface only, with usage statistics off and its files in a temporary
            directory removed by :meth:`close` (no network, nothing left behind).
        address: ``"auto"`` (the cluster ``ray start`` runs on this machine) or
            ``"ray://HOST:PORT"`` (Ray Client): use an existing cluster; :meth:`close` only
            disconnects from it.
    """

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._temp_dir: str | None = None
        if address is None:
            # Read when ray is imported: without it Ray binds every interface of a Linux host.
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        import ray

        self._ray = ray
        self._cwd, self._env = _task_env()
        started = time.perf_counter()
        if address is None:
            self._temp_dir = tempfile.mkdtemp(prefix="l2l-ray-")
            ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, num_gpus=0,
                     include_dashboard=False, _temp_dir=self._temp_dir, log_to_driver=False,
                     logging_level=logging.ERROR, object_store_memory=OBJECT_STORE_BYTES)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        self.startup_seconds = time.perf_counter() - started
        self._remote = ray.remote(num_cpus=1, max_retries=0)(execute)

    @property
    def temp_dir(self) -> str | None:
        """The local Ray's session files (its processes name it on their command lines)."""
        return self._temp_dir

    @property
    def capacity(self) -> int:
        """CPUs of the cluster now (it may grow or shrink), i.e. how many runs may be submitted."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def submit(self, job: Job) -> Any:
        return self._remote.remote(job, self._cwd, self._env)

    def wait(self, handles: Sequence[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        ready, _ = self._ray.wait(list(handles), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append((ref, self._ray.get(ref)))
            except self._ray.exceptions.RayError as exc:  # the worker or its node died
                cause = getattr(exc, "cause", None) or exc
                line = (str(cause).strip().splitlines() or [""])[-1]
                out.append((ref, Outcome("failed", f"{type(cause).__name__}: {line}", retry=True)))
        return out

    def cancel(self, handles: Sequence[Any]) -> None:
        """Interrupt running tasks (each stops its run) and wait until they have ended."""
        for ref in handles:
            self._ray.cancel(ref)
        if handles:
            self._ray.wait(list(handles), num_returns=len(handles), timeout=STOP_GRACE_SECONDS + 10)

    def close(self) -> None:
        self._ray.shutdown()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


def open_pool(workers: int | None = None, address: str | None = None) -> Pool:
    """:class:`SerialPool` for one local worker, else :class:`RayPool`."""
    if address is None and workers == 1:
        return SerialPool()
    return RayPool(workers, address)


# ----------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    """Every job's final outcome, how many attempts it took, and timings."""

    outcomes: dict[Job, Outcome] = field(default_factory=dict)
    attempts: dict[Job, int] = field(default_factory=dict)
    interrupted: bool = False
    startup_seconds: float = 0.0
    run_seconds: float = 0.0
    """wall time from the first submission to the last outcome (Ray's start-up excluded)"""

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes.values())

    @property
    def failed(self) -> list[Job]:
        return [j for j, o in self.outcomes.items() if o.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(o.status in ("done", "skipped") for o in self.outcomes.values())


def _say(line: str) -> None:
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def run_jobs(jobs: Sequence[Job], *, workers: int | None = None, address: str | None = None,
             max_retries: int = 2, progress: bool = True, pool: Pool | None = None) -> SweepResult:
    """Run ``jobs`` to completion: finished ones are skipped, the others run ``workers`` at a time
    (see :func:`open_pool`, or pass an open ``pool``, which is left open).

    A failed attempt that another may fix (a crash, a killed process, a lost worker) is retried
    from the run's last checkpoint up to ``max_retries`` times, after the jobs waiting; the
    others keep running. Ctrl-C stops every running job at its last checkpoint and returns with
    ``interrupted`` set. Ray is not started when nothing needs to run.
    """
    result = SweepResult()
    todo: deque[Job] = deque()
    for job in jobs:
        if job.finished():
            result.outcomes[job] = Outcome("skipped")
            _say(f"{job.name}: finished, skipped ({job.run_dir})")
        else:
            todo.append(job)
    if not todo:
        return result
    own = pool is None
    bar = tqdm(total=len(todo), unit="run", disable=None if progress else True, desc="sweep", leave=False,
               bar_format="{desc}: {n}/{total} runs ended |{bar:16}| {elapsed}, ETA {remaining} [{postfix}]")
    running: dict[Any, Job] = {}
    try:
        pool = pool or open_pool(workers, address)
        result.startup_seconds = pool.startup_seconds
        started = time.perf_counter()
        while todo or running:
            while todo and len(running) < pool.capacity:
                job = todo.popleft()
                result.attempts[job] = result.attempts.get(job, 0) + 1
                running[pool.submit(job)] = job
            for handle, outcome in pool.wait(list(running), timeout=1.0):
                job = running.pop(handle)
                _settle(job, outcome, result, todo, max_retries, bar)
            bar.set_postfix_str(f"done {result.count('done')}, running {len(running)}, "
                                f"failed {result.count('failed')}, queued {len(todo)}")
        result.run_seconds = time.perf_counter() - started
    except KeyboardInterrupt:
        result.interrupted = True
        _say(f"interrupted: stopping {len(running)} running run(s) at their last checkpoint")
        if pool is not None:
            pool.cancel(list(running))
        for job in running.values():
            result.outcomes[job] = Outcome("interrupted", "interrupted")
    finally:
        bar.close()
        if own and pool is not None:
            pool.close()
    return result


def _settle(job: Job, outcome: Outcome, result: SweepResult, todo: deque[Job], max_retries: int,
            bar: tqdm) -> None:
    attempt = result.attempts[job]
    if outcome.status == "failed" and outcome.retry and attempt <= max_retries:
        _say(f"{job.name}: attempt {attempt} failed: {outcome.error}; retrying from its last checkpoint "
             f"(log: {job.log_path})")
        todo.append(job)
        return
    result.outcomes[job] = outcome
    bar.update(1)
    where = f" on {outcome.host}" if outcome.host else ""
    if outcome.status == "done":
        _say(f"{job.name}: done in {outcome.seconds:.0f} s{where} ({job.run_dir})")
    elif outcome.status == "skipped":
        _say(f"{job.name}: finished, skipped ({job.run_dir})")
    else:
        _say(f"{job.name}: {outcome.status} after {attempt} attempt(s): {outcome.error} "
             f"(log: {job.log_path})")
