"""The matched-accuracy frontier's arithmetic (l2l_gail.meta.frontier), the held-out test split and
fit's per-step hook it relies on."""

from __future__ import annotations

import statistics

import pytest
import torch

from l2l_gail.errors import L2LError
from l2l_gail.meta import frontier as F
from l2l_gail.meta.apply import PGDTrainingWithWarmup, fit
from l2l_gail.meta.optimizees import MLP
from l2l_gail.meta.train import hold_out
from l2l_gail.robust.data import synthetic, to_float

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- envelope
def test_upper_envelope_keeps_the_concave_majorant_only() -> None:
    points = [(10, 0), (30, 12), (20, 2), (50, 20), (40, 17), (60, 18), (60, 5), (80, 10), (70, 12)]
    # (20, 2) lies below the chord (10, 0)-(30, 12), (70, 12) below (60, 18)-(80, 10), (60, 5) below
    # (60, 18); (40, 17) lies above (30, 12)-(50, 20) and (60, 18) above (50, 20)-(80, 10)
    assert F.upper_envelope(points) == [(10, 0), (30, 12), (40, 17), (50, 20), (60, 18), (80, 10)]


def test_upper_envelope_drops_collinear_and_handles_tiny_sets() -> None:
    assert F.upper_envelope([(0, 0), (1, 1), (2, 2)]) == [(0, 0), (2, 2)]
    assert F.upper_envelope([(5, 3)]) == [(5, 3)]
    assert F.upper_envelope([(5, 3), (5, 7), (5, 1)]) == [(5, 7)]
    assert F.upper_envelope([]) == []


def test_envelope_at_interpolates_inside_and_refuses_outside() -> None:
    env = [(10.0, 0.0), (30.0, 10.0), (50.0, 20.0), (80.0, 11.0)]
    assert F.envelope_at(env, 10) == 0
    assert F.envelope_at(env, 20) == pytest.approx(5)
    assert F.envelope_at(env, 30) == 10
    assert F.envelope_at(env, 70) == pytest.approx(14)
    assert F.envelope_at(env, 80) == 11
    assert F.envelope_at(env, 9.99) is None
    assert F.envelope_at(env, 80.01) is None
    assert F.envelope_at([(40.0, 7.0)], 40) == 7
    assert F.envelope_at([], 40) is None


def test_margins_are_attacked_minus_envelope_and_count_the_points_outside() -> None:
    env = [(10.0, 0.0), (50.0, 20.0)]
    found, excluded = F.margins(env, [(30, 15), (50, 18), (5, 50), (60, 50)])
    assert found == pytest.approx([5, -2])
    assert excluded == 2


# ----------------------------------------------------------------------------- margins over seeds
ADAM = {0: [(10, 0), (50, 20), (90, 20)], 1: [(10, 0), (50, 10), (90, 10)]}


def test_paired_margin_uses_each_seeds_own_frontier() -> None:
    # seed 0: +4 and +0 -> 2; seed 1: +6 -> 6 (with seed 0's frontier it would be -4)
    learned = {0: [(30, 14), (70, 20)], 1: [(50, 16)]}
    m = F.paired_margin(ADAM, learned)
    assert m.per_seed == {0: pytest.approx(2), 1: pytest.approx(6)}
    assert m.mean == pytest.approx(4)
    assert m.spread == pytest.approx(statistics.stdev([2, 6]))
    assert (m.scored, m.excluded, m.degenerate) == (3, 0, 0)
    assert m.transfers  # 4 > 2.83


def test_paired_margin_verdict_needs_the_mean_above_the_spread() -> None:
    m = F.paired_margin(ADAM, {0: [(50, 30)], 1: [(50, 9)]})  # +10 and -1: mean 4.5, std 7.8
    assert m.mean == pytest.approx(4.5)
    assert not m.transfers
    single = F.paired_margin(ADAM, {0: [(50, 30)]})  # one seed: no spread, no verdict
    assert single.mean == pytest.approx(10) and single.spread is None and not single.transfers
    below = F.paired_margin(ADAM, {0: [(50, 15)], 1: [(50, 6)]})
    assert below.mean == pytest.approx(-4.5) and not below.transfers


