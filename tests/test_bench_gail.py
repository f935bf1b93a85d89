"""scripts/bench_gail.py: variant parsing, and a tiny resumable run with a labelled variant."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

from l2l_gail.errors import L2LError
from l2l_gail.gail.compare import CompareOutputs
from l2l_gail.sweep import Job, SweepResult
from l2l_gail.sweep.jobs import Outcome

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gail.py"
spec = importlib.util.spec_from_file_location("bench_gail", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_parse_variant_types_and_errors():
    label, fields = bench.parse_variant("l2l-max1:method=l2l-gail,l2l_max_step=1,l2l-meta-every=2")
    assert label == "l2l-max1"
    assert fields == {"method": "l2l-gail", "l2l_max_step": 1.0, "l2l_meta_every": 2}
    assert isinstance(fields["l2l_meta_every"], int)
    _, fields = bench.parse_variant("g:method=gail,gen_norm_disc_batches=false")
    assert fields["gen_norm_disc_batches"] is False
    assert bench.parse_variant("g:method=gail,obs_norm=true")[1]["obs_norm"] is True
    for bad in ("nolabel", ":method=gail", "x:method=gail,nosuchfield=1", "x:method=gail,l2l_meta_lr=abc",
                "x:l2l_max_step=1", "x:method=gail,obs_norm=yes"):
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
    assert "finished, configuration checked, skipped" in capsys.readouterr().out
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
    # the v2 study's budget comes from these gail runs; its later stages need the earlier files
    v2 = [*common, "--output-dir", str(tmp_path / "out"), "--v2"]
    assert bench.main([*v2, "budget"]) == 0
    budget = json.loads((tmp_path / "out" / "v2-budget.json").read_text())
    assert set(budget["runs"]) == {"inverted-pendulum/seed0"}
    assert budget["budget"] == budget["runs"]["inverted-pendulum/seed0"]  # the median of one run
    assert budget["budget"]["kl"] > 0 and budget["budget"]["logit"] > 0
    assert bench.main([*v2, "budget"]) == 2  # refused without --force
    assert bench.main([*v2, "select"]) == 2
    assert "v2-dev.json is missing: run `scripts/bench_gail.py --v2 dev` first" in capsys.readouterr().err
    capsys.readouterr()


def _dev_entry(iqm: float, failed: int = 0, collapsed: int = 0, std: float = 0.1) -> dict[str, float]:
    return {"iqm": iqm, "failed": failed, "collapsed": collapsed, "final_std": std}


def test_v2_selection_rule():
    """results/gail/v2-plan.md: stable candidates first, then the highest aggregate IQM, then
    within 0.02 the smaller spread; with none stable, the highest IQM and a flag."""
    budget = {"budget": {"kl": 0.01, "logit": 0.05}}

    def dev(entries: dict[str, tuple[dict[str, float], dict[str, float]]]) -> dict:
        tasks = {t: {c: e[i] for c, e in entries.items()} for i, t in enumerate(("hopper", "halfcheetah"))}
        return {"tasks": tasks, "aggregate": {c: {"iqm": (a["iqm"] + b["iqm"]) / 2}
                                              for c, (a, b) in entries.items()}}

    unstable_best = dev({"l2l-kl": (_dev_entry(0.9, failed=1), _dev_entry(0.9)),
                         "l2l-v2": (_dev_entry(0.7), _dev_entry(0.7))})
    chosen = bench.select_v2(unstable_best, ["l2l-kl", "l2l-v2"], budget)
    assert chosen["label"] == "l2l-v2" and chosen["stability_met"]
    assert chosen["options"] == {"method": "l2l-gail", "l2l_step_norm": "adam", "l2l_heldout": "next-round"}
    tie = dev({"l2l-kl": (_dev_entry(0.80, std=0.2), _dev_entry(0.80, std=0.2)),
               "l2l-logit": (_dev_entry(0.79, std=0.05), _dev_entry(0.79, std=0.05))})
    chosen = bench.select_v2(tie, ["l2l-kl", "l2l-logit"], budget)
    assert chosen["label"] == "l2l-logit" and "smallest spread" in chosen["reason"]
    assert chosen["options"]["l2l_budget"] == 0.05
    none_stable = dev({"l2l-kl": (_dev_entry(0.5, collapsed=1), _dev_entry(0.5)),
                       "l2l-logit": (_dev_entry(0.6, failed=2), _dev_entry(0.6))})
    chosen = bench.select_v2(none_stable, ["l2l-kl", "l2l-logit"], budget)
    assert chosen["label"] == "l2l-logit" and not chosen["stability_met"]
    assert chosen["options"]["l2l_budget"] == 0.05 and "not met" in chosen["reason"]
    # a candidate with a run that stopped with an error has no final: left out, even if its
    # finished runs compare best
    stopped = {**dev({"l2l-kl": (_dev_entry(0.5), _dev_entry(0.5))}),
               "stopped": {"l2l-dir-ttur": ["hopper/seed2: error: meta-training diverged"]}}
    stopped["tasks"]["hopper"]["l2l-dir-ttur"] = _dev_entry(0.99)
    chosen = bench.select_v2(stopped, ["l2l-kl", "l2l-dir-ttur"], budget)
    assert chosen["label"] == "l2l-kl"
    assert "left out, a run diverged: l2l-dir-ttur" in chosen["reason"]
    assert set(chosen["candidates"]) == {"l2l-kl"} and chosen["stopped"] == stopped["stopped"]
    with pytest.raises(L2LError, match="every candidate has a run whose training diverged"):
        bench.select_v2(stopped, ["l2l-dir-ttur"], budget)


def test_diverged_runs_are_named_with_their_error(tmp_path):
    """A run whose training diverged is reported by label, task and seed with its error; other
    outcomes, other failures among them, are not."""
    run = tmp_path / "gail" / "bench-hopper" / "l2l-dir-ttur" / "seed2"
    error = "error: the meta-gradient is not finite: meta-training diverged; lower the meta learning rate"
    jobs = [Job(str(k), (), run.with_name(f"seed{k}")) for k in range(3)]
    result = SweepResult({jobs[2]: Outcome("failed", error), jobs[0]: Outcome("done"),
                          jobs[1]: Outcome("failed", "error: cannot resume: the configuration differs")})
    stopped = bench.stopped_runs(result)
    assert stopped == {"l2l-dir-ttur": [f"hopper/seed2: {error}"]}
    assert not bench.diverged(result.outcomes[jobs[1]])
    assert "- `l2l-dir-ttur` hopper/seed2: error: the meta-gradient" in bench.stopped_markdown(stopped)
    # in the benchmark, beside the method's other runs in its task's comparison
    (tmp_path / "hopper.json").write_text('{"tasks": {}}')
    (tmp_path / "hopper.md").write_text("| method |\n")
    out = CompareOutputs(tmp_path / "hopper.json", tmp_path / "hopper.md", tmp_path / "a.png",
                         tmp_path / "b.png", {}, {})
    bench.add_stopped(out, {"gail": [], **stopped})
    assert json.loads(out.json.read_text()) == {"tasks": {}, "stopped": stopped}
    assert "diverged (no final; the table compares the method's other runs)" in out.markdown.read_text()


def test_heldout_targets_and_their_table():
    """Issue 13's targets from a held-out comparison: each number, and met or missed."""
    def entry(iqm: float, std: float, collapsed: int = 0) -> dict:
        return {"iqm": iqm, "final_std": std, "collapsed": collapsed, "failed": 0}

    summary = {"tasks": {"walker2d": {"gail": entry(0.5, 0.2), "gail-gp": entry(0.4, 0.1),
                                      "l2l-v2": entry(0.6, 0.1)},
                         "ant": {"gail": entry(0.7, 0.1), "gail-gp": entry(0.7, 0.1),
                                 "l2l-v2": entry(0.7, 0.09, collapsed=1)}},
               "aggregate": {"gail": {"iqm": 0.6}, "gail-gp": {"iqm": 0.55}, "l2l-v2": {"iqm": 0.65}},
               "prob_improvement": {"l2l-v2>gail": {"p": 0.62, "ci": [0.4, 0.8]}}}
    selected = {"label": "l2l-v2", "options": {"method": "l2l-gail", "l2l_step_norm": "adam"}}
    rates = {"walker2d": {"gail": [100.0, 110.0, 90.0], "l2l-v2": [80.0, 90.0, 85.0]},
             "ant": {"gail": [50.0], "l2l-v2": [49.0]}}
    assert bench.heldout_targets(summary, selected, "a" * 40, rates, stopped=2)["targets"]["failed"] == 2
    record = bench.heldout_targets(summary, selected, "a" * 40, rates)
    targets = record["targets"]
    assert record["selected"] == {"label": "l2l-v2", "config": selected["options"], "commit": "a" * 40}
    assert targets["aggregate_iqm_ge_gail"] and targets["aggregate_iqm_ge_gail_gp"]
    assert targets["std_ratio"] == pytest.approx({"walker2d": 0.5, "ant": 0.9})
    assert targets["throughput_ratio"] == pytest.approx(85 / 100)
    assert (targets["collapsed"], targets["failed"]) == (1, 0)
    assert targets["met"] == {"aggregate_iqm": True, "prob_improvement": True, "std_ratio": False,
                              "stability": False, "throughput": True}
    table = bench.targets_markdown(record)
    assert "| final std <= 0.7x gail's on each task | walker2d 0.50, ant 0.90 | **no** |" in table
    assert "| P(X > gail) >= 0.6 | 0.62 [0.40, 0.80] | yes |" in table


def test_transfer_jobs_start_from_the_other_tasks_phi(tmp_path):
    args = argparse.Namespace(runs_dir=tmp_path / "runs", timesteps=1_000_000, eval_every=None, threads=1)
    jobs = bench.transfer_jobs(args, ["hopper", "halfcheetah"], [0, 3])
    assert [j.name for j in jobs] == ["bench-hopper/l2l-transfer/seed0", "bench-hopper/l2l-transfer/seed3",
                                      "bench-halfcheetah/l2l-transfer/seed0",
                                      "bench-halfcheetah/l2l-transfer/seed3"]
    init = jobs[1].command[jobs[1].command.index("--l2l-init") + 1]
    phi = tmp_path / "runs/gail/bench-halfcheetah/l2l-gail/seed3/phi_discriminator.pt"
    assert init == str(phi.resolve())
    assert "bench-hopper" in jobs[2].command[jobs[2].command.index("--l2l-init") + 1]


def test_heldout_runs_need_a_committed_selection(tmp_path):
    path = tmp_path / "selected.json"
    path.write_text("{}")
    with pytest.raises(L2LError, match="is not committed"):
        bench.committed_in(path)
