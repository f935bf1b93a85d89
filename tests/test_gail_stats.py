"""l2l_gail.gail.stats: the statistics against rliable's and scipy's own functions on fixed data,
the stability labels and drawdown on hand-made curves."""

from __future__ import annotations

import inspect
from types import ModuleType

import numpy as np
import pytest
from rliable import metrics
from scipy.stats import mannwhitneyu

from l2l_gail.gail import compare, stats

RNG = np.random.default_rng(20260101)
X = RNG.uniform(0.0, 1.0, size=(5, 4))  # 5 runs x 4 tasks, rliable's layout
Y = RNG.uniform(0.0, 1.0, size=(3, 4))
Y[1, 2] = X[4, 2]  # a tie: counts half in P(X > Y)


@pytest.fixture(scope="module")
def rly() -> ModuleType:
    """``rliable.library`` (imported lazily: its bootstrap pulls in arch and pandas)."""
    from rliable import library

    return library


def rliable_interval(rly: ModuleType, scores: np.ndarray | list[np.ndarray], func, reps: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """rliable's point estimate and interval, its bootstrap seeded through numpy's global generator."""
    np.random.seed(seed)
    point, interval = rly.get_interval_estimates({"m": scores}, func, reps=reps)
    return np.asarray(point["m"]), np.asarray(interval["m"])


def rliable_iqm(scores: np.ndarray) -> np.ndarray:
    """The IQM as get_interval_estimates wants it: a 1-D array."""
    return np.array([metrics.aggregate_iqm(scores)])


@pytest.mark.parametrize(("scores", "seed"), [(X, 3), (X[:, :1], 11), (Y, 0)])
def test_iqm_interval_is_rliables(rly: ModuleType, scores: np.ndarray, seed: int) -> None:
    ours = stats.iqm_interval(scores.T, reps=1000, seed=seed)  # ours: per task, the runs
    point, interval = rliable_interval(rly, scores, rliable_iqm, 1000, seed)
    assert ours.point == pytest.approx(float(point[0]), abs=1e-12)
    assert [ours.low, ours.high] == pytest.approx(interval.ravel().tolist(), abs=1e-12)


def test_probability_of_improvement_is_rliables(rly: ModuleType) -> None:
    ours = stats.improvement_interval(X.T, Y.T, reps=500, seed=5)
    point, interval = rliable_interval(rly, [X, Y], metrics.probability_of_improvement, 500, 5)
    assert ours.point == pytest.approx(float(point), abs=1e-12)
    assert [ours.low, ours.high] == pytest.approx(interval.ravel().tolist(), abs=1e-12)
    single = stats.improvement_interval([[0.9, 0.9, 0.9]], [[0.2, 0.2, 0.9]], reps=100)
    assert single.point == pytest.approx(7.5 / 9)  # 6 wins and 3 ties of 9 pairs


def test_performance_profile_is_rliables(rly: ModuleType) -> None:
    taus = np.linspace(0.0, 1.0, 21)
    profile, low, high = stats.performance_profile(X.T, taus, reps=500, seed=2)
    np.random.seed(2)
    points, bands = rly.create_performance_profile({"m": X}, taus, reps=500)
    np.testing.assert_allclose(profile, points["m"], atol=1e-12)
    np.testing.assert_allclose(np.stack([low, high]), bands["m"], atol=1e-12)
    assert profile[0] == 1.0 and profile[-1] == 0.0  # every uniform(0, 1) score is above 0 and not above 1


def test_intervals_are_reproducible_and_their_defaults_are_rliables() -> None:
    assert stats.iqm_interval(X.T, reps=500) == stats.iqm_interval(X.T, reps=500)
    assert stats.iqm_interval(X.T, reps=500, seed=1) != stats.iqm_interval(X.T, reps=500, seed=2)
    for func in (stats.iqm_interval, stats.improvement_interval, compare.compare, compare.summarize):
        assert inspect.signature(func).parameters["reps"].default >= 50_000
    assert stats.CONFIDENCE == 0.95


def test_three_runs_give_the_mean_and_min_max() -> None:
    estimate = stats.iqm_interval([[0.2, 0.5, 0.8]], reps=2000)
    assert estimate.point == pytest.approx(0.5)  # int(3 / 4) = 0 runs trimmed: the plain mean
    assert (estimate.low, estimate.high) == (pytest.approx(0.2), pytest.approx(0.8))
    assert stats.iqm([[0, 1, 2, 3, 4, 5, 6, 7]]) == pytest.approx(3.5)  # mean of 2, 3, 4, 5


def test_unequal_runs_per_task_are_pooled() -> None:
    scores = [[0.1, 0.5, 0.9, 0.4, 0.6], [0.3, 0.2, 0.7]]
    estimate = stats.iqm_interval(scores, reps=1000)
    assert estimate.point == pytest.approx(metrics.aggregate_iqm(np.concatenate(scores)))
    assert 0.1 <= estimate.low <= estimate.point <= estimate.high <= 0.9
    with pytest.raises(ValueError, match="same tasks"):
        stats.improvement_interval(scores, scores[:1], reps=10)
    with pytest.raises(ValueError, match="at least one run"):
        stats.iqm_interval([[0.1], []], reps=10)


@pytest.mark.parametrize(("x", "y"), [([0.5, 0.6, 0.7], [0.1, 0.2, 0.3]), ([0.1, 0.4, 0.35, 0.8, 0.2],
                                      [0.3, 0.5, 0.45, 0.9, 0.6]), ([0.9, 0.2], [0.1, 0.3, 0.5, 0.7])])
def test_mann_whitney_is_scipys_exact_test(x: list[float], y: list[float]) -> None:
    p, method = stats.mann_whitney(x, y)
    assert method == "exact"
    assert p == mannwhitneyu(x, y, alternative="two-sided", method="exact").pvalue


def test_mann_whitney_with_ties_and_the_smallest_p() -> None:
    x, y = [0.9, 0.9, 0.9], [0.2, 0.2, 0.9]
    p, method = stats.mann_whitney(x, y)
    assert method == "asymptotic"
    assert p == mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue
    assert stats.mann_whitney([0.5, 0.6, 0.7], [0.1, 0.2, 0.3])[0] == pytest.approx(stats.smallest_p(3, 3))
    assert stats.smallest_p(3, 3) == pytest.approx(0.1)
    assert stats.smallest_p(5, 5) == pytest.approx(2 / 252)
    assert stats.smallest_p(1, 1) == 1.0


# Hand-made curves of 10 evaluations: the final window is the last 2, the curve averages 3.
NEVER_LEARNED = [0.0, 0.05, 0.1, 0.12, 0.08, 0.1, 0.02, 0.0, 0.01, 0.0]
LEARNED_AND_FELL = [0.1, 0.5, 0.9, 0.9, 0.9, 0.8, 0.3, 0.2, 0.1, 0.1]
DIPS_AND_RECOVERS = [0.1, 0.5, 0.9, 0.9, 0.2, 0.1, 0.2, 0.8, 0.9, 0.9]
THRESHOLD = 0.4  # half a best median final of 0.8


def test_a_run_that_never_learned_is_failed_not_collapsed() -> None:
    m = stats.series_metrics(NEVER_LEARNED)
    assert m["peak"] == pytest.approx(0.1)  # the curve's best: mean of 0.1, 0.12, 0.08
    assert stats.stability_labels(NEVER_LEARNED, THRESHOLD) == {"failed": True, "collapsed": False}


def test_a_run_that_learned_and_fell_is_collapsed() -> None:
    m = stats.series_metrics(LEARNED_AND_FELL)
    assert m["final"] == pytest.approx(0.1)
    assert m["peak"] == pytest.approx(0.9)
    assert m["max_drawdown"] == pytest.approx((0.9 - 0.4 / 3) / 0.9)  # down to mean(0.2, 0.1, 0.1)
    assert stats.stability_labels(LEARNED_AND_FELL, THRESHOLD) == {"failed": False, "collapsed": True}
    # One evaluation of the final window at half the peak: it had not stayed down.
    assert not stats.stability_labels([*LEARNED_AND_FELL[:-1], 0.45], THRESHOLD)["collapsed"]


def test_a_run_that_dips_and_recovers_is_neither() -> None:
    m = stats.series_metrics(DIPS_AND_RECOVERS)
    # From the curve's best so far, mean(0.5, 0.9, 0.9), down to mean(0.2, 0.1, 0.2).
    assert m["max_drawdown"] == pytest.approx((2.3 - 0.5) / 2.3)
    assert m["final"] == pytest.approx(0.9) and m["auc"] == pytest.approx(0.55)
    assert stats.stability_labels(DIPS_AND_RECOVERS, THRESHOLD) == {"failed": False, "collapsed": False}


def test_failure_threshold_and_drawdown_guards() -> None:
    assert stats.failure_threshold([[0.2, 0.2, 0.9], [0.9, 0.8, 0.7], [0.1]]) == pytest.approx(0.4)
    below_random = [-0.2, -0.1, -0.3, -0.2]
    assert stats.series_metrics(below_random)["max_drawdown"] == 0.0  # never above 0: nothing to lose
    assert stats.stability_labels(below_random, -1.0) == {"failed": True, "collapsed": False}
    rising = [0.0, 0.2, 0.4, 0.6, 0.8]
    assert stats.series_metrics(rising)["max_drawdown"] == 0.0
    assert stats.series_metrics([0.3, 0.9])["peak"] == pytest.approx(0.6)  # fewer than 3: one mean
    with pytest.raises(ValueError, match="without evaluations"):
        stats.series_metrics([])
