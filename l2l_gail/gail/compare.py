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
intervals. To see *what the discriminator does*, each run's TensorBoard scalars (expert and
generator accuracy and logits, update norm, reward) are averaged over its last 20% of rounds,
and the per-method medians form a second table. Plots: the curves, and rliable's performance
profiles (the fraction of runs whose final exceeds tau) per task and over all tasks.
"""

from __future__ import annotations

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
from l2l_gail.gail import stats
from l2l_gail.gail.stats import final_window, series_metrics
from l2l_gail.runs import DEFAULT_ROOT, atomic_write, atomic_write_text, console_script, write_json

# The shipped benchmark tables (scripts/bench_gail.py's --output-dir); `compare` itself writes
# beside the experiment unless given --output, so that it never touches the source tree.
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results" / "gail"
DEFAULT_OUTPUT_NAME = "compare.json"
METHOD_ORDER = ("gail", "gail-gp", "l2l-gail", "l2l-gail-policy", "l2l-gail-both")
BASELINE = "gail"  # P(X > Y) and the Mann-Whitney test compare every method with this one
PROFILE_POINTS = 201  # thresholds tau on a performance profile's x axis
DISCRIMINATOR_TAGS = {  # diagnostic name -> TensorBoard tag written by `l2l gail train`
    "acc_expert": "disc/disc_acc_expert", "acc_gen": "disc/disc_acc_gen",
    "logit_expert": "disc/logit_expert", "logit_gen": "disc/logit_gen",
    "update_norm": "disc/update_norm", "reward_mean": "reward/mean",
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
    from l2l_gail.gail.config import METHODS, GAILConfig
    from l2l_gail.gail.tasks import load_task

    if config.get("method") not in METHODS:
        return None
    try:
        task = load_task(str(config.get("task")))
    except L2LError:
        return None
    default = GAILConfig(task=task.name, method=config["method"]).resolved(task).to_dict()
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


def _pair(estimate: stats.Interval) -> dict[str, Any]:
    return {"p": estimate.point, "ci": [estimate.low, estimate.high]}


def _method_summary(results: list[RunResult], threshold: float, baseline: list[RunResult] | None,
                    reps: int) -> dict[str, Any]:
    """One method's entry in ``tasks[task]`` (see :func:`summarize`)."""
    per_run = [{**r.metrics, **stats.stability_labels(r.normalized, threshold),
                "discriminator": discriminator_diagnostics(r.path)} for r in results]
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
    entry["discriminator_median"] = {
        name: float(np.median(v)) for name in DISCRIMINATOR_TAGS
        if (v := [m["discriminator"][name] for m in per_run if name in m["discriminator"]])}
    entry["runs"] = {f"seed{r.seed}": m for r, m in zip(results, per_run, strict=True)}
    return entry


