"""scripts/bench_vision.py: its cells run as sweep jobs (one process each) and a re-run skips them."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from l2l_gail.errors import L2LError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_vision.py"
spec = importlib.util.spec_from_file_location("bench_vision", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_tiny_benchmark_runs_its_cells_as_jobs_then_skips_them(tmp_path, capsys):
    args = ["--dataset", "synthetic", "--methods", "standard", "--seeds", "0", "--train-size", "64",
            "--epochs", "1", "--width", "2", "--eval-n", "16", "--aa-n", "4", "--aa-version", "fast",
            "--restarts", "1", "--jobs", "1", "--runs-dir", str(tmp_path / "runs"),
            "--output", str(tmp_path / "out.json")]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert list(result["methods"]) == ["standard"] and result["dataset"] == "synthetic"
    run = tmp_path / "runs" / "standard" / "seed0"
    assert (run / "bench_eval.json").is_file() and (run / "metrics.json").is_file()
    log = (tmp_path / "runs" / "standard" / "seed0.log").read_text()
    assert "--run-cell standard:0" in log and f"--attacker-width {result['attacker_width']!r}" in log
    capsys.readouterr()
    assert bench.main(args) == 0
    assert "standard/seed0: finished, skipped" in capsys.readouterr().out


def test_frontier_point_names_rebuild_their_configurations():
    from l2l_gail.vision import frontier as F

    names = F.frontier_points()
    assert names[:6] == ["pgd-1", "pgd-2", "pgd-3", "pgd-5", "pgd-10", "trades"] and len(names) == 14
    assert F.point_config("pgd-1") == {"method": "fgsm-rs"}  # FGSM with a random start
    assert F.point_config("pgd-5") == {"method": "pgd", "pgd_steps": 5}
    assert F.point_config("l2l-2step-w0.25") == {"method": "l2l-2step", "attacker_width": 0.25}
    assert F.point_config("l2l-grad-w0.041-it4+tmg+oinit") == {
        "method": "l2l-grad", "attacker_width": 0.041, "att_iter": 4, "train_mode_grad": True,
        "attacker_init": "official"}
    assert all(n.endswith("+tmg") for n in F.frontier_points(["tmg"]) if F.is_l2l(n))
    for bad in ("pgd-0", "pgd-3+tmg", "l2l-grad-w0.1+xyz", "fgsm"):
        with pytest.raises(L2LError):
            F.point_config(bad)


def test_pareto_front_interpolation_and_verdict_on_fixed_points():
    from l2l_gail.vision.frontier import Measured, front_at, frontier_summary, pareto_front

    pts = {"pgd-1": Measured(1.0, (0.60,)), "pgd-2": Measured(2.0, (0.58,)), "pgd-3": Measured(3.0, (0.65,)),
           "pgd-5": Measured(5.0, (0.65,)), "pgd-10": Measured(10.0, (0.70,))}
    assert pareto_front(pts) == ["pgd-1", "pgd-3", "pgd-10"]  # pgd-2 and pgd-5 are dominated
    line = [pts[n] for n in ("pgd-1", "pgd-3", "pgd-10")]
    assert front_at(line, 2.0) == pytest.approx((0.625, 0.0))
    assert front_at(line, 6.5) == pytest.approx((0.675, 0.0))
    assert front_at(line, 0.5)[0] == 0.60 and front_at(line, 12.0)[0] == 0.70
    seeded = [Measured(1.0, (0.5, 0.7)), Measured(3.0, (0.6, 0.6))]
    assert front_at(seeded, 2.0) == pytest.approx((0.6, statistics.stdev((0.5, 0.7)) / 2))
    pts |= {"l2l-grad-w0.041": Measured(6.5, (0.66, 0.68, 0.70)),   # +0.005, inside its noise: on
            "l2l-2step-w0.25": Measured(8.0, (0.60, 0.61, 0.62)),   # far below
            "trades": Measured(12.0, (0.73, 0.73))}                  # above, but not an L2L point
    s = frontier_summary(pts)
    assert s["front"] == ["pgd-1", "pgd-3", "pgd-10"] and set(s["versus_front"]).isdisjoint(s["front"])
    on = s["versus_front"]["l2l-grad-w0.041"]
    assert on["margin"] == pytest.approx(0.005) and on["margin_std"] == pytest.approx(0.02)
    assert on["on_or_above"] and not on["above"]
    assert not s["versus_front"]["l2l-2step-w0.25"]["on_or_above"]
    assert s["versus_front"]["trades"]["above"] and s["versus_front"]["pgd-2"]["margin"] < 0
    assert s["l2l_on_or_above_front"] and not s["l2l_above_front"] and s["best_l2l"] == "l2l-grad-w0.041"
    pts["l2l-grad-w0.041"] = Measured(6.5, (0.60, 0.61))
    assert not frontier_summary(pts)["l2l_on_or_above_front"]


def test_tiny_options_study_runs_as_jobs_evaluates_last_and_best_then_skips(tmp_path, capsys):
    args = ["--options-study", "--dataset", "synthetic", "--seeds", "0", "--train-size", "64",
            "--val-size", "32",
            "--epochs", "2", "--width", "2", "--eval-n", "4", "--curve-n", "8", "--study-width", "0.02",
            "--points", "l2l-grad-w0.02,l2l-grad-w0.02+tmg",
            "--jobs", "1", "--runs-dir", str(tmp_path / "runs"), "--output", str(tmp_path / "opts.json")]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "opts.json").read_text())
    assert list(result["points"]) == ["l2l-grad-w0.02", "l2l-grad-w0.02+tmg"]
    base = result["points"]["l2l-grad-w0.02"]
    assert base["effect_vs_none"] == 0 and len(base["robust_best"]) == 1 and base["best_epoch"][0] in (0, 1)
    run = tmp_path / "runs" / "l2l-grad-w0.02+tmg" / "seed0"
    ev = json.loads((run / "eval-best.json").read_text())
    assert ev["n"] == 4 and set(ev["correct"]) == {"clean", "pgd50x5", "apgd"}
    assert ev["worst_case_acc"] <= min(ev["pgd50x5_acc"], ev["apgd_acc"])
    config = (run / "config.yaml").read_text()
    assert "train_mode_grad: true" in config and "val_size: 32" in config
    assert "| tmg |" in (tmp_path / "opts.md").read_text()
    capsys.readouterr()
    assert bench.main(args) == 0
    assert "l2l-grad-w0.02+tmg/seed0: finished, skipped" in capsys.readouterr().out
