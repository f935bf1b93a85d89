"""The transfer benchmark's arithmetic (l2l_gail.meta.report) on hand-made numbers."""

from __future__ import annotations

import pytest

from l2l_gail.meta.report import gap_closed, markdown_table, setting_entry


def test_gap_closed_arithmetic() -> None:
    assert gap_closed(0.10, 0.25, 0.60) == pytest.approx(0.3)
    assert gap_closed(0.10, 0.60, 0.60) == pytest.approx(1.0)
    assert gap_closed(0.10, 0.10, 0.60) == pytest.approx(0.0)
    assert gap_closed(0.20, 0.10, 0.60) == pytest.approx(-0.25)  # worse than clean Adam
    assert gap_closed(0.30, 0.40, 0.30) is None  # no gap to close
    assert gap_closed(0.30, 0.40, 0.20) is None


def test_setting_entry_uses_seed_means() -> None:
    def run(clean: float, pgd: float, seconds: float) -> dict[str, float]:
        return {"clean_acc": clean, "pgd20_acc": pgd, "autoattack_acc": pgd - 0.01, "train_seconds": seconds}

    ways = {
        "adam_clean": [run(0.98, 0.10, 1.0), run(0.96, 0.20, 3.0)],   # PGD-20 mean 0.15
        "learned_clean": [run(0.95, 0.30, 4.0), run(0.93, 0.40, 4.0)],  # mean 0.35
        "pgd_at": [run(0.90, 0.50, 10.0), run(0.90, 0.70, 12.0)],       # mean 0.60
    }
    entry = setting_entry({"name": "a", "dataset": "mnist-5k", "model": "mlp", "train_size": 4500,
                           "eps": 0.1}, ways)
    assert entry["adam_clean"]["pgd20_acc"] == pytest.approx(0.15)
    assert entry["adam_clean"]["pgd20_acc_per_seed"] == [0.10, 0.20]
    assert entry["pgd_at"]["pgd20_acc_std"] == pytest.approx(0.1414, abs=1e-4)
    assert entry["gap_closed"] == pytest.approx((0.35 - 0.15) / (0.60 - 0.15))
    assert entry["learned_time_ratio"] == pytest.approx(4.0 / 2.0)
    table = markdown_table([entry])
    assert "| a | mnist-5k (4500) | mlp | 0.1 | learned_clean | 94.0 ± 1.4 | 35.0 ± 7.1 |" in table
    assert f"| {entry['gap_closed']:.2f} |" in table


def test_a_constant_classifier_is_flagged_degenerate() -> None:
    def run(clean: float, pgd: float) -> dict[str, float]:
        return {"clean_acc": clean, "pgd20_acc": pgd, "autoattack_acc": pgd, "train_seconds": 1.0}

    ways = {"adam_clean": [run(0.8, 0.0)], "learned_clean": [run(0.1, 0.1)], "pgd_at": [run(0.6, 0.2)]}
    entry = setting_entry({"name": "a", "dataset": "d", "model": "m", "train_size": 1, "eps": 0.3}, ways)
    assert entry["gap_closed"] == pytest.approx(0.5) and entry["degenerate"]
    assert "degenerate" in markdown_table([entry])
    ways["learned_clean"] = [run(0.7, 0.1)]
    assert not setting_entry({"name": "a", "dataset": "d", "model": "m", "train_size": 1, "eps": 0.3},
                             ways)["degenerate"]
