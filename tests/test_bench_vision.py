"""scripts/bench_vision.py: its cells run as sweep jobs (one process each) and a re-run skips them."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from l2l_gail.errors import L2LError
from l2l_gail.vision.frontier import choose_options, option_points

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


def test_the_options_choice_follows_the_plans_rule():
    base, tmg, oinit, both = option_points(0.041)
    peak = {p: (0.70, 0.70, 0.70) for p in (base, tmg, oinit, both)}
    last = {base: (0.60, 0.61, 0.62), tmg: (0.64, 0.65, 0.66), oinit: (0.60, 0.60, 0.60),
            both: (0.648, 0.65, 0.66)}
    choice = choose_options(last, peak)
    assert choice["point"] == tmg and choice["l2l_options"] == ["tmg"]  # both within the tie: fewer details
    assert choice["select"] == "best" and choice["peak_minus_last"] == pytest.approx(0.05)
    last[both] = (0.66, 0.66, 0.66)  # now beyond the tie
    assert choose_options(last, peak)["l2l_options"] == ["tmg", "oinit"]
    near = {p: tuple(v - 0.005 for v in peak[p]) for p in peak}
    assert choose_options(near, peak)["select"] == "last" and choose_options(near, peak)["point"] == base
    with pytest.raises(L2LError, match="no finished point"):
        choose_options({}, {})


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
    assert len(base["val_last"]) == 1 and base["val_peak"][0] >= base["val_last"][0]
    assert "choice" not in result  # two of the study's four points: the rule does not decide
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
    whole = args[: args.index("--points")] + args[args.index("--points") + 2:]  # all four points
    assert bench.main(whole) == 0
    choice = json.loads((tmp_path / "opts.json").read_text())["choice"]
    assert choice["point"] in option_points(0.02) and choice["select"] in ("last", "best")
    assert "Choice by the rule" in (tmp_path / "opts.md").read_text()


def test_frontier_assembles_finished_runs_into_the_issues_json_shape(tmp_path):
    import argparse

    args = argparse.Namespace(runs_dir=tmp_path, select="last", l2l_options="", dataset="fashion-mnist",
                              eps=0.1, train_size=20000, epochs=15, width=8, val_size=1000, eval_n=500,
                              aa_n=200, first_seeds=[0, 1])
    robust = {"pgd-1": (0.60, 0.62), "pgd-10": (0.70, 0.70), "l2l-grad-w0.041": (0.50, 0.54)}
    cost = {"pgd-1": 10.0, "pgd-10": 40.0, "l2l-grad-w0.041": 20.0}
    for point, accs in robust.items():
        for seed, acc in enumerate(accs):
            run = tmp_path / point / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "eval-last.json").write_text(json.dumps({"clean_acc": 0.8, "worst_case_acc": acc}))
            (run / "metrics.json").write_text(json.dumps({"history": [{"epoch_seconds": 360.0}] * 2,
                                                          "best_epoch": 1}))
    aa = tmp_path / "pgd-10" / "seed0" / "aa-last.json"
    aa.write_text(json.dumps({"worst_case_all_acc": 0.68, "worst_case_without_autoattack_acc": 0.71}))
    timing = tmp_path / "_timing" / "default"
    timing.mkdir(parents=True)
    (timing / "timing.json").write_text(json.dumps({
        "seconds_per_step_median": {p: c / 40 for p, c in cost.items()}, "gflops_per_step": cost,
        "batch_size": 128, "rounds": 7, "steps_per_round": 5, "torch_threads": 1}))
    result = bench.assemble(list(robust), [0, 1, 2], args)
    assert result["front"] == ["pgd-1", "pgd-10"]
    rows = {r["method"]: r for r in result["points"]}
    assert rows["pgd-10"]["autoattack_full"] == [0.68]
    assert rows["pgd-10"]["robust_on_autoattack_subset"] == [0.71]
    l2l = rows["l2l-grad-w0.041"]
    assert (l2l["attacker_width"], l2l["att_iter"], rows["pgd-1"]["att_iter"]) == (0.041, 1, None)
    assert l2l["flops_ratio_vs_pgd10"] == 0.5 and l2l["seeds"] == 2 and l2l["train_hours"] == [0.2, 0.2]
    # the front at 20 GFLOPs: 0.61 + (10 / 30) x 0.09 = 0.64; the l2l point's mean 0.52 is 0.12 below
    assert result["versus_front"]["l2l-grad-w0.041"]["margin"] == pytest.approx(-0.12)
    assert result["l2l_on_or_above_front"] is False
    keys = {"dataset", "eps", "train_size", "epochs", "points", "front", "l2l_on_or_above_front"}
    assert keys <= set(result)
    md = bench.frontier_markdown(result)
    assert "| l2l-grad-w0.041 | 20.0 | 0.50x | 0.50x |" in md and "68.0 (71.0)" in md
    bench.plot_frontier(result, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    args.first_seeds = [0, 1, 2]  # a PGD-k point short of seeds: no front yet
    assert bench.assemble(list(robust), [0, 1, 2], args)["front"] == []
