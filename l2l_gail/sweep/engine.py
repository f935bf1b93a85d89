"""Run jobs one by one, on a local Ray or on a Ray cluster: pools, retries, progress, Ctrl-C.

A :class:`SerialPool` calls :func:`~l2l_gail.sweep.jobs.execute` in this process; a
:class:`RayPool` calls it as Ray tasks of one CPU each. :func:`run_jobs` skips finished jobs,
schedules the rest, retries failures that another attempt can fix, shows the progress and stops
cleanly on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqdm.auto import tqdm

from l2l_gail.errors import L2LError
from l2l_gail.sweep.jobs import STOP_GRACE_SECONDS, Job, Outcome, execute

# Driver variables a run's result depends on, sent to workers that may run on other machines.
FORWARDED_ENV_PREFIX = "L2L_"
FORWARDED_ENV = ("ATEN_CPU_CAPABILITY",)
OBJECT_STORE_BYTES = 100 * 1024**2
"""Ray's shared-memory object store: jobs and outcomes are a few hundred bytes each."""


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
        address: ``"auto"`` (the cluster ``ray start`` runs on this machine), ``"HOST:PORT"``
            (its head) or ``"ray://HOST:PORT"`` (Ray Client): use an existing cluster;
            :meth:`close` only disconnects from it.
    """

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._temp_dir: str | None = None
        if address is None:
            # Read when ray is imported: without it Ray binds every interface of a Linux host.
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        elif address != "auto":
            _check_reachable(address)
        import ray

        self._ray = ray
        self._cwd, self._env = _task_env()
        started = time.perf_counter()
        try:
            if address is None:
                self._temp_dir = tempfile.mkdtemp(prefix="l2l-ray-")
                ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, num_gpus=0,
                         include_dashboard=False, _temp_dir=self._temp_dir, log_to_driver=False,
                         logging_level=logging.ERROR, object_store_memory=OBJECT_STORE_BYTES)
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            self.close()
            reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
            if address is None:
                raise L2LError(f"cannot start a local Ray ({reason}); run with --jobs 1 to run without "
                               "Ray") from None
            raise L2LError(f"cannot connect to the Ray cluster at {address} ({reason}); check the address "
                           "and that the cluster runs this Ray version; with an explicit address, a cluster "
                           "with token authentication needs RAY_AUTH_MODE=token and its token") from None
        except BaseException:  # Ctrl-C during start-up: stop what has started
            self.close()
            raise
        self.startup_seconds = time.perf_counter() - started
        self._remote = ray.remote(num_cpus=1, max_retries=0)(execute)

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


def _check_reachable(address: str) -> None:
    """Refuse an address nothing answers at (Ray itself keeps retrying it for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise L2LError(f"--address {address!r} must be auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise L2LError(f"nothing answers at {address} ({exc.strerror or exc}): start the cluster (`ray start "
                       "--head` on its head node) or correct --address") from None


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
    """Run ``jobs`` to completion: finished ones are skipped (a job with ``check_finished`` once
    its command has checked the run's configuration), the others run ``workers`` at a time
    (see :func:`open_pool`, or pass an open ``pool``, which is left open).

    A failed attempt that another may fix (a crash, a killed process, a lost worker) is retried
    from the run's last checkpoint up to ``max_retries`` times, after the jobs waiting; the
    others keep running. Ctrl-C stops every running job at its last checkpoint and returns with
    ``interrupted`` set. Ray is not started when nothing needs to run.
    """
    result = SweepResult()
    todo: deque[Job] = deque()
    for job in jobs:
        if job.finished() and not job.check_finished:
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
        checked = ", configuration checked" if job.check_finished else ""
        _say(f"{job.name}: finished{checked}, skipped ({job.run_dir})")
    else:
        _say(f"{job.name}: {outcome.status} after {attempt} attempt(s): {outcome.error} "
             f"(log: {job.log_path})")
