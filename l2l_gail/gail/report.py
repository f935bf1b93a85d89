"""What ``l2l gail compare`` shows: the markdown table of :func:`~l2l_gail.gail.compare.summarize`'s
results, the learning curves and rliable's performance profiles (Agarwal et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2l_gail.gail import stats
from l2l_gail.gail.experiment import DIAGNOSTIC_TAGS, Experiment
from l2l_gail.runs import atomic_write

PROFILE_POINTS = 201  # thresholds tau on a performance profile's x axis
DIAGNOSTIC_TABLES = {  # group of DIAGNOSTIC_TAGS -> (the table's introduction, its columns)
    "discriminator": (
        "Discriminator over the last 20% of rounds (median over runs): accuracy and mean logit on expert "
        "and generator samples, update norm, generator reward, how far one update moves the generator "
        "rows' outputs (mean absolute logit change, mean KL between the Bernoulli outputs), the learned "
        "step's norm over Adam's on the same gradient, the constraint's multiplier (- where a method has "
        "none).",
        "acc expert | acc generator | logit expert | logit generator | update norm | reward mean "
        "| logit shift | KL shift | norm / Adam's | multiplier"),
    "generator": (
        "Generator (PPO) over the last 20% of rounds (median over runs): stable-baselines3's approximate "
        "KL between the policy before and after one round's update and its clip fraction, the policy's "
        "action std, and the learned optimizer's update norm on the policy (- where Adam steps it).",
        "approx KL | clip fraction | action std | learned update norm"),
}


def _number(value: float) -> str:
    """Three decimals, or three significant digits where those would show a small value as 0."""
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2e}"


def _ci(point: float, interval: Sequence[float], digits: int = 3) -> str:
    low, high = interval
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown_table(summary: dict[str, Any]) -> str:
    """Per task one row per method (every seed's final, IQM, comparisons with the baseline,
    stability, speed) and both players' medians; then, when there are several tasks, one row per
    method with every task's IQM and the aggregate; then the footnotes that define the columns."""
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
        for group, (intro, header) in DIAGNOSTIC_TABLES.items():
            if any(s.get(f"{group}_median") for s in methods.values()):
                lines += ["", intro, "", f"| method | {header} |",
                          "|---|" + "---:|" * len(DIAGNOSTIC_TAGS[group])]
                for method, s in methods.items():
                    d = s.get(f"{group}_median", {})
                    cells = [_number(d[k]) if k in d else "-" for k in DIAGNOSTIC_TAGS[group]]
                    lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(summary["tasks"]) > 1:
        tasks = list(summary["tasks"])
        lines += [f"Aggregate over the tasks {', '.join(tasks)} (the methods that ran on all of them): the "
                  "final IQM [95% CI] on each task and of every run's final over all of them, P(X > Y) "
                  "averaged over tasks, failed and collapsed runs summed over tasks.", "",
                  f"| method | runs | {' | '.join(tasks)} | aggregate | P(X > {base}) [95% CI] "
                  "| failed / collapsed |",
                  "|---|---:|" + "---|" * (len(tasks) + 2) + "---:|"]
        for method, a in summary["aggregate"].items():
            p = summary["prob_improvement"].get(f"{method}>{base}")
            entries = [summary["tasks"][task][method] for task in tasks]
            lines.append(f"| {method} | {a['n_runs']} | "
                         + " | ".join(_ci(e["iqm"], e["ci"]) for e in entries)
                         + f" | {_ci(a['iqm'], a['ci'])} | {_ci(p['p'], p['ci'], 2) if p else '-'} "
                         f"| {sum(e['failed'] for e in entries)} / {sum(e['collapsed'] for e in entries)} |")
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


def method_colors(experiments: Sequence[Experiment]) -> dict[str, str]:
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
    colors = method_colors(experiments)
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
