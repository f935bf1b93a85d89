"""Statistics of a benchmark over seeds and tasks: per-run stability labels, IQM and probability
of improvement with stratified bootstrap intervals, Mann-Whitney tests and performance profiles.

The aggregate statistics follow Agarwal et al., *Deep RL at the Edge of the Statistical
Precipice* (NeurIPS 2021, arXiv 2108.13264), with rliable's definitions: the IQM is
``rliable.metrics.aggregate_iqm`` (a 25% trimmed mean over all runs of all tasks), the
probability of improvement is ``rliable.metrics.probability_of_improvement`` (per task the
Mann-Whitney ``U / (n m)``, i.e. P(X > Y) + P(X = Y) / 2 for a random run of each, averaged over
tasks), a performance profile is rliable's run-score distribution (the fraction of runs with a
score above tau), and every interval is a percentile interval of a stratified bootstrap:
each resample draws, within every task independently, as many runs as it has, with
replacement (rliable's ``StratifiedBootstrap``; for P(X > Y) the two methods' runs are
resampled independently, ``StratifiedIndependentBootstrap``).

The bootstrap is vectorised here instead of calling ``rliable.library.get_interval_estimates``,
which evaluates the statistic once per resample in a Python loop (for P(X > Y) that is one
scipy Mann-Whitney call per task per resample: minutes for a benchmark's comparisons at 50,000
resamples).
The resamples are drawn from ``np.random.RandomState(seed)`` in exactly the order rliable draws
them from numpy's global generator, so when every task has the same number of runs the
intervals are rliable's own with ``np.random.seed(seed)`` (tests/test_gail_stats.py checks this
against rliable). With unequal runs per task (which
rliable does not support) the runs of all tasks are pooled for the IQM and the profile, so a
task with more seeds weighs more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from rliable.metrics import aggregate_iqm, probability_of_improvement
from scipy.stats import mannwhitneyu, trim_mean

BOOTSTRAP_REPS = 50_000  # resamples per interval: the default of rliable's get_interval_estimates
PROFILE_REPS = 2_000  # resamples per profile: the default of rliable's create_performance_profile
CONFIDENCE = 0.95
SEED = 0  # every interval starts from this seed, so a table is reproducible and order-independent
MIN_SEEDS = 5  # fewer runs than this get flagged: see FEW_SEEDS_NOTE
FINAL_FRACTION = 0.2  # a run's final is its mean over this trailing fraction of evaluations
SMOOTHING = 3  # evaluations averaged into one point of a run's curve (peak, drawdown)
FAIL_RATIO = 0.5  # failed: the run's peak stayed below this fraction of the task's reference
COLLAPSE_RATIO = 0.5  # collapsed: every evaluation of the final window is below this fraction of the peak

FEW_SEEDS_NOTE = (
    f"fewer than {MIN_SEEDS} seeds: the IQM trims int(n/4) runs from each end, so that of 3 runs is "
    "their plain mean, and the 95% bootstrap interval of 3 runs is exactly [min, max] (a resample of "
    "three copies of the lowest run has probability 1/27 > 2.5%): such intervals say little.")

Scores = Sequence[Sequence[float]]  # per task, the runs' scores (e.g. finals)


class Interval(NamedTuple):
    """A point estimate and its bootstrap confidence interval."""

    point: float
    low: float
    high: float


def final_window(n: int) -> int:
    """How many of ``n`` trailing evaluations form the "last 20%" (at least one)."""
    return max(1, math.ceil(FINAL_FRACTION * n))


def smoothed(normalized: npt.ArrayLike) -> np.ndarray:
    """A run's curve: trailing means over ``SMOOTHING`` consecutive evaluations (over all of them
    when there are fewer), so that one lucky or unlucky evaluation sets no peak and no trough."""
    n = np.asarray(normalized, dtype=np.float64)
    return sliding_window_view(n, min(SMOOTHING, n.size)).mean(axis=1)


def series_metrics(normalized: npt.ArrayLike) -> dict[str, float]:
    """One run's ``final``, ``peak``, ``max_drawdown`` and ``auc`` from its normalised returns.

    * ``final``: the mean of the last 20% of evaluations (at least one).
    * ``peak``: the maximum of the run's :func:`smoothed` curve ``s``.
    * ``max_drawdown``: the deepest fall relative to the best point so far,
      ``max_t (M_t - s_t) / M_t`` with ``M_t = max_{u<=t} s_u``, over the points where ``M_t > 0``
      (0 if there are none: a run that never rose above the random policy had nothing to lose). It is
      ``(peak - later minimum) / peak`` when the deepest fall comes after the peak; it exceeds 1 when
      the run falls below the random policy.
    * ``auc``: the mean of all evaluations.
    """
    n = np.asarray(normalized, dtype=np.float64)
    if n.size == 0:
        raise ValueError("a run without evaluations has no stability metrics")
    curve = smoothed(n)
    best = np.maximum.accumulate(curve)
    positive = best > 0
    falls = (best[positive] - curve[positive]) / best[positive]
    return {
        "final": float(n[-final_window(n.size):].mean()),
        "peak": float(curve.max()),
        "max_drawdown": float(falls.max()) if falls.size else 0.0,
        "auc": float(n.mean()),
    }


def failure_threshold(finals_by_method: Sequence[Sequence[float]]) -> float:
    """The level a run must reach not to count as failed on a task: half the best method's median
    final there."""
    return FAIL_RATIO * max(float(np.median(finals)) for finals in finals_by_method)


def stability_labels(normalized: npt.ArrayLike, threshold: float) -> dict[str, bool]:
    """``failed`` and ``collapsed`` of one run; they exclude each other.

    * ``failed``: the run never learned: its peak (see :func:`series_metrics`) stayed below
      ``threshold`` (:func:`failure_threshold`) or at or below the random policy's 0.
    * ``collapsed``: the run learned (not failed), then fell more than half below its peak and
      stayed there: every evaluation of the final window (the last 20%) is below ``peak / 2``. One
      evaluation at or above half the peak means the run had not stayed down.

    A run that never learned is therefore failed, never collapsed (its tiny peak would make any
    noise a "collapse"), and a run that dips and recovers before the final window is neither.
    """
    n = np.asarray(normalized, dtype=np.float64)
    peak = float(smoothed(n).max())
    failed = not (peak > 0 and peak >= threshold)
    collapsed = not failed and bool(np.all(n[-final_window(n.size):] < COLLAPSE_RATIO * peak))
    return {"failed": failed, "collapsed": collapsed}


def _as_tasks(scores: Scores) -> list[np.ndarray]:
    tasks = [np.asarray(s, dtype=np.float64).ravel() for s in scores]
    if not tasks or any(t.size == 0 for t in tasks):
        raise ValueError("every task needs at least one run")
    return tasks


def _resample(samples: Sequence[Sequence[np.ndarray]], reps: int, seed: int) -> list[list[np.ndarray]]:
    """Stratified bootstrap resamples: ``out[s][t]`` is a ``(reps, n)`` array of sample ``s``'s
    runs on task ``t`` (``n`` of them) drawn with replacement.

    Per resample the run indices are drawn sample by sample, each as rliable's (runs x tasks)
    index matrix in row-major order (task by task when a sample's tasks have unequal runs), all in
    one ``randint`` call with per-position upper bounds, which yields the same stream as
    rliable's per-resample ``np.random.choice`` calls.
    """
    highs: list[int] = []
    cells: list[list[list[int]]] = []  # cells[s][t]: positions in a resample's draw, by run
    for tasks in samples:
        counts = [t.size for t in tasks]
        if len(set(counts)) == 1:
            order = [(t, i) for i in range(counts[0]) for t in range(len(tasks))]
        else:
            order = [(t, i) for t, c in enumerate(counts) for i in range(c)]
        where: list[list[int]] = [[] for _ in tasks]
        for t, _ in order:
            where[t].append(len(highs))
            highs.append(counts[t])
        cells.append(where)
    rng = np.random.RandomState(seed)
    draws = rng.randint(0, np.broadcast_to(np.asarray(highs, dtype=np.int64), (reps, len(highs))))
    return [[tasks[t][draws[:, where[t]]] for t in range(len(tasks))]
            for tasks, where in zip(samples, cells, strict=True)]


def _percentiles(stats: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of bootstrap statistics ``stats`` (reps first), as arch computes it."""
    alpha = (1.0 - size) / 2
    low, high = np.percentile(stats, [100 * alpha, 100 * (1.0 - alpha)], axis=0)
    return low, high


def _interval(point: float, stats: np.ndarray, size: float) -> Interval:
    low, high = _percentiles(stats, size)
    return Interval(point, float(low), float(high))


def iqm(scores: Scores) -> float:
    """The IQM of all runs of all tasks (``rliable.metrics.aggregate_iqm``)."""
    return float(aggregate_iqm(np.concatenate(_as_tasks(scores))))


def iqm_interval(scores: Scores, *, reps: int = BOOTSTRAP_REPS, size: float = CONFIDENCE,
                 seed: int = SEED) -> Interval:
    """The IQM over tasks and runs with its stratified bootstrap percentile interval."""
    (resampled,) = _resample([_as_tasks(scores)], reps, seed)
    stats = trim_mean(np.concatenate(resampled, axis=1), 0.25, axis=1)  # aggregate_iqm per resample
    return _interval(iqm(scores), stats, size)


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 per row of resampled runs ``x`` (reps, n) and ``y`` (reps, m)."""
    greater = (x[:, :, None] > y[:, None, :]).sum(axis=(1, 2))
    ties = (x[:, :, None] == y[:, None, :]).sum(axis=(1, 2))
    return (greater + 0.5 * ties) / (x.shape[1] * y.shape[1])


def improvement_interval(x: Scores, y: Scores, *, reps: int = BOOTSTRAP_REPS, size: float = CONFIDENCE,
                         seed: int = SEED) -> Interval:
    """P(X > Y) averaged over tasks (``x`` and ``y`` list the same tasks in the same order) with
    its stratified bootstrap percentile interval, the two methods resampled independently."""
    xs, ys = _as_tasks(x), _as_tasks(y)
    if len(xs) != len(ys):
        raise ValueError(f"P(X > Y) needs the same tasks for both methods, got {len(xs)} and {len(ys)}")
    point = np.mean([probability_of_improvement(a[:, None], b[:, None]) for a, b in zip(xs, ys, strict=True)])
    xr, yr = _resample([xs, ys], reps, seed)
    stats = np.mean([_improvement(a, b) for a, b in zip(xr, yr, strict=True)], axis=0)
    return _interval(float(point), stats, size)


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> tuple[float, str]:
    """Two-sided Mann-Whitney U test of two methods' finals on one task: the p-value and the
    method, ``exact`` unless the pooled values have ties (scipy's exact null distribution
    assumes none), then ``asymptotic`` (normal approximation with tie correction)."""
    pooled = np.concatenate([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    method = "exact" if np.unique(pooled).size == pooled.size else "asymptotic"
    return float(mannwhitneyu(x, y, alternative="two-sided", method=method).pvalue), method


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p-value the exact Mann-Whitney test can give for ``n`` vs ``m`` runs:
    2 / C(n + m, n), reached when every run of one method beats every run of the other
    (3 vs 3: 0.10; 5 vs 5: 0.0079)."""
    return min(1.0, 2 / math.comb(n + m, n))


def performance_profile(scores: Scores, taus: np.ndarray, *, reps: int = PROFILE_REPS,
                        size: float = CONFIDENCE, seed: int = SEED,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rliable's run-score distribution: for every threshold in ``taus`` the fraction of runs (of
    all tasks) with a score above it, and its stratified bootstrap percentile band (low, high)."""
    taus = np.asarray(taus, dtype=np.float64)
    tasks = _as_tasks(scores)

    def above(runs: np.ndarray) -> np.ndarray:
        return (runs[..., None] > taus).mean(axis=-2)

    (resampled,) = _resample([tasks], reps, seed)
    low, high = _percentiles(above(np.concatenate(resampled, axis=1)), size)
    return above(np.concatenate(tasks)), low, high
