"""scripts/bench_gail.py: variant parsing, and a tiny resumable run with a labelled variant."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from l2l_gail.errors import L2LError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gail.py"
spec = importlib.util.spec_from_file_location("bench_gail", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_parse_variant_types_and_errors():
    label, fields = bench.parse_variant("l2l-max1:method=l2l-gail,l2l_max_step=1,l2l-meta-every=2")
    assert label == "l2l-max1"
    assert fields == {"method": "l2l-gail", "l2l_max_step": 1.0, "l2l_meta_every": 2}
    assert isinstance(fields["l2l_meta_every"], int)
    for bad in ("nolabel", ":method=gail", "x:method=gail,nosuchfield=1", "x:method=gail,l2l_meta_lr=abc",
                "x:l2l_max_step=1"):
        with pytest.raises(L2LError):
            bench.parse_variant(bad)


def test_tiny_benchmark_with_variant_then_rerun_skips(tmp_path, capsys):
    args = ["--tasks", "inverted-pendulum", "--methods", "gail", "--seeds", "0", "--timesteps", "1024",
            "--eval-every", "1024", "--variant", "l2l-max1:method=l2l-gail,l2l_max_step=1",
            "--runs-dir", str(tmp_path / "runs"), "--output-dir", str(tmp_path / "out"), "--no-progress",
            "--jobs", "1", "--no-controls"]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "out" / "inverted-pendulum.json").read_text())
    assert set(result["tasks"]["inverted-pendulum"]) == {"gail", "l2l-max1"}
    run = tmp_path / "runs" / "gail" / "bench-inverted-pendulum" / "l2l-max1" / "seed0"
    assert (run / "metrics.json").is_file()
    assert bench.main(args) == 2  # results exist: refused without --force
    assert bench.main([*args, "--force"]) == 0
    assert "finished, skipped" in capsys.readouterr().out
    with pytest.raises(L2LError, match="--label"):
        bench.prepare(bench.GAILConfig(task="inverted-pendulum", method="gail", label="bad/label"))


def test_throughput_round_robin_writes_medians_and_ratios(tmp_path, capsys):
    args = ["--tasks", "inverted-pendulum", "--methods", "gail,l2l-gail", "--throughput", "--repeats", "2",
            "--rounds", "1", "--output-dir", str(tmp_path), "--no-progress"]  # with the two controls
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "inverted-pendulum-throughput.json").read_text())
    assert set(result["median"]) == {"gail", "l2l-gail", "l2l-frozen", "adam-matched"}
    assert all(len(r) == 2 and min(r) > 0 for r in result["env_steps_per_second"].values())
    assert result["ratio_to_gail"]["gail"] == 1.0
    assert "| l2l-gail |" in (tmp_path / "inverted-pendulum-throughput.md").read_text()
    assert not (tmp_path / "inverted-pendulum.json").exists()  # no training runs, no comparison
    assert bench.main(args) == 2  # refused without --force
    assert "exists" in capsys.readouterr().err


def test_nothing_to_run_is_an_error(capsys):
    assert bench.main(["--tasks", "inverted-pendulum", "--methods", "", "--no-controls"]) == 2
    assert "nothing to run" in capsys.readouterr().err


def test_tuning_record_chooses_best_mean_iqm_and_default_wins_ties():
    grid = {t: {"a": {"disc_lr": 1e-4}, "b": {"disc_lr": 3e-4}, "c": {"disc_lr": 1e-3}} for t in ("x", "y")}
    finals = {"x": {"a": [0.2, 0.4], "b": [0.5, 0.5], "c": [0.9, 0.1]},
              "y": {"a": [0.9, 0.9], "b": [0.6, 0.6], "c": [0.5, 0.5]}}
    record = bench.tuning_record(finals, grid, default="b", seeds=[0, 1], timesteps=100)["tuning"]["gail"]
    assert record["mean_iqm"] == pytest.approx({"a": 0.6, "b": 0.55, "c": 0.5})
    assert record["chosen"] == {"label": "a", "x": {"disc_lr": 1e-4}, "y": {"disc_lr": 1e-4}}
    assert "3 configurations" in record["budget"] and "12 runs" in record["budget"]
    tied = {"x": {"a": [0.5], "b": [0.5], "c": [0.1]}, "y": {"a": [0.5], "b": [0.5], "c": [0.1]}}
    assert bench.tuning_record(tied, grid, default="b", seeds=[0], timesteps=1)["tuning"]["gail"]["chosen"][
        "label"] == "b"
    table = bench.tuning_markdown({"tuning": {"gail": record}})
    assert "| a (chosen) | 0.300 (0.20, 0.40) | 0.900 (0.90, 0.90) | 0.600 |" in table


def test_tune_then_benchmark_output_carries_the_tuning_record(tmp_path, capsys):
    common = ["--tasks", "inverted-pendulum", "--seeds", "0", "--timesteps", "1024", "--eval-every", "1024",
              "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--jobs", "1",
              "--tuning-file", str(tmp_path / "tuning.json")]
    tune = [*common, "--tune", "--tune-lr-mults", "1", "--tune-update-mults", "1,2"]
    assert bench.main(tune) == 0
    record = json.loads((tmp_path / "tuning.json").read_text())["tuning"]["gail"]
    assert set(record["configurations"]) == {"lr1x-upd1x", "lr1x-upd2x"}
    base = record["configurations"]["lr1x-upd1x"]["inverted-pendulum"]["n_disc_updates_per_round"]
    assert record["configurations"]["lr1x-upd2x"]["inverted-pendulum"]["n_disc_updates_per_round"] == 2 * base
    run = tmp_path / "runs" / "gail" / "tune-inverted-pendulum" / "lr1x-upd2x" / "seed0"
    assert (run / "metrics.json").is_file()
    assert bench.main(tune) == 2  # the record exists: refused without --force
    assert bench.main([*common, "--methods", "gail", "--no-controls", "--output-dir", str(tmp_path / "out"),
                       "--benchmark-output", str(tmp_path / "benchmark.json")]) == 0
    summary = json.loads((tmp_path / "benchmark.json").read_text())
    assert summary["tuning"]["gail"]["chosen"]["label"] in record["configurations"]
    assert set(summary["aggregate"]) == {"gail"}
    assert "Tuning of the `gail` arm" in (tmp_path / "benchmark.md").read_text()
    capsys.readouterr()
