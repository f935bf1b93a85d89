"""``l2l gail train``: one configuration, several seeds, one run directory each.

Runs go to ``<runs_dir>/gail/<experiment>/<method>/seed<k>/`` (:func:`run_path`), each trained by
:func:`l2l_gail.gail.loop.train`. The package's GAIL layer, bottom up: :mod:`~l2l_gail.gail.compat`
(the libraries' private attributes), :mod:`~l2l_gail.gail.config`, :mod:`~l2l_gail.gail.policy`
and :mod:`~l2l_gail.gail.methods` (the trainers), :mod:`~l2l_gail.gail.factory`,
:mod:`~l2l_gail.gail.checkpoint`, :mod:`~l2l_gail.gail.loop` and this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from l2l_gail.errors import L2LError
from l2l_gail.gail.factory import Prepared
from l2l_gail.gail.loop import train
from l2l_gail.runs import DEFAULT_ROOT, RunDir, produced_anything, tensorboard_command


def run_path(experiment: str, method_dir: str, seed: int, runs_dir: Path | None = None) -> Path:
    """``<runs_dir>/gail/<experiment>/<method_dir>/seed<k>`` (``method_dir``: a configuration's
    ``run_method``)."""
    return Path(runs_dir or DEFAULT_ROOT) / "gail" / experiment / method_dir / f"seed{seed}"


def train_seeds(prepared: Prepared, seeds: list[int], experiment: str, *, runs_dir: Path | None = None,
                resume: str = "no", progress: bool = True,
                echo: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Train ``prepared`` once per seed under ``runs/gail/<experiment>/<method>/seed<k>/``.

    Args:
        resume: ``"no"`` -- every run directory must be new; ``"yes"`` -- every one must exist
            and is continued; ``"auto"`` -- existing runs are continued and missing ones started
            (what the benchmark script does). A finished run is not trained again: its stored
            metrics are returned, after the same configuration check as a continued run's.
        echo: receives one line per run (the CLI prints them).

    Raises:
        L2LError: before anything is trained, if a directory exists with ``resume="no"`` or is
            missing with ``resume="yes"``.
    """
    if resume not in ("no", "yes", "auto"):
        raise ValueError(f"resume must be 'no', 'yes' or 'auto', got {resume!r}")
    plans = []
    for seed in seeds:
        config = dataclasses.replace(prepared.config, seed=seed)
        path = run_path(experiment, config.run_method, seed, runs_dir)
        # a directory holding only config.yaml is a start that failed on bad input: reusable
        exists = (path / "config.yaml").is_file() if resume == "yes" else produced_anything(path)
        if resume == "no" and exists:
            raise L2LError(f"run directory {path} already exists: pass --resume to continue it or "
                           "choose another --experiment")
        if resume == "yes" and not exists:
            raise L2LError(f"cannot resume {path}: it does not exist; start it without --resume")
        plans.append((config, path, exists))
    results = []
    for config, path, exists in plans:
        seed_prepared = dataclasses.replace(prepared, config=config)
        run = RunDir.for_mode("gail", path.relative_to(path.parents[2]).as_posix(),
                              config.to_dict(), root=path.parents[3], resume=exists)
        finished = run.finished_metrics() if exists else None  # its configuration checked above
        if finished is not None:
            echo(f"{config.run_method} seed {config.seed}: finished, skipped ({path})")
            results.append(finished)
            continue
        echo(f"{config.run_method} seed {config.seed}: {'resuming' if exists else 'training'} in {run.path}")
        metrics = train(seed_prepared, run, resume=exists, progress=progress)
        echo(f"{config.run_method} seed {config.seed}: final normalised return {metrics['final']:.3f} "
             f"(peak {metrics['peak']:.3f}), {metrics['env_steps_per_second']:.0f} env steps/s")
        results.append(metrics)
    if plans:
        echo(tensorboard_command(plans[0][1].parents[1]))
    return results
