"""Comparison of GAIL runs over seeds and tasks: per-run stability, per-method statistics, tables
and plots (``l2l gail compare``).

An experiment directory holds the runs of one task, ``<experiment>/<method>/seed<k>/``; several
experiments (one per task) are compared together and aggregated over their tasks. Per run, from
its normalised-return series (0 = random policy, 1 = expert): ``final`` (the mean over the last
20% of evaluations), ``peak``, the relative ``max_drawdown``, ``auc``, and the labels ``failed``
(never learned) and ``collapsed`` (learned, then lost it), as defined in
:mod:`l2l_gail.gail.stats`. Per task and method: every seed's final, their IQM with a 95%
stratified bootstrap interval, P(X > baseline) with its interval and a two-sided Mann-Whitney
p-value against the baseline method (``gail``), the failed and collapsed runs, the median
drawdown, the mean AUC and the median environment steps per second. Over tasks: the IQM of
every method that ran on all of them and P(X > baseline) averaged over tasks, both with
intervals. To see *what each player does*, each run's TensorBoard scalars are averaged over
its last 20% of rounds (the discriminator's accuracy, logits, update norm and reward; PPO's
KL per update, clip fraction and action std), and the per-method medians form two more
tables. Plots: the curves, and rliable's performance profiles (the fraction of runs whose final
exceeds tau) per task and over all tasks.

Reading the runs is :mod:`l2l_gail.gail.experiment`; the table and plots are
:mod:`l2l_gail.gail.report`; this module computes the statistics and writes the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2l_gail.errors import L2LError
from l2l_gail.gail import stats
from l2l_gail.gail.experiment import (
    DIAGNOSTIC_TAGS,
    Experiment,
    RunResult,
    load_experiment,
    run_diagnostics,
)
from l2l_gail.gail.report import markdown_table, method_colors, plot_curves, plot_profiles
from l2l_gail.runs import atomic_write_text, write_json

# The shipped benchmark tables (scripts/bench_gail.py's --output-dir); `compare` itself writes
# beside the experiment unless given --output, so that it never touches the source tree.
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results" / "gail"
DEFAULT_OUTPUT_NAME = "compare.json"
BASELINE = "gail"  # P(X > Y) and the Mann-Whitney test compare every method with this one


def _pair(estimate: stats.Interval) -> dict[str, Any]:
    return {"p": estimate.point, "ci": [estimate.low, estimate.high]}


def _method_summary(results: list[RunResult], threshold: float, baseline: list[RunResult] | None,
                    reps: int) -> dict[str, Any]:
    """One method's entry in ``tasks[task]`` (see :func:`summarize`)."""
    per_run = [{**r.metrics, **stats.stability_labels(r.normalized, threshold), **run_diagnostics(r.path)}
               for r in results]
    finals = [m["final"] for m in per_run]
    estimate = stats.iqm_interval([finals], reps=reps)
    learned = [m["max_drawdown"] for m in per_run if not m["failed"]]
    entry: dict[str, Any] = {
        "seeds": [r.seed for r in results],
        "finals": finals,
        "iqm": estimate.point,
        "ci": [estimate.low, estimate.high],
        "n_runs": len(results),
        "few_seeds": len(results) < stats.MIN_SEEDS,
        "failed": sum(m["failed"] for m in per_run),
        "collapsed": sum(m["collapsed"] for m in per_run),
        "steps_per_s": float(np.median([r.env_steps_per_second for r in results])),
        "final_std": float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0,
        "max_drawdown_median": float(np.median(learned)) if learned else None,
        "auc_mean": float(np.mean([m["auc"] for m in per_run])),
    }
    if baseline is not None:
        base = [r.metrics["final"] for r in baseline]
        p, test = stats.mann_whitney(finals, base)
        entry["prob_improvement"] = _pair(stats.improvement_interval([finals], [base], reps=reps))
        entry["mann_whitney"] = {"p": p, "method": test,
                                 "smallest_p": stats.smallest_p(len(finals), len(base))}
    for group, tags in DIAGNOSTIC_TAGS.items():
        entry[f"{group}_median"] = {name: float(np.median(v)) for name in tags
                                    if (v := [m[group][name] for m in per_run if name in m[group]])}
    entry["runs"] = {f"seed{r.seed}": m for r, m in zip(results, per_run, strict=True)}
    return entry


