"""Stability comparison of GAIL runs: per-run metrics, per-method statistics, table and plot.

Per run, from its normalised-return series ``n_t`` (one value per evaluation):

* ``final`` -- the mean of ``n_t`` over the last 20% of evaluations (at least one);
* ``peak`` -- ``max n_t``;
* ``max_drawdown`` -- ``max_t (max_{s<=t} n_s - n_t)``, the deepest fall below an earlier best;
* ``collapsed`` -- ``final < 0.5 * peak`` while ``peak >= 0.3``: the run learned, then lost it;
* ``auc`` -- the mean of ``n_t``.

Per method, across seeds: the interquartile mean (IQM) of ``final`` with a 95% percentile
bootstrap interval over runs, as recommended by Agarwal et al., *Deep RL at the Edge of the
Statistical Precipice* (NeurIPS 2021, arXiv 2108.13264) and implemented in ``rliable``; the
std of ``final``, the number of collapsed runs, the median ``max_drawdown``, the mean ``auc``
and the median environment steps per second. To see *what the discriminator does*, each run's
TensorBoard scalars (expert and generator accuracy and logits, update norm, reward) are averaged
over its last 20% of rounds, and the per-method medians form a second table.

The IQM is ``rliable.metrics.aggregate_iqm``; the bootstrap is done here with numpy because
``rliable.library`` fails to import with the pinned ``arch`` 7.2 and ``pandas`` 3.1 (it
resamples runs with replacement exactly as rliable's ``StratifiedBootstrap`` does for a single
task).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rliable.metrics import aggregate_iqm
from scipy.stats import trim_mean

from l2l_gail.errors import L2LError
from l2l_gail.runs import DEFAULT_ROOT, atomic_write, atomic_write_text, write_json

# The shipped benchmark tables (scripts/bench_gail.py's --output-dir); `compare` itself writes
# beside the experiment unless given --output, so that it never touches the source tree.
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results" / "gail"
DEFAULT_OUTPUT_NAME = "compare.json"
METHOD_ORDER = ("gail", "gail-gp", "l2l-gail", "l2l-gail-policy", "l2l-gail-both")
FINAL_FRACTION = 0.2
COLLAPSE_RATIO = 0.5
COLLAPSE_MIN_PEAK = 0.3
BOOTSTRAP_REPS = 10_000
DISCRIMINATOR_TAGS = {  # diagnostic name -> TensorBoard tag written by `l2l gail train`
    "acc_expert": "disc/disc_acc_expert", "acc_gen": "disc/disc_acc_gen",
    "logit_expert": "disc/logit_expert", "logit_gen": "disc/logit_gen",
    "update_norm": "disc/update_norm", "reward_mean": "reward/mean",
}


def final_window(n: int) -> int:
    """How many of ``n`` trailing values form the "last 20%" (at least one)."""
    return max(1, math.ceil(FINAL_FRACTION * n))


def series_metrics(normalized: Sequence[float]) -> dict[str, Any]:
    """``final``, ``peak``, ``max_drawdown``, ``collapsed`` and ``auc`` of one run's series."""
    n = np.asarray(normalized, dtype=np.float64)
    if n.size == 0:
        raise ValueError("a run without evaluations has no stability metrics")
    last = final_window(n.size)
    final = float(n[-last:].mean())
    peak = float(n.max())
    return {
        "final": final,
        "peak": peak,
        "max_drawdown": float((np.maximum.accumulate(n) - n).max()),
        "collapsed": bool(final < COLLAPSE_RATIO * peak and peak >= COLLAPSE_MIN_PEAK),
        "auc": float(n.mean()),
    }


def discriminator_diagnostics(run_dir: Path) -> dict[str, float]:
    """Means over the last 20% of rounds of the run's discriminator scalars (``DISCRIMINATOR_TAGS``);
    empty if the run has no TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = Path(run_dir) / "tb"
    if not tb.is_dir():
        return {}
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    tb_logger = logging.getLogger("tensorboard")
    level = tb_logger.level
    tb_logger.setLevel(logging.ERROR)  # resumed runs purge their events after the checkpoint: expected
    try:
        events.Reload()
    finally:
        tb_logger.setLevel(level)
    present = set(events.Tags()["scalars"])
    out = {}
    for name, tag in DISCRIMINATOR_TAGS.items():
        if tag in present:
            values = [e.value for e in events.Scalars(tag)]
            last = final_window(len(values))
            out[name] = float(np.mean(values[-last:]))
    return out


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean (25% trimmed mean) of runs (``rliable.metrics.aggregate_iqm``)."""
    return float(aggregate_iqm(np.asarray(values, dtype=np.float64).reshape(-1, 1)))


