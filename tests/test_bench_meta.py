"""scripts/bench_meta.py: meta-training runs, then cells, as sweep jobs; results gathered; a re-run skips."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from l2l_gail.errors import L2LError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_meta.py"
spec = importlib.util.spec_from_file_location("bench_meta", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_quick_setting_runs_as_jobs_and_is_gathered_then_skipped(tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["--quick", "--only", "variant-cleangrad", "--eval-subset", "20", "--out", str(out),
            "--runs-dir", str(runs), "--jobs", "1", "--no-progress"]
    assert bench.main(args) == 0
    assert (out / "optimizers" / "mnist-mlp-fgsm-eps0.1-cleangrad.pt").is_file()
    cells = json.loads((out / "cells.json").read_text())
    assert sorted(k.split("|")[6] for k in cells) == ["adam_clean", "learned_clean", "pgd_at"]
    [entry] = json.loads((out / "transfer.json").read_text())["settings"]
    assert entry["name"] == "variant-cleangrad"
    assert all((runs / "cells" / k.replace("|", "_") / "cell.json").is_file() for k in cells)
    capsys.readouterr()
    assert bench.main(args) == 0  # everything is found done: no job runs
    assert "done in" not in capsys.readouterr().out
    assert json.loads((out / "cells.json").read_text()) == cells


def test_frontier_plan_names_the_arms_and_refuses_bad_input(tmp_path):
    args = bench.parse_args(["--frontier", "--adam-lrs", "3e-4,0.001", "--pgd-at-lrs", "1e-2"])
    settings, adam, rules, refs, seeds = bench.frontier_plan(args)
    assert (settings, adam) == (["a", "d", "c", "b"], ["adam-3e-4", "adam-1e-3"])
    assert rules[:4] == ["lstm", "mlp", "lstm-sym", "mlp-sym"]
    [(_, sym)] = bench.meta_grid("lstm-sym", args).commands(tmp_path)
    assert sym[-3:] == ["--rule", "lstm", "--sign-symmetric"] and "--test-size" in sym
    [(name, meta1)] = bench.meta_grid("mlp-meta1", args).commands(tmp_path)
    assert name == "bench-frontier/mlp-meta1/seed1" and meta1[meta1.index("--seed") + 1] == "1"
    assert (refs, seeds) == (["pgd-at-1e-2"], [0, 1, 2, 3, 4])
    for bad, match in ((["--frontier-settings", "a,x"], "unknown frontier setting x"),
                       (["--rules", "gru"], "unknown frontier rule gru"),
                       (["--adam-lrs", "1e-3,fast"], "--adam-lrs must be"),
                       (["--pgd-at-lrs", "0"], "--pgd-at-lrs needs"),
                       (["--checkpoints", "1"], "--checkpoints must be >= 2")):
        with pytest.raises(L2LError, match=match):
            bench.frontier_plan(bench.parse_args(["--frontier", *bad]))
    assert bench.checkpoint_steps(8, 4) == [0, 3, 5, 8]
    assert bench.checkpoint_steps(2, 5) == [0, 1, 2]


def test_a_frontier_curve_is_evaluated_from_step_0_to_the_end(tmp_path):
    args = bench.parse_args(["--frontier", "--quick", "--test-size", "50", "--out", str(tmp_path / "out"),
                             "--runs-dir", str(tmp_path / "runs"), "--run-curve", "d:pgd-at-1e-2:3"])
    bench.run_curve(args.run_curve, args)
    done = json.loads((bench.curve_job("d", "pgd-at-1e-2", 3, args).run_dir / "curve.json").read_text())
    assert [c["step"] for c in done["curve"]] == [0, 3, 5, 8]  # 1,000 images at batch 128: 8 steps
    assert {c["seed"] for c in done["curve"]} == {3}
    assert all(0 <= c[k] <= 1 for c in done["curve"] for k in ("clean", "pgd20", "fgsm"))
    assert (done["train_size"], done["test_size"], done["optimizee"]) == (1000, 50, "mlp")


def test_setting_b_trains_the_small_cnn(tmp_path):
    args = bench.parse_args(["--frontier", "--quick", "--test-size", "20",
                             "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")])
    bench.run_curve("b:adam-1e-3:0", args)
    job = bench.curve_job("b", "adam-1e-3", 0, args)
    done = json.loads((job.run_dir / "curve.json").read_text())
    assert done["optimizee"] == "small-cnn" and "|small-cnn|" in bench.curve_key("b", "adam-1e-3", 0, args)
    steps = [c["step"] for c in done["curve"]]
    assert steps[0] == 0 and len(steps) == 4  # --quick: 4 checkpoints
