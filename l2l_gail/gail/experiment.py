"""An experiment directory of GAIL runs as ``l2l gail compare`` reads it.

``<experiment>/<method>/seed<k>/`` holds one run each (:mod:`l2l_gail.gail.loop`): its
``metrics.json`` once finished (:class:`RunResult`), its TensorBoard events, from which
:func:`run_diagnostics` averages what the discriminator and PPO did over the last 20% of
rounds, and, while unfinished, its ``config.yaml`` and checkpoints, from which
:func:`unfinished_note` says how far it got and which command resumes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from l2l_gail.errors import L2LError
from l2l_gail.gail.stats import final_window, series_metrics
from l2l_gail.runs import DEFAULT_ROOT, console_script

METHOD_ORDER = ("gail", "gail-gp", "l2l-gail", "l2l-gail-policy", "l2l-gail-both")
DISCRIMINATOR_TAGS = {  # diagnostic name -> TensorBoard tag written by `l2l gail train`
    "acc_expert": "disc/disc_acc_expert", "acc_gen": "disc/disc_acc_gen",
    "logit_expert": "disc/logit_expert", "logit_gen": "disc/logit_gen",
    "update_norm": "disc/update_norm", "reward_mean": "reward/mean",
    "gen_logit_shift": "disc/gen_logit_shift", "gen_kl_shift": "disc/gen_kl_shift",
    "norm_ratio": "l2l/norm_ratio",
    "multiplier": "l2l/multiplier",
}
GENERATOR_TAGS = {  # PPO's own scalars (stable-baselines3's names), the learned step on the policy
    "approx_kl": "gen/train/approx_kl", "clip_fraction": "gen/train/clip_fraction",
    "action_std": "gen/train/std", "policy_update_norm": "gen/train/l2l_update_norm",
}
DIAGNOSTIC_TAGS = {"discriminator": DISCRIMINATOR_TAGS, "generator": GENERATOR_TAGS}
"""The two players' diagnostics: group -> diagnostic name -> TensorBoard tag."""