def bootstrap_ci(values: Sequence[float], *, reps: int = BOOTSTRAP_REPS, size: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the IQM, resampling runs with replacement."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(reps, x.size))]
    stats = trim_mean(samples, 0.25, axis=1)  # aggregate_iqm's computation, one row per resample
    tail = 100 * (1 - size) / 2
    return float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))


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
    from l2l_gail.gail.tasks import load_task
    from l2l_gail.gail.train import METHODS, GAILConfig  # heavy (torch, SB3): only for unfinished runs

    if config.get("method") not in METHODS:
        return None
    try:
        task = load_task(str(config.get("task")))
    except L2LError:
        return None
    default = dataclasses.asdict(GAILConfig(task=task.name, method=config["method"]).resolved(task))
    options = ["--task", task.name, "--method", config["method"]]
    for key, value in config.items():
        if key in ("task", "method", "seed") or value == default.get(key):
            continue
        if value is None:  # a default the task file gained since the run started: no option says "unset"
            return None
        if key == "ppo" and isinstance(value, dict):
            for k, v in value.items():
                if default["ppo"].get(k) != v:
                    options += ["--ppo", f"{k}={_yaml_value(v)}"]
        else:
            options += ["--" + key.replace("_", "-"), str(value)]
    return options


def console_script(name: str) -> str:
    """How to call this Python environment's console script ``name`` (``l2l``, ``tensorboard``)
    from a plain shell: the bare name when ``PATH`` finds this very script (an activated venv,
    a global install), else its path in the interpreter's bin directory -- relative to the
    working directory when under it, e.g. ``.venv/bin/l2l`` after ``make demo``."""
    script = Path(sys.executable).parent / name
    found = shutil.which(name)
    if not script.is_file() or (found is not None and Path(found).resolve() == script.resolve()):
        return name
    try:
        relative = script.relative_to(Path.cwd())
    except ValueError:
        return str(script)
    return str(relative) if len(relative.parts) > 1 else f"./{relative}"  # a bare name would search PATH


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


def summarize(runs: dict[str, list[RunResult]]) -> dict[str, Any]:
    """The results JSON: task, budget, seeds, number of demos and per-method statistics."""
    first = next(iter(runs.values()))[0]
    methods: dict[str, Any] = {}
    for method, results in runs.items():
        per_run = [{**r.metrics, "discriminator": discriminator_diagnostics(r.path)} for r in results]
        finals = [m["final"] for m in per_run]
        low, high = bootstrap_ci(finals)
        methods[method] = {
            "final_iqm": iqm(finals),
            "final_ci95": [low, high],
            "final_std": float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0,
            "collapsed_runs": sum(m["collapsed"] for m in per_run),
            "max_drawdown_median": float(np.median([m["max_drawdown"] for m in per_run])),
            "auc_mean": float(np.mean([m["auc"] for m in per_run])),
            "env_steps_per_second_median": float(np.median([r.env_steps_per_second for r in results])),
            "discriminator_median": {
                name: float(np.median(v)) for name in DISCRIMINATOR_TAGS
                if (v := [m["discriminator"][name] for m in per_run if name in m["discriminator"]])},
            "n_runs": len(results),
            "runs": {f"seed{r.seed}": m for r, m in zip(results, per_run, strict=True)},
        }
    return {
        "task": first.task,
        "timesteps": max(r.timesteps for rs in runs.values() for r in rs),
        "seeds": sorted({r.seed for rs in runs.values() for r in rs}),
        "n_demos": first.n_demos,
        "methods": methods,
    }