def summarize(experiments: Sequence[Experiment], *, baseline: str = BASELINE,
              reps: int = stats.BOOTSTRAP_REPS) -> dict[str, Any]:
    """The results JSON.

    ``{"budget_steps", "baseline", "tasks": {task: {method: {"seeds", "finals", "iqm", "ci",
    "n_runs", "few_seeds", "failed", "collapsed", "steps_per_s", "final_std",
    "max_drawdown_median", "auc_mean", "prob_improvement": {"p", "ci"}, "mann_whitney": {"p",
    "method", "smallest_p"}, "discriminator_median", "generator_median", "runs": {"seed<k>":
    per-run metrics}}}},
    "aggregate": {method: {"iqm", "ci", "n_tasks", "n_runs"}}, "prob_improvement":
    {"<method>><baseline>": {"p", "ci"}}, "experiments": {task: {"path", "timesteps", "n_demos",
    "failure_threshold"}}, "statistics": {...}}``. ``failed`` and ``collapsed`` count runs;
    ``max_drawdown_median`` is over the runs that did not fail (null if all failed); the
    comparisons with the baseline are absent for the baseline itself and where it has no runs.
    ``aggregate`` and the top-level ``prob_improvement`` cover the methods with runs on every task.
    """
    tasks: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for exp in experiments:
        threshold = stats.failure_threshold([[r.metrics["final"] for r in rs] for rs in exp.runs.values()])
        base = exp.runs.get(baseline)
        tasks[exp.task] = {m: _method_summary(rs, threshold, base if m != baseline else None, reps)
                           for m, rs in exp.runs.items()}
        first = next(iter(exp.runs.values()))[0]
        settings[exp.task] = {"path": str(exp.path), "n_demos": first.n_demos, "failure_threshold": threshold,
                              "timesteps": max(r.timesteps for rs in exp.runs.values() for r in rs)}
    everywhere = [m for m in tasks[experiments[0].task] if all(m in t for t in tasks.values())]
    finals = {m: [t[m]["finals"] for t in tasks.values()] for m in everywhere}
    aggregate = {}
    for m in everywhere:
        estimate = stats.iqm_interval(finals[m], reps=reps)
        aggregate[m] = {"iqm": estimate.point, "ci": [estimate.low, estimate.high], "n_tasks": len(tasks),
                        "n_runs": sum(len(f) for f in finals[m])}
    improvement = {
        f"{m}>{baseline}": _pair(stats.improvement_interval(finals[m], finals[baseline], reps=reps))
        for m in everywhere if baseline in finals and m != baseline}
    return {
        "budget_steps": max(s["timesteps"] for s in settings.values()),
        "baseline": baseline,
        "tasks": tasks,
        "aggregate": aggregate,
        "prob_improvement": improvement,
        "experiments": settings,
        "statistics": {"bootstrap_reps": reps, "profile_reps": min(reps, stats.PROFILE_REPS),
                       "confidence": stats.CONFIDENCE, "seed": stats.SEED, "min_seeds": stats.MIN_SEEDS,
                       "final_fraction": stats.FINAL_FRACTION, "smoothing_evaluations": stats.SMOOTHING},
    }


@dataclass
class CompareOutputs:
    """Where :func:`compare` wrote its results, and what it left out (unfinished runs by experiment)."""

    json: Path
    markdown: Path
    plot: Path
    profile: Path
    summary: dict[str, Any]
    unfinished: dict[Path, list[Path]]


def output_paths(output: Path) -> tuple[Path, Path, Path, Path]:
    """The JSON file and its siblings: the markdown table, the curves PNG and the
    performance-profile PNG (``<stem>-profile.png``)."""
    output = Path(output)
    if output.suffix != ".json":
        raise L2LError(f"--output {output} must end in .json (the table and plots go beside it)")
    return (output, output.with_suffix(".md"), output.with_suffix(".png"),
            output.with_name(f"{output.stem}-profile.png"))


def compare(experiments: Path | Sequence[Path], output: Path | None = None, *, force: bool = False,
            methods: Sequence[str] | None = None, baseline: str = BASELINE,
            reps: int = stats.BOOTSTRAP_REPS) -> CompareOutputs:
    """Compare the finished runs of one or several experiments (one task each) and write the
    JSON (:func:`summarize`), the markdown table and the two plots.

    Args:
        experiments: ``runs/gail/<experiment>``, or several of them for an aggregate over tasks.
        output: the JSON path; default for one experiment ``<experiment>/compare.json``, so that
            results of an experiment stay with its runs and the shipped ``results/`` are never
            touched; required for several. The table and plots go beside it (:func:`output_paths`).
        force: overwrite existing outputs (refused otherwise, before anything is written).
        methods: compare only these methods (run labels), in this order; default: all.
        baseline: the method every other one is compared with (P(X > Y), Mann-Whitney).
        reps: bootstrap resamples per interval (rliable's 50,000 by default; fewer for quick looks).

    Raises:
        L2LError: no experiment, several without ``output``, two of the same task, a baseline
            without finished runs, a bad ``output``, ``reps < 1``, existing outputs without
            ``force``, or any refusal of :func:`load_experiment`.
    """
    paths = [Path(experiments)] if isinstance(experiments, (str, Path)) else [Path(p) for p in experiments]
    if not paths:
        raise L2LError("no experiment to compare: pass at least one runs/gail/<experiment> directory")
    if output is None and len(paths) > 1:
        raise L2LError(f"{len(paths)} experiments are compared together: pass --output PATH.json for "
                       "the results")
    if reps < 1:
        raise L2LError(f"--bootstrap-reps must be at least 1, got {reps}")
    # A bad --output fails before any run is read.
    targets = output_paths(output or paths[0] / DEFAULT_OUTPUT_NAME)
    loaded = []
    for path in paths:
        runs, unfinished = load_experiment(path, methods)
        loaded.append(Experiment(path, next(iter(runs.values()))[0].task, runs, unfinished))
    labels = sorted({m for exp in loaded for m in exp.runs})
    if baseline not in labels:
        raise L2LError(f"the baseline {baseline} has no finished runs to compare with: pass --baseline with "
                       f"one of {', '.join(labels)}")
    tasks = [exp.task for exp in loaded]
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if twice:
        raise L2LError(f"several experiments of task {', '.join(twice)}: pass one experiment per task")
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise L2LError(f"{existing[0]} exists: pass --force to overwrite the results, or --output "
                       "another .json path")
    summary = summarize(loaded, baseline=baseline, reps=reps)
    json_path, md_path, png_path, profile_path = targets
    write_json(json_path, summary)
    atomic_write_text(md_path, markdown_table(summary))
    plot_curves(loaded, png_path)
    plot_profiles(summary, profile_path, method_colors(loaded))
    return CompareOutputs(json_path, md_path, png_path, profile_path, summary,
                          {exp.path: exp.unfinished for exp in loaded})