def run_diagnostics(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per group of ``DIAGNOSTIC_TAGS``, the means over the last 20% of rounds of the run's scalars
    (a tag the run did not log is left out; both groups empty if it has no TensorBoard events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[str, float]] = {group: {} for group in DIAGNOSTIC_TAGS}
    tb = Path(run_dir) / "tb"
    if not tb.is_dir():
        return out
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    tb_logger = logging.getLogger("tensorboard")
    level = tb_logger.level
    tb_logger.setLevel(logging.ERROR)  # resumed runs purge their events after the checkpoint: expected
    try:
        events.Reload()
    finally:
        tb_logger.setLevel(level)
    present = set(events.Tags()["scalars"])
    for group, tags in DIAGNOSTIC_TAGS.items():
        for name, tag in tags.items():
            if tag in present:
                values = [e.value for e in events.Scalars(tag)]
                out[group][name] = float(np.mean(values[-final_window(len(values)):]))
    return out


@dataclass
class RunResult:
    """One finished run as ``compare`` reads it from its ``metrics.json``."""

    method: str
    seed: int
    task: str
    timesteps: int
    n_demos: int
    steps: list[int]
    normalized: list[float]
    env_steps_per_second: float
    path: Path

    @property
    def metrics(self) -> dict[str, Any]:
        return series_metrics(self.normalized)


def load_experiment(path: Path, methods: Sequence[str] | None = None,
                    ) -> tuple[dict[str, list[RunResult]], list[Path]]:
    """Finished runs of ``<path>/<method>/seed<k>/`` by method, and the unfinished run dirs.

    Args:
        path: the experiment directory.
        methods: only these methods (run labels), in this order; default: all, in
            ``METHOD_ORDER`` and then alphabetical order.

    Raises:
        L2LError: ``path`` is not a directory of runs, holds no finished run (naming the
            unfinished ones and the command that resumes them), mixes tasks, or has no runs
            or no finished run of one of ``methods``.
    """
    path = Path(path)
    if not path.is_dir():
        raise L2LError(f"{path} is not a directory: pass runs/gail/<experiment>")
    run_dirs = sorted(p.parent for p in path.glob("*/seed*/config.yaml"))
    labels = sorted({d.parent.name for d in run_dirs})
    if methods is not None:
        absent = [m for m in methods if m not in labels]
        if absent:
            there = f"methods with runs there: {', '.join(labels)}" if labels else "it holds no runs"
            raise L2LError(f"no runs of {', '.join(absent)} under {path} ({there})")
        run_dirs = [d for d in run_dirs if d.parent.name in methods]
    runs: dict[str, list[RunResult]] = {}
    unfinished: list[Path] = []
    for run_dir in run_dirs:
        metrics_path = run_dir / "metrics.json"
        if not metrics_path.is_file():
            unfinished.append(run_dir)
            continue
        try:
            m = json.loads(metrics_path.read_text())
            result = RunResult(
                method=run_dir.parent.name, seed=int(m["seed"]), task=str(m["task"]),
                timesteps=int(m["timesteps"]), n_demos=int(m["n_demos"]),
                steps=[int(h["step"]) for h in m["history"]],
                normalized=[float(h["normalized_return"]) for h in m["history"]],
                env_steps_per_second=float(m["env_steps_per_second"]), path=run_dir)
        except (ValueError, KeyError, TypeError) as exc:
            raise L2LError(f"{metrics_path} is not a GAIL run's metrics ({type(exc).__name__}: "
                           f"{exc}); delete the run or re-run it with --resume") from exc
        if not result.normalized:
            unfinished.append(run_dir)
            continue
        runs.setdefault(result.method, []).append(result)
    if not runs:
        if unfinished:
            of = f" of {', '.join(methods)}" if methods else ""
            raise L2LError(f"no finished runs{of} under {path}: {unfinished_note(path, unfinished)}")
        raise L2LError(f"no finished runs under {path} (expected {path}/<method>/seed<k>/metrics.json); "
                       "train with `l2l gail train --experiment NAME`")
    tasks = sorted({r.task for rs in runs.values() for r in rs})
    if len(tasks) > 1:
        raise L2LError(f"{path} mixes tasks ({', '.join(tasks)}): compare one task per experiment")
    missing = [m for m in methods or () if m not in runs]
    if missing:  # each has runs (checked above), none of them finished
        stalled = [d for d in unfinished if d.parent.name in missing]
        raise L2LError(f"no finished runs of {', '.join(missing)} under {path}: "
                       f"{unfinished_note(path, stalled)}")
    order = {m: i for i, m in enumerate(methods or METHOD_ORDER)}
    ordered = dict(sorted(runs.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    for results in ordered.values():
        results.sort(key=lambda r: r.seed)
    return ordered, unfinished


_CHECKPOINT = re.compile(r"^step_(\d+)\.pt$")


def _progress(run_dir: Path, config: dict[str, Any]) -> str:
    """How far an unfinished run got, from its newest checkpoint's name (no checkpoint is loaded)."""
    steps = [int(m.group(1)) for p in (run_dir / "checkpoints").glob("step_*.pt")
             if (m := _CHECKPOINT.match(p.name))]
    if not steps:
        return "no checkpoint yet"
    total = config.get("timesteps")
    return f"checkpoint at step {max(steps):,}" + (f" of {total:,}" if isinstance(total, int) else "")


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def resume_commands(experiment: Path, run_dirs: Sequence[Path]) -> list[str]:
    """``l2l gail train ... --resume`` commands that continue ``run_dirs`` (runs of
    ``experiment``), one per configuration with the seeds that share it.

    Each command repeats exactly the options in which the stored ``config.yaml`` differs from
    the task file's defaults, since ``--resume`` refuses a configuration that differs. A run
    whose configuration cannot be read, or an experiment that is not under ``<root>/gail/``,
    gets the generic advice instead.
    """
    experiment = Path(experiment)
    if "gail" not in (p.name for p in experiment.parents):  # e.g. "." inside runs/gail/<name>
        experiment = experiment.absolute()
    generic = "`l2l gail train --resume` with the options that started {}"
    gail_dir = next((p for p in experiment.parents if p.name == "gail"), None)
    if gail_dir is None:
        return [generic.format(experiment)]
    location = ["--experiment", experiment.relative_to(gail_dir).as_posix()]
    if gail_dir.parent.resolve() != DEFAULT_ROOT.resolve():
        location += ["--runs-dir", str(gail_dir.parent)]
    groups: dict[tuple[str, ...], list[int]] = {}
    for run_dir in run_dirs:
        config = _read_config(run_dir)
        args = _train_options(config) if config is not None else None
        if config is None or args is None or not isinstance(config.get("seed"), int):
            return [generic.format(run_dir)]
        groups.setdefault(tuple(args), []).append(config["seed"])
    l2l = console_script("l2l")
    return ["`" + shlex.join([l2l, "gail", "train", *args, "--seeds", ",".join(map(str, sorted(seeds))),
                              *location, "--resume"]) + "`" for args, seeds in groups.items()]


def _train_options(config: dict[str, Any]) -> list[str] | None:
    """The ``l2l gail train`` options that reproduce the stored ``config`` (all but the seed);
    ``None`` if its task or method is unknown."""
    from l2l_gail.gail.config import METHODS, OMITTED_AT, GAILConfig
    from l2l_gail.gail.tasks import load_task

    if config.get("method") not in METHODS:
        return None
    try:
        task = load_task(str(config.get("task")))
    except L2LError:
        return None
    default = dataclasses.asdict(GAILConfig(task=task.name, method=config["method"]).resolved(task))
    options = ["--task", task.name, "--method", config["method"]]
    # a key the stored file leaves out has its OMITTED_AT value, which the task file may since have changed
    for key, value in {**OMITTED_AT, **config}.items():
        if key in ("task", "method", "seed") or value == default.get(key):
            continue
        flag = "--" + key.replace("_", "-")
        if value is None:  # a default the task file gained since the run started: no option says "unset"
            return None
        if key == "ppo" and isinstance(value, dict):
            for k, v in value.items():
                if default["ppo"].get(k) != v:
                    options += ["--ppo", f"{k}={_yaml_value(v)}"]
        elif isinstance(value, bool):  # yes/no options are --x / --no-x
            options.append(flag if value else "--no-" + flag[2:])
        else:
            options += [flag, str(value)]
    return options


def _yaml_value(value: Any) -> str:
    """A ``--ppo KEY=VALUE`` value that the CLI's YAML parsing reads back as ``value``."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def unfinished_note(experiment: Path, run_dirs: Sequence[Path]) -> str:
    """One sentence: which runs are unfinished, how far they got, and the commands that resume them."""
    experiment = Path(experiment)
    runs = ", ".join(f"{d.relative_to(experiment).as_posix()} ({_progress(d, _read_config(d) or {})})"
                     for d in run_dirs)
    commands = resume_commands(experiment, run_dirs)
    verb = "is" if len(run_dirs) == 1 else "are"
    return f"{runs} {verb} unfinished; resume with {' and '.join(commands)}"


@dataclass
class Experiment:
    """The finished runs of one experiment directory (one task), by method."""

    path: Path
    task: str
    runs: dict[str, list[RunResult]]
    unfinished: list[Path]