def markdown_table(summary: dict[str, Any]) -> str:
    """One row per method: IQM [95% CI] and std of ``final``, collapses, drawdown, AUC, speed."""
    lines = [
        f"Task `{summary['task']}`, {summary['timesteps']:,} environment steps, seeds "
        f"{', '.join(map(str, summary['seeds']))}, {summary['n_demos']} demonstration episodes; "
        "normalised return (0 = random policy, 1 = expert).",
        "",
        "| method | runs | final IQM [95% CI] | final std | collapsed | max drawdown (median) "
        "| AUC (mean) | env steps/s (median) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for method, s in summary["methods"].items():
        low, high = s["final_ci95"]
        lines.append(
            f"| {method} | {s['n_runs']} | {s['final_iqm']:.3f} [{low:.3f}, {high:.3f}] "
            f"| {s['final_std']:.3f} | {s['collapsed_runs']}/{s['n_runs']} "
            f"| {s['max_drawdown_median']:.3f} | {s['auc_mean']:.3f} "
            f"| {s['env_steps_per_second_median']:.0f} |")
    if any(s.get("discriminator_median") for s in summary["methods"].values()):
        lines += ["", "Discriminator over the last 20% of rounds (median over runs): accuracy and mean "
                  "logit on expert and generator samples, update norm, generator reward.", "",
                  "| method | acc expert | acc generator | logit expert | logit generator | update norm "
                  "| reward mean |", "|---|---:|---:|---:|---:|---:|---:|"]
        for method, s in summary["methods"].items():
            d = s.get("discriminator_median", {})
            cells = [f"{d[k]:.3f}" if k in d else "-" for k in DISCRIMINATOR_TAGS]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, list[RunResult]], path: Path, title: str) -> None:
    """Normalised return against environment steps: per method the mean over seeds with a 95%
    bootstrap band of the mean, and one thin line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rng = np.random.default_rng(0)
    for i, (method, results) in enumerate(runs.items()):
        color = f"C{i}"
        for r in results:
            ax.plot(r.steps, r.normalized, color=color, linewidth=0.6, alpha=0.35)
        length = min(len(r.normalized) for r in results)
        steps = np.asarray(results[0].steps[:length])
        curves = np.array([r.normalized[:length] for r in results])
        resampled = curves[rng.integers(0, len(curves), size=(2000, len(curves)))].mean(axis=1)
        ax.fill_between(steps, np.percentile(resampled, 2.5, axis=0),
                        np.percentile(resampled, 97.5, axis=0), color=color, alpha=0.2, linewidth=0)
        ax.plot(steps, curves.mean(axis=0), color=color, linewidth=2,
                label=f"{method} ({len(results)} seed{'s' if len(results) > 1 else ''})")
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("normalised return")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


@dataclass
class CompareOutputs:
    """Where :func:`compare` wrote its results, and what it left out."""

    json: Path
    markdown: Path
    plot: Path
    summary: dict[str, Any]
    unfinished: list[Path]


def output_paths(output: Path) -> tuple[Path, Path, Path]:
    """The JSON file and its markdown and PNG siblings (same stem)."""
    output = Path(output)
    if output.suffix != ".json":
        raise L2LError(f"--output {output} must end in .json (the table and plot go beside it)")
    return output, output.with_suffix(".md"), output.with_suffix(".png")


def compare(experiment: Path, output: Path | None = None, *, force: bool = False,
            methods: Sequence[str] | None = None) -> CompareOutputs:
    """Compare the finished runs of ``experiment`` and write JSON, markdown and PNG.

    Args:
        experiment: ``runs/gail/<experiment>``.
        output: the JSON path (default ``<experiment>/compare.json``, so that results of an
            experiment stay with its runs and the shipped ``results/`` are never touched); the
            table and plot are written beside it with the suffixes ``.md`` and ``.png``.
        force: overwrite existing outputs (refused otherwise, before anything is written).
        methods: compare only these methods (run labels), in this order; default: all.
    """
    if output is not None:
        output_paths(output)  # a bad --output fails before the runs are read
    runs, unfinished = load_experiment(experiment, methods)
    task = next(iter(runs.values()))[0].task
    json_path, md_path, png_path = output_paths(output or Path(experiment) / DEFAULT_OUTPUT_NAME)
    existing = [p for p in (json_path, md_path, png_path) if p.exists()]
    if existing and not force:
        raise L2LError(f"{existing[0]} exists: pass --force to overwrite the results, or --output "
                       "another .json path")
    summary = summarize(runs)
    summary["experiment"] = str(experiment)
    write_json(json_path, summary)
    atomic_write_text(md_path, markdown_table(summary))
    plot(runs, png_path, f"{task}: {Path(experiment).name}")
    return CompareOutputs(json_path, md_path, png_path, summary, unfinished)

