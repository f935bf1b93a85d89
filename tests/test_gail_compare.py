"""`l2l gail compare`: the results JSON, table and plots of one or several experiments, and refusals.

The statistics themselves are tested against rliable and scipy in tests/test_gail_stats.py.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from l2l_gail.cli import main
from l2l_gail.errors import L2LError
from l2l_gail.gail import compare as compare_module
from l2l_gail.gail.compare import compare
from l2l_gail.runs import console_script


def fake_run(root: Path, method: str, seed: int, series: list[float], *, task: str = "hopper",
             speed: float = 1000.0, finished: bool = True) -> Path:
    """A run directory as `l2l gail train` leaves it (config.yaml and metrics.json only)."""
    from l2l_gail.gail.config import GAILConfig
    from l2l_gail.gail.tasks import load_task

    run = root / method / f"seed{seed}"
    run.mkdir(parents=True)
    config = GAILConfig(task=task, method=method, seed=seed).resolved(load_task(task)).to_dict()
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if finished:
        history = [{"step": 1000 * (i + 1), "return": v, "normalized_return": v}
                   for i, v in enumerate(series)]
        (run / "metrics.json").write_text(json.dumps({
            "task": task, "seed": seed, "timesteps": 1000 * len(series), "n_demos": 25,
            "env_steps_per_second": speed, "history": history, "finished": True}))
    return run


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    root = tmp_path / "runs" / "gail" / "bench"
    stable = [0.2, 0.5, 0.8, 0.9, 0.9]
    for seed in range(3):
        fake_run(root, "gail", seed, [0.2, 0.6, 0.9, 0.3, 0.2] if seed < 2 else stable, speed=1000 + seed)
        fake_run(root, "l2l-gail", seed, stable, speed=900)
    fake_run(root, "gail-gp", 0, stable)
    fake_run(root, "gail-gp", 1, [], finished=False)
    return root


def test_compare_writes_json_table_and_plots(experiment: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "results" / "hopper.json"
    assert main(["gail", "compare", str(experiment), "--output", str(output),
                 "--bootstrap-reps", "2000"]) == 0
    out = capsys.readouterr().out
    profile = output.with_name("hopper-profile.png")
    for path in (output, output.with_suffix(".md"), output.with_suffix(".png"), profile):
        assert path.is_file() and str(path) in out
    assert output.with_suffix(".png").read_bytes()[:4] == profile.read_bytes()[:4] == b"\x89PNG"
    assert "note: left out: gail-gp/seed1 (no checkpoint yet) is unfinished; resume with `" in out
    assert "gail train --task hopper --method gail-gp --seeds 1 --experiment bench --runs-dir " in out
    summary = json.loads(output.read_text())
    assert (summary["budget_steps"], summary["baseline"]) == (5000, "gail")
    assert summary["experiments"]["hopper"]["n_demos"] == 25
    assert summary["statistics"]["bootstrap_reps"] == 2000
    task = summary["tasks"]["hopper"]
    assert list(task) == ["gail", "gail-gp", "l2l-gail"]
    gail, l2l = task["gail"], task["l2l-gail"]
    assert gail["seeds"] == [0, 1, 2] and gail["finals"] == pytest.approx([0.2, 0.2, 0.9])
    assert gail["iqm"] == pytest.approx(np.mean([0.2, 0.2, 0.9]))  # 3 runs: no trimming
    assert gail["ci"] == pytest.approx([0.2, 0.9]) and gail["few_seeds"]  # 3 runs: [min, max]
    # Half the best median final (0.9) is 0.45: gail's first two seeds peaked at 0.6 (curve over
    # 3 evaluations) and ended at 0.2, so they collapsed; no run failed.
    assert summary["experiments"]["hopper"]["failure_threshold"] == pytest.approx(0.45)
    assert (gail["collapsed"], gail["failed"], l2l["collapsed"], l2l["failed"]) == (2, 0, 0, 0)
    assert gail["max_drawdown_median"] == pytest.approx((0.6 - 1.4 / 3) / 0.6)
    assert gail["runs"]["seed0"]["collapsed"] and not gail["runs"]["seed2"]["collapsed"]
    assert gail["steps_per_s"] == 1001.0 and "prob_improvement" not in gail
    assert l2l["iqm"] == pytest.approx(0.9) and l2l["final_std"] == 0.0
    assert l2l["prob_improvement"]["p"] == pytest.approx(7.5 / 9)  # 6 wins, 3 ties of 9 pairs
    assert l2l["mann_whitney"]["method"] == "asymptotic"  # finals tie
    assert l2l["mann_whitney"]["smallest_p"] == pytest.approx(0.1)
    assert task["gail-gp"]["n_runs"] == 1
    assert summary["aggregate"]["l2l-gail"]["iqm"] == pytest.approx(0.9)
    assert summary["prob_improvement"]["l2l-gail>gail"] == l2l["prob_improvement"]  # one task
    table = output.with_suffix(".md").read_text()
    assert ("| l2l-gail | 3† | 0.900 [0.900, 0.900] | 0: 0.900, 1: 0.900, 2: 0.900 | 0.83 [") in table
    assert ("| gail | 3† | 0.433 [0.200, 0.900] | 0: 0.200, 1: 0.200, 2: 0.900 | - | - | 0/3 | 2/3 "
            "| 22% |") in table
    assert "† fewer than 5 seeds" in table and "(3 vs 3: 0.100, 5 vs 5: 0.008)" in table
    assert "Aggregate over" not in table  # one task


def test_several_experiments_aggregate_over_tasks(experiment: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    walker = tmp_path / "runs" / "gail" / "bench-walker"
    for seed in range(5):
        fake_run(walker, "gail", seed, [0.1, 0.3, 0.4 + 0.01 * seed], task="walker2d")
        fake_run(walker, "l2l-gail", seed, [0.1, 0.3, 0.5 + 0.01 * seed], task="walker2d")
    fake_run(walker, "sign-sgd", 0, [0.1, 0.2, 0.3], task="walker2d")
    assert main(["gail", "compare", str(experiment), str(walker)]) == 2
    assert "2 experiments are compared together: pass --output" in capsys.readouterr().err
    output = tmp_path / "benchmark.json"
    assert main(["gail", "compare", str(experiment), str(walker), "--output", str(output),
                 "--bootstrap-reps", "1000"]) == 0
    summary = json.loads(output.read_text())
    assert list(summary["tasks"]) == ["hopper", "walker2d"]
    walker2d = summary["tasks"]["walker2d"]
    assert walker2d["l2l-gail"]["finals"] == pytest.approx([0.5, 0.51, 0.52, 0.53, 0.54])
    assert not walker2d["l2l-gail"]["few_seeds"]
    assert walker2d["l2l-gail"]["prob_improvement"]["p"] == 1.0  # every run above every gail run
    assert walker2d["l2l-gail"]["mann_whitney"] == {"p": pytest.approx(2 / 252), "method": "exact",
                                                    "smallest_p": pytest.approx(2 / 252)}
    # Only the methods that ran on both tasks are aggregated; P(X > Y) is the mean over tasks.
    assert list(summary["aggregate"]) == ["gail", "l2l-gail"]
    assert summary["aggregate"]["l2l-gail"]["n_runs"] == 8 and summary["aggregate"]["gail"]["n_tasks"] == 2
    assert summary["prob_improvement"]["l2l-gail>gail"]["p"] == pytest.approx((7.5 / 9 + 1.0) / 2)
    assert set(summary) >= {"budget_steps", "tasks", "aggregate", "prob_improvement"}
    for entry in walker2d.values():
        assert {"finals", "iqm", "ci", "failed", "collapsed", "steps_per_s"} <= set(entry)
    table = output.with_suffix(".md").read_text()
    assert "| l2l-gail | 5 | 0.520 [" in table and "| sign-sgd | 1† |" in table
    assert "Aggregate over the tasks hopper, walker2d" in table
    # the summary row: each task's IQM, the aggregate's, P(X > gail), failed / collapsed summed
    hopper = summary["tasks"]["hopper"]["l2l-gail"]
    iqms = [hopper, walker2d["l2l-gail"], summary["aggregate"]["l2l-gail"]]
    poi = summary["prob_improvement"]["l2l-gail>gail"]
    row = " | ".join([*(f"{c['iqm']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]" for c in iqms),
                      f"{poi['p']:.2f} [{poi['ci'][0]:.2f}, {poi['ci'][1]:.2f}]"])
    failed = hopper["failed"] + walker2d["l2l-gail"]["failed"]
    assert f"| l2l-gail | 8 | {row} | {failed} / " in table
    assert output.with_name("benchmark-profile.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["gail", "compare", str(experiment), str(experiment),
                 "--output", str(tmp_path / "t.json")]) == 2
    assert "several experiments of task hopper" in capsys.readouterr().err


def test_a_baseline_without_runs_is_refused(experiment: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["gail", "compare", str(experiment), "--output", str(tmp_path / "r.json"),
            "--bootstrap-reps", "100"]
    assert main([*args, "--methods", "l2l-gail"]) == 2
    assert capsys.readouterr().err == ("error: the baseline gail has no finished runs to compare with: pass "
                                       "--baseline with one of l2l-gail\n")
    assert main([*args, "--methods", "l2l-gail,gail-gp", "--baseline", "gail-gp"]) == 0
    summary = json.loads((tmp_path / "r.json").read_text())
    assert "prob_improvement" in summary["tasks"]["hopper"]["l2l-gail"]
    assert list(summary["prob_improvement"]) == ["l2l-gail>gail-gp"]
    assert main([*args, "--force", "--bootstrap-reps", "0"]) == 2
    assert "--bootstrap-reps must be at least 1" in capsys.readouterr().err


def test_compare_refuses_to_overwrite(experiment: Path, tmp_path: Path) -> None:
    output = tmp_path / "r.json"
    compare(experiment, output)
    output.with_suffix(".md").write_text("keep me")
    with pytest.raises(L2LError, match="exists: pass --force"):
        compare(experiment, output)
    assert output.with_suffix(".md").read_text() == "keep me"
    compare(experiment, output, force=True)
    assert output.with_suffix(".md").read_text().startswith("Task `hopper` (")


def test_compare_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gail", "compare", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["gail", "compare", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
    fake_run(tmp_path, "gail", 0, [0.5], task="hopper")
    fake_run(tmp_path, "gail", 1, [0.5], task="walker2d")
    assert main(["gail", "compare", str(tmp_path), "--output", str(tmp_path / "x.json")]) == 2
    assert "mixes tasks" in capsys.readouterr().err
    assert main(["gail", "compare", str(tmp_path), "--output", str(tmp_path / "x.txt")]) == 2
    assert "must end in .json" in capsys.readouterr().err


def test_diagnostics_of_both_players_average_the_last_fifth_of_rounds(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path / "bench"
    for seed, offset in ((0, 0.0), (1, 1.0), (2, 2.0)):
        run = fake_run(root, "l2l-gail", seed, [0.5, 0.6])
        writer = SummaryWriter(str(run / "tb"))
        for step in range(10):  # last 20% of 10 rounds: steps 8 and 9
            writer.add_scalar("disc/logit_gen", -float(step) - offset, step)
            writer.add_scalar("disc/disc_acc_gen", 0.5 if step < 8 else 1.0, step)
            writer.add_scalar("l2l/norm_ratio", 1.0 if step < 8 else 3.0, step)
            writer.add_scalar("gen/train/approx_kl", 0.01 * step + offset, step)  # PPO's, every method
            if seed == 2:
                writer.add_scalar("gen/train/l2l_update_norm", 0.5, step)  # one run steps its policy
        writer.close()
    fake_run(root, "gail", 0, [0.5, 0.6])  # no TensorBoard events: no diagnostics, no error
    output = tmp_path / "r.json"
    summary = compare(root, output).summary
    l2l = summary["tasks"]["hopper"]["l2l-gail"]
    assert l2l["runs"]["seed2"]["discriminator"]["logit_gen"] == pytest.approx(-10.5)
    expected = {"logit_gen": -9.5, "acc_gen": 1.0, "norm_ratio": 3.0}
    assert l2l["discriminator_median"] == pytest.approx(expected)
    assert summary["tasks"]["hopper"]["gail"]["discriminator_median"] == {}
    # approx KL, last two rounds: 0.085 + offset, median over offsets 0, 1, 2
    assert l2l["generator_median"] == pytest.approx({"approx_kl": 1.085, "policy_update_norm": 0.5})
    table = output.with_suffix(".md").read_text()
    assert "| l2l-gail | - | 1.000 | - | -9.500 | - | - | - | - | 3.000 | - |" in table
    assert "| gail | - | - | - | - | - | - | - | - | - |" in table
    assert "Generator (PPO) over the last 20% of rounds" in table
    assert "| l2l-gail | 1.085 | - | - | 0.500 |" in table


def test_compare_a_subset_of_methods_in_the_given_order(experiment: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "sub.json"
    assert main(["gail", "compare", str(experiment), "--output", str(output),
                 "--methods", "l2l-gail,gail"]) == 0
    assert list(json.loads(output.read_text())["tasks"]["hopper"]) == ["l2l-gail", "gail"]
    assert main(["gail", "compare", str(experiment), "--output", str(tmp_path / "x.json"),
                 "--methods", "gail,nosuch"]) == 2
    assert capsys.readouterr().err == (f"error: no runs of nosuch under {experiment} (methods with runs "
                                       "there: gail, gail-gp, l2l-gail)\n")


def test_compare_writes_beside_the_experiment_by_default(experiment: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = tmp_path / "shipped"  # stands in for the source tree's results/gail/
    shipped.mkdir()
    monkeypatch.setattr(compare_module, "RESULTS_DIR", shipped)
    assert main(["gail", "compare", str(experiment)]) == 0
    for suffix in (".json", ".md", ".png"):
        assert (experiment / f"compare{suffix}").is_file()
    assert not any(shipped.iterdir())
    with pytest.raises(L2LError, match=r"compare\.json exists: pass --force"):
        compare(experiment)  # a second comparison does not overwrite the first unless asked


def unfinished_run(root: Path, method: str, seed: int, *, checkpoint_step: int | None = None,
                   **options: Any) -> Path:
    """An interrupted `l2l gail train` run: its resolved config.yaml and maybe a checkpoint."""
    from l2l_gail.gail.config import GAILConfig
    from l2l_gail.gail.tasks import load_task

    config = GAILConfig(task="inverted-pendulum", method=method, seed=seed, **options)
    resolved = config.resolved(load_task("inverted-pendulum"))
    run = root / resolved.run_method / f"seed{seed}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(resolved.to_dict(), sort_keys=True))
    if checkpoint_step is not None:
        (run / "checkpoints" / f"step_{checkpoint_step:09d}.pt").write_bytes(b"")  # only its name is read
    return run


def test_only_unfinished_runs_name_them_and_the_command_that_resumes_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import l2l_gail.gail.train as train_module

    root = tmp_path / "runs" / "gail" / "exp"
    options: dict[str, Any] = {"timesteps": 8192, "l2l_max_step": 1.0, "label": "l2l-max1",
                               "ppo": {"learning_rate": 1e-4, "net_arch": [32, 32]}}
    for seed in (0, 2):
        unfinished_run(root, "l2l-gail", seed, checkpoint_step=2048 * (seed + 1), **options)
    assert main(["gail", "compare", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: no finished runs under {root}: ")
    assert ("l2l-max1/seed0 (checkpoint at step 2,048 of 8,192), l2l-max1/seed2 (checkpoint at step "
            "6,144 of 8,192) are unfinished; resume with `") in err
    command = shlex.split(err.split("`")[1])
    assert command[1:] == [
        "gail", "train", "--task", "inverted-pendulum", "--method", "l2l-gail", "--l2l-max-step", "1.0",
        "--label", "l2l-max1", "--ppo", "learning_rate=0.0001", "--ppo", "net_arch=[32, 32]",
        "--timesteps", "8192", "--seeds", "0,2", "--experiment", "exp", "--runs-dir", str(tmp_path / "runs"),
        "--resume"]

    # The command is accepted as it stands: `--resume` reopens both runs (it refuses a differing
    # configuration) and continues them.
    resumed: list[tuple[Path, bool]] = []

    def fake_train(prepared: Any, run: Any, *, resume: bool, progress: bool) -> dict[str, float]:
        resumed.append((run.path, resume))
        return {"final": 0.5, "peak": 0.5, "env_steps_per_second": 1.0}

    monkeypatch.setattr(train_module, "train", fake_train)
    assert main([*command[1:], "--no-progress"]) == 0, capsys.readouterr().err
    assert resumed == [(root / "l2l-max1" / "seed0", True), (root / "l2l-max1" / "seed2", True)]


def test_the_resume_command_restores_yes_no_options_and_values_older_runs_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A run from before hopper's task file turned on observation normalisation and stochastic
    demonstrations has neither key in its config.yaml (OMITTED_AT): the command must switch both
    back, and spell yes/no options as --x / --no-x."""
    import l2l_gail.gail.train as train_module
    from l2l_gail.gail.config import GAILConfig
    from l2l_gail.gail.tasks import load_task

    root = tmp_path / "runs" / "gail" / "old"
    resolved = GAILConfig(task="hopper", method="gail", seed=1, obs_norm=False, demos="deterministic",
                          fixed_horizon=True, gen_norm_disc_batches=False).resolved(load_task("hopper"))
    stored = resolved.to_dict()
    assert "obs_norm" not in stored and "demos" not in stored  # as an older run's file
    run = root / "gail" / "seed1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(stored, sort_keys=True))
    (run / "checkpoints" / "step_000002048.pt").write_bytes(b"")
    assert main(["gail", "compare", str(root)]) == 2
    command = shlex.split(capsys.readouterr().err.split("`")[1])
    assert command[1:6] == ["gail", "train", "--task", "hopper", "--method"]
    for flag in ("--no-obs-norm", "--fixed-horizon", "--no-gen-norm-disc-batches"):
        assert flag in command
    assert command[command.index("--demos") + 1] == "deterministic"
    resumed: list[Path] = []
    monkeypatch.setattr(train_module, "train", lambda prepared, run, **_: resumed.append(run.path) or
                        {"final": 0.5, "peak": 0.5, "env_steps_per_second": 1.0})
    assert main([*command[1:], "--no-progress"]) == 0, capsys.readouterr().err
    assert resumed == [run]