def summarize(experiments: Sequence[Experiment], *, baseline: str = BASELINE,
              reps: int = stats.BOOTSTRAP_REPS) -> dict[str, Any]:
    """The results JSON.

    ``{"budget_steps", "baseline", "tasks": {task: {method: {"seeds", "finals", "iqm", "ci",
    "n_runs", "few_seeds", "failed", "collapsed", "steps_per_s", "final_std",
    "max_drawdown_median", "auc_mean", "prob_improvement": {"p", "ci"}, "mann_whitney": {"p",
    "method", "smallest_p"}, "discriminator_median", "runs": {"seed<k>": per-run metrics}}}},
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


def _ci(point: float, interval: Sequence[float], digits: int = 3) -> str:
    low, high = interval
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown_table(summary: dict[str, Any]) -> str:
    """Per task one row per method (every seed's final, IQM, comparisons with the baseline,
    stability, speed) and the discriminator's medians; then the aggregate over tasks (when there
    are several) and the footnotes that define the columns."""
    base = summary["baseline"]
    lines: list[str] = []
    for task, methods in summary["tasks"].items():
        exp = summary["experiments"][task]
        lines += [
            f"Task `{task}` ({exp['path']}): {exp['timesteps']:,} environment steps, {exp['n_demos']} "
            "demonstration episodes; normalised return (0 = random policy, 1 = expert).", "",
            f"| method | runs | final IQM [95% CI] | final by seed | P(X > {base}) [95% CI] "
            f"| Mann-Whitney p vs {base} (smallest possible) | failed | collapsed | drawdown (median) "
            "| AUC (mean) | env steps/s (median) |",
            "|---|---:|---|---|---|---|---:|---:|---:|---:|---:|"]
        for method, s in methods.items():
            n = s["n_runs"]
            poi = s.get("prob_improvement")
            mw = s.get("mann_whitney")
            test = f"{mw['p']:.3f} ({mw['smallest_p']:.3f})" if mw else "-"
            drawdown = s["max_drawdown_median"]
            lines.append(
                f"| {method} | {n}{'†' if s['few_seeds'] else ''} | {_ci(s['iqm'], s['ci'])} "
                f"| {', '.join(f'{k}: {f:.3f}' for k, f in zip(s['seeds'], s['finals'], strict=True))} "
                f"| {_ci(poi['p'], poi['ci'], 2) if poi else '-'} | {test} "
                f"| {s['failed']}/{n} | {s['collapsed']}/{n} "
                f"| {'-' if drawdown is None else f'{drawdown:.0%}'} | {s['auc_mean']:.3f} "
                f"| {s['steps_per_s']:.0f} |")
        if any(s.get("discriminator_median") for s in methods.values()):
            lines += ["", "Discriminator over the last 20% of rounds (median over runs): accuracy and mean "
                      "logit on expert and generator samples, update norm, generator reward.", "",
                      "| method | acc expert | acc generator | logit expert | logit generator | update norm "
                      "| reward mean |", "|---|---:|---:|---:|---:|---:|---:|"]
            for method, s in methods.items():
                d = s.get("discriminator_median", {})
                cells = [f"{d[k]:.3f}" if k in d else "-" for k in DISCRIMINATOR_TAGS]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(summary["tasks"]) > 1:
        lines += [f"Aggregate over the tasks {', '.join(summary['tasks'])} (the methods that ran on all "
                  "of them): IQM of every run's final, P(X > Y) averaged over tasks.", "",
                  f"| method | tasks | runs | final IQM [95% CI] | P(X > {base}) [95% CI] |",
                  "|---|---:|---:|---|---|"]
        for method, a in summary["aggregate"].items():
            p = summary["prob_improvement"].get(f"{method}>{base}")
            lines.append(f"| {method} | {a['n_tasks']} | {a['n_runs']} | {_ci(a['iqm'], a['ci'])} "
                         f"| {_ci(p['p'], p['ci'], 2) if p else '-'} |")
        lines.append("")
    st = summary["statistics"]
    notes = [
        f"A run's final is its mean normalised return over the last {st['final_fraction']:.0%} of "
        "evaluations. Intervals: 95% percentile intervals of a stratified bootstrap over runs "
        f"({st['bootstrap_reps']:,} resamples, seed {st['seed']}; rliable, Agarwal et al. 2021).",
        f"† {stats.FEW_SEEDS_NOTE}",
        f"P(X > {base}): the probability that a random run of the method ends above a random {base} run "
        "(ties count half). Mann-Whitney: two-sided U test of the finals (exact unless there are ties); "
        "in parentheses the smallest p that test can give for these seed counts (3 vs 3: 0.100, "
        "5 vs 5: 0.008), so a large p from few seeds is no evidence of equality.",
        f"Failed: the run's peak stayed below half the best method's median final on the task. "
        f"Collapsed: the run did not fail, and every evaluation of its last {st['final_fraction']:.0%} is "
        "below half its peak. Peak and drawdown are taken on the curve averaged over "
        f"{st['smoothing_evaluations']} consecutive evaluations; drawdown is the deepest fall below the "
        "best point so far as a fraction of it (median over the runs that did not fail).",
    ]
    return "\n".join(lines) + "\n" + "\n\n".join(notes) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(experiments: Sequence[Experiment]) -> dict[str, str]:
    """One color per method, the same in every panel and in both figures."""
    methods = list(dict.fromkeys(m for exp in experiments for m in exp.runs))
    return {m: f"C{i}" for i, m in enumerate(methods)}


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    _pyplot().close(fig)


def plot_curves(experiments: Sequence[Experiment], path: Path) -> None:
    """Normalised return against environment steps, one panel per task: per method the mean over
    seeds with a 95% bootstrap band of the mean, and one thin line per seed."""
    plt = _pyplot()
    colors = _colors(experiments)
    fig, axes = plt.subplots(1, len(experiments), figsize=(7 * len(experiments), 4.5), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, exp in zip(axes[0], experiments, strict=True):
        for method, results in exp.runs.items():
            color = colors[method]
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
        ax.set_title(f"{exp.task}: {exp.path.name}")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    _save(fig, path)


def plot_profiles(summary: dict[str, Any], path: Path, colors: dict[str, str]) -> None:
    """Performance profiles (rliable style): the fraction of runs whose final exceeds tau, with a
    95% stratified bootstrap band, one panel per task and, for several tasks, one over all of them."""
    from rliable.plot_utils import plot_performance_profiles

    plt = _pyplot()
    tasks = summary["tasks"]
    panels = {task: {m: [s["finals"]] for m, s in methods.items()} for task, methods in tasks.items()}
    if len(panels) > 1:
        panels["all tasks"] = {m: [t[m]["finals"] for t in tasks.values()] for m in summary["aggregate"]}
    every = [f for p in panels.values() for scores in p.values() for task in scores for f in task]
    taus = np.linspace(min(0.0, min(every)), max(1.0, max(every)), PROFILE_POINTS)
    reps = summary["statistics"]["profile_reps"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (title, scores) in zip(axes[0], panels.items(), strict=True):
        profiles, bands = {}, {}
        for method, by_task in scores.items():
            profile, low, high = stats.performance_profile(by_task, taus, reps=reps)
            profiles[method], bands[method] = profile, (low, high)
        plot_performance_profiles(profiles, taus, performance_profile_cis=bands, ax=ax, colors=colors,
                                  xlabel=r"normalised final return $\tau$",
                                  ylabel=r"fraction of runs with final $> \tau$",
                                  labelsize="medium", ticklabelsize="medium")
        ax.set_title(title)
        ax.legend(loc="lower left", fontsize="small")
    _save(fig, path)


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
    plot_profiles(summary, profile_path, _colors(loaded))
    return CompareOutputs(json_path, md_path, png_path, profile_path, summary,
                          {exp.path: exp.unfinished for exp in loaded})