def test_paired_margin_excludes_out_of_range_and_degenerate_points() -> None:
    learned = {0: [(95, 90), (12, 12), (50, 20)], 1: [(5, 50)]}
    m = F.paired_margin(ADAM, learned)
    # (95, 90): beyond Adam's best clean accuracy; (12, 12): a near-constant classifier; seed 1 has
    # nothing left, so it has no margin and does not enter the mean or the spread
    assert (m.scored, m.excluded, m.degenerate) == (1, 1, 2)
    assert m.per_seed == {0: pytest.approx(0), 1: None}
    assert m.mean == pytest.approx(0) and m.spread is None
    assert F.paired_margin(ADAM, {0: [(12, 12)]}, min_clean=10).per_seed == {0: pytest.approx(12 - 1)}
    with pytest.raises(ValueError, match="seed 2"):
        F.paired_margin(ADAM, {2: [(50, 10)]})


def test_runs_that_end_degenerate_are_not_scored_at_all() -> None:
    runs = {0: [(16, 16), (12, 12)], 1: [(20, 1), (60, 30)], 2: []}
    kept, dropped = F.drop_degenerate_runs(runs)
    assert kept == {0: [], 1: [(20, 1), (60, 30)], 2: []} and dropped == 2


def test_setting_margins_counts_a_degenerate_runs_points_as_degenerate() -> None:
    adam = [{"step": s, "clean": c, "pgd20": 0.0, "fgsm": 0.0, "seed": seed}
            for seed in (0, 1) for s, c in ((0, 0.1), (5, 0.9))]
    # seed 0 passes 0.16 on its way to a constant classifier: no score; seed 1 is scored
    learned = [{"step": s, "clean": c, "pgd20": c, "fgsm": c, "seed": seed}
               for seed, run in ((0, ((0, 0.1), (3, 0.16), (5, 0.1))), (1, ((0, 0.1), (5, 0.5))))
               for s, c in run]
    paired = F.setting_margins({"adam": adam, "rule": learned}, ["adam"], ["rule"])["pgd20"]["rule"]["paired"]
    assert paired["per_seed"] == {"0": None, "1": pytest.approx(50)}
    assert (paired["scored"], paired["degenerate"]) == (1, 2)


def test_pooled_margin_uses_one_envelope_of_all_seeds() -> None:
    adam = [p for ps in ADAM.values() for p in ps]
    mean, scored, excluded = F.pooled_margin(adam, [(50, 16), (30, 14), (99, 0), (12, 40)])
    assert mean == pytest.approx(((16 - 20) + (14 - 10)) / 2)
    assert (scored, excluded) == (2, 1)
    assert F.pooled_margin(adam, [(99, 0)]) == (None, 0, 1)


def test_setting_margins_reads_checkpoints_and_skips_the_shared_step_0() -> None:
    def ck(step: int, clean: float, pgd: float, seed: int) -> dict[str, float]:
        return {"step": step, "clean": clean, "pgd20": pgd, "fgsm": pgd + 0.05, "seed": seed}

    curves = {
        "adam-1e-3": [ck(0, 0.1, 0.0, 0), ck(5, 0.5, 0.2, 0), ck(0, 0.1, 0.0, 1), ck(5, 0.5, 0.1, 1)],
        "adam-1e-2": [ck(0, 0.1, 0.0, 0), ck(5, 0.9, 0.2, 0), ck(0, 0.1, 0.0, 1), ck(5, 0.9, 0.1, 1)],
        # step 0 far above the frontier would count +50 if it were scored
        "lstm": [ck(0, 0.3, 0.6, 0), ck(5, 0.5, 0.24, 0), ck(0, 0.3, 0.6, 1), ck(5, 0.5, 0.16, 1)],
    }
    out = F.setting_margins(curves, ["adam-1e-3", "adam-1e-2"], ["lstm"])
    paired = out["pgd20"]["lstm"]["paired"]
    assert paired["per_seed"] == {"0": pytest.approx(4), "1": pytest.approx(6)}
    assert paired["mean"] == pytest.approx(5) and paired["scored"] == 2
    assert out["fgsm"]["lstm"]["paired"]["mean"] == pytest.approx(5)
    assert out["pgd20"]["lstm"]["pooled"] == pytest.approx(((24 - 20) + (16 - 20)) / 2)
    mean = F.mean_curve(curves["lstm"])
    assert [m["step"] for m in mean] == [0, 5]
    assert mean[1]["pgd20"] == pytest.approx(20) and mean[1]["pgd20_std"] == pytest.approx(
        statistics.stdev([24, 16]))


