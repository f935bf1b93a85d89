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

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rliable.metrics import aggregate_iqm
from scipy.stats import trim_mean

from l2l_gail.errors import L2LError
from l2l_gail.runs import atomic_write, atomic_write_text, write_json

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results" / "gail"
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
        L2LError: ``path`` is not a directory of runs, holds no finished run, mixes tasks, or
            lacks one of ``methods``.
    """
    path = Path(path)
    if not path.is_dir():
        raise L2LError(f"{path} is not a directory: pass runs/gail/<experiment>")
    runs: dict[str, list[RunResult]] = {}
    unfinished: list[Path] = []
    for config_path in sorted(path.glob("*/seed*/config.yaml")):
        run_dir = config_path.parent
        if methods is not None and run_dir.parent.name not in methods:
            continue
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
        raise L2LError(f"no finished runs under {path} (expected {path}/<method>/seed<k>/metrics.json); "
                       "train with `l2l gail train --experiment NAME`")
    tasks = sorted({r.task for rs in runs.values() for r in rs})
    if len(tasks) > 1:
        raise L2LError(f"{path} mixes tasks ({', '.join(tasks)}): compare one task per experiment")
    missing = [m for m in methods or () if m not in runs]
    if missing:
        raise L2LError(f"no finished runs of {', '.join(missing)} under {path} (methods there: "
                       f"{', '.join(sorted(p.name for p in path.iterdir() if p.is_dir()))})")
    order = {m: i for i, m in enumerate(methods or METHOD_ORDER)}
    ordered = dict(sorted(runs.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    for results in ordered.values():
        results.sort(key=lambda r: r.seed)
    return ordered, unfinished


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
        output: the JSON path (default ``results/gail/<task>.json``); the table and plot are
            written beside it with the suffixes ``.md`` and ``.png``.
        force: overwrite existing outputs (refused otherwise, before anything is written).
        methods: compare only these methods (run labels), in this order; default: all.
    """
    if output is not None:
        output_paths(output)  # a bad --output fails before the runs are read
    runs, unfinished = load_experiment(experiment, methods)
    task = next(iter(runs.values()))[0].task
    json_path, md_path, png_path = output_paths(output or RESULTS_DIR / f"{task}.json")
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