def test_methods_without_finished_runs(experiment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gail", "compare", str(experiment), "--methods", "gail,gail-gp,nosuch,other"]) == 2
    assert capsys.readouterr().err == (f"error: no runs of nosuch, other under {experiment} (methods with "
                                       "runs there: gail, gail-gp, l2l-gail)\n")
    unfinished_run(experiment, "l2l-gail", 0, label="l2l-slow", checkpoint_step=4096)
    assert main(["gail", "compare", str(experiment), "--methods", "gail,l2l-slow"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no finished runs of l2l-slow under {experiment}: l2l-slow/seed0 "
                          "(checkpoint at step 4,096 of 200,000) is unfinished; resume with `")
    assert "--method l2l-gail --label l2l-slow --seeds 0 --experiment bench" in err
    empty = experiment.parent / "empty"
    empty.mkdir()
    assert main(["gail", "compare", str(empty), "--methods", "gail"]) == 2
    assert capsys.readouterr().err == f"error: no runs of gail under {empty} (it holds no runs)\n"


def test_console_script_is_called_as_a_plain_shell_finds_it(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "repo" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text("")
    (bin_dir / "l2l").write_text("#!/bin/sh\n")
    (bin_dir / "l2l").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path / "repo")
    assert console_script("l2l") == ".venv/bin/l2l"  # what `make demo` users type from the repository
    monkeypatch.chdir(tmp_path)
    assert console_script("l2l") == "repo/.venv/bin/l2l"
    monkeypatch.chdir(bin_dir)
    assert console_script("l2l") == "./l2l"  # a bare name would be looked up on PATH
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert console_script("l2l") == str(bin_dir / "l2l")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin")  # an activated venv
    assert console_script("l2l") == "l2l"
    assert console_script("not-installed") == "not-installed"