# ----------------------------------------------------------------------------- data and training
def test_hold_out_moves_the_same_training_images_to_the_test_split_whatever_the_seed() -> None:
    data = synthetic((1, 8, 8), num_classes=3, train_size=100, test_size=20, seed=0)
    held = hold_out(data, 50)
    assert len(held.test_y) == 50 and len(held.train_y) == 70
    assert torch.equal(held.test_x[:20], data.test_x)  # the data set's own test images first
    train_rows = {tuple(x.flatten().tolist()) for x in held.train_x}
    assert not train_rows & {tuple(x.flatten().tolist()) for x in held.test_x[20:]}
    assert len(train_rows | {tuple(x.flatten().tolist()) for x in held.test_x[20:]}) == len(
        {tuple(x.flatten().tolist()) for x in data.train_x})
    assert torch.equal(hold_out(data, 50).test_x, held.test_x)  # fixed, not drawn per run
    small = hold_out(data, 5)
    assert torch.equal(small.test_x, data.test_x[:5]) and torch.equal(small.train_x, data.train_x)
    with pytest.raises(L2LError, match="--test-size 120 is out of range"):
        hold_out(data, 120)


def test_fit_calls_on_step_after_every_step_and_keeps_its_time_out_of_the_clock() -> None:
    data = synthetic((1, 8, 8), num_classes=3, train_size=50, test_size=10, seed=0)
    torch.manual_seed(0)
    model = MLP(64, 3, 4)
    seen: list[int] = []
    fit(model, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=16, seed=0,
        on_step=seen.append)
    assert seen == list(range(1, 9))  # 4 batches (16, 16, 16, 2) per epoch


def test_gap_closed_divides_by_the_strongest_reference_above_the_frontier() -> None:
    assert F.gap_closed(2.0, [4.0, 8.0, None]) == pytest.approx(0.25)
    assert F.gap_closed(-2.0, [4.0]) == pytest.approx(-0.5)
    assert F.gap_closed(2.0, [-1.0, 0.0]) is None  # adversarial training no more robust: no gap
    assert F.gap_closed(None, [4.0]) is None
    assert F.gap_closed(2.0, [None]) is None


def test_pgd_training_ramps_eps_up_over_the_warmup_steps() -> None:
    data = synthetic((1, 8, 8), num_classes=3, train_size=50, test_size=10, seed=0)
    torch.manual_seed(0)
    model = MLP(64, 3, 4)
    method = PGDTrainingWithWarmup(0.1, warmup_steps=4, pgd_steps=2)
    seen: list[float] = []
    x, y = to_float(data.train_x[:8]), data.train_y[:8]
    for _ in range(6):
        seen.append(float((method.adversarial(model, x, y) - x).abs().max()))
        method.after_step(model, x, y)
    assert seen[0] == 0  # step 0: clean batch
    assert seen[1] == pytest.approx(0.025, abs=1e-6) and seen[3] == pytest.approx(0.075, abs=1e-6)
    assert seen[4] == pytest.approx(0.1, abs=1e-6) and seen[5] == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(L2LError, match="warm-up must be >= 0"):
        PGDTrainingWithWarmup(0.1, warmup_steps=-1)


def test_the_zoom_window_follows_the_trained_models_points():
    curves = {"adam": [{"clean": 0.1, "pgd20": 0.0}, {"clean": 0.9, "pgd20": 0.47}],
              "mlp": [{"clean": 0.85, "pgd20": 0.38}], "pgd-at": [{"clean": 0.95, "pgd20": 0.88}]}
    # the untrained point (clean 10%) and adversarial training are left out of the window
    assert F.zoom_window(curves, ["adam", "mlp"]) == (35.0, 50.0)
    assert F.zoom_window({"adam": [{"clean": 0.2, "pgd20": 0.1}]}, ["adam"]) == (0.0, 25.0)
