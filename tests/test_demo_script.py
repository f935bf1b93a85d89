"""scripts/demo.py: its printed conclusion follows the numbers of the comparison."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def method(finals: list[float], ci: tuple[float, float], logit_gen: float, reward: float) -> dict[str, Any]:
    """The part of one method's entry in `l2l gail compare`'s JSON that the conclusion reads."""
    return {"iqm": sum(finals) / len(finals), "ci": list(ci), "n_runs": len(finals), "finals": finals,
            "discriminator_median": {"logit_gen": logit_gen, "reward_mean": reward}}


def summary(gail: dict[str, Any], l2l: dict[str, Any]) -> dict[str, Any]:
    return {"budget_steps": 698_368, "tasks": {"halfcheetah": {"gail": gail, "l2l-gail": l2l}}}


def test_a_clear_winner_is_named_with_its_margin(demo: ModuleType, tmp_path: Path) -> None:
    bench = tmp_path / "halfcheetah.md"
    bench.write_text("")
    lines = demo.conclusion(summary(method([0.5, 0.6, 0.55], (0.5, 0.6), -5.3, 0.1),
                                    method([0.2, 0.3, 0.25], (0.2, 0.3), -12.0, 0.035)), 1_000_000, bench)
    assert lines[0].startswith("gail ends higher: final normalised return 0.55 for gail against 0.25 for "
                               "l2l-gail, a difference of 0.30 (IQM over 3 seeds each;")
    assert lines[1] == ("Every gail seed ends above every l2l-gail seed (0.50, 0.55, 0.60 vs 0.20, 0.25, "
                        "0.30) and the 95% bootstrap intervals [0.50, 0.60] and [0.20, 0.30] do not overlap.")
    assert "is more sure that generator samples are fake than Adam's (mean logit -12.0 vs -5.3) and " \
           "pays the generator less reward than Adam's (0.035 vs 0.100)" in lines[2]
    assert lines[3] == (f"A ten-minute demo is not a benchmark: 698,368 of the task file's 1,000,000 steps "
                        f"and 3 seeds each; the benchmark is in {bench}.")


def test_overlapping_seeds_are_called_unseparated(demo: ModuleType, tmp_path: Path) -> None:
    lines = demo.conclusion(summary(method([0.3, 0.5], (0.3, 0.5), -5.0, 0.1),
                                    method([0.4, 0.6, 0.5], (0.4, 0.6), -5.0, 0.1)),
                            1_000_000, tmp_path / "absent.md")
    assert lines[0].startswith("l2l-gail ends higher: final normalised return 0.50 for l2l-gail against "
                               "0.40 for gail, a difference of 0.10 (IQM over 3 and 2 seeds;")
    assert lines[1].startswith("The seeds do not separate (l2l-gail: 0.40, 0.50, 0.60; gail: 0.30, 0.50;")
    assert "is about as sure that generator samples are fake as Adam's" in lines[2]
    assert "pays the generator about as much reward as Adam's (0.100 vs 0.100)" in lines[2]
    assert lines[3].endswith("3 and 2 seeds.")  # no benchmark file: no pointer to it


def test_equal_finals_end_level(demo: ModuleType, tmp_path: Path) -> None:
    same = method([1.0, 1.0], (1.0, 1.0), -1.0, 0.5)
    lines = demo.conclusion(summary(same, same), 200_000, tmp_path / "absent.md")
    assert lines[0].startswith("gail and l2l-gail end level: final normalised return 1.00 for gail")
    assert lines[1].startswith("The seeds do not separate")


def test_one_seed_claims_no_separation(demo: ModuleType, tmp_path: Path) -> None:
    lines = demo.conclusion(summary(method([0.5], (0.5, 0.5), -5.0, 0.1),
                                    method([0.2], (0.2, 0.2), -9.0, 0.02)), 1_000_000, tmp_path / "absent.md")
    assert "(IQM over 1 seed each;" in lines[0]
    assert lines[1].startswith("With a single seed of a method the spread over seeds is unknown")
