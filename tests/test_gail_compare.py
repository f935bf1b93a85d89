"""`l2l gail compare`: stability metrics on hand-made series, statistics, outputs and refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy.stats import trim_mean

from l2l_gail.cli import main
from l2l_gail.errors import L2LError
from l2l_gail.gail import compare as compare_module
from l2l_gail.gail.compare import bootstrap_ci, compare, console_script, iqm, series_metrics


def test_final_is_the_mean_of_the_last_fifth() -> None:
    m = series_metrics([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0])
    assert m["final"] == pytest.approx(0.9)  # last 2 of 10
    assert m["peak"] == 1.0
    assert m["auc"] == pytest.approx(0.46)
    assert m["max_drawdown"] == 0.0 and not m["collapsed"]
    assert series_metrics([0.4, 0.7])["final"] == pytest.approx(0.7)  # at least one evaluation


def test_drawdown_is_the_deepest_fall_below_an_earlier_best() -> None:
    m = series_metrics([0.2, 0.9, 0.5, 0.8, 0.1, 0.95, 0.9])
    assert m["max_drawdown"] == pytest.approx(0.8)  # 0.9 -> 0.1, not 0.95 - 0.1
    assert m["peak"] == 0.95


@pytest.mark.parametrize(("series", "collapsed"), [
    ([0.1, 0.8, 0.9, 0.3, 0.2, 0.3, 0.2, 0.3, 0.4, 0.4], True),   # learned, then lost it
    ([0.1, 0.8, 0.9, 0.3, 0.2, 0.3, 0.2, 0.3, 0.5, 0.5], False),  # final exactly half the peak
    ([0.0, 0.29, 0.05, 0.0, 0.0], False),                         # never learned (peak < 0.3)
    ([0.0, 0.3, 0.05, 0.0, 0.1], True),                           # peak exactly 0.3 counts
    ([0.2, 0.5, 0.7, 0.9, 0.95], False),
])
def test_collapse_detection(series: list[float], collapsed: bool) -> None:
    assert series_metrics(series)["collapsed"] is collapsed


def test_iqm_trims_a_quarter_on_each_side() -> None:
    assert iqm([0, 1, 2, 3, 4, 5, 6, 7]) == pytest.approx(3.5)  # mean of 2, 3, 4, 5
    assert iqm([0.5, 0.5, 0.5, 100.0]) == pytest.approx(0.5)  # robust to one outlier
    assert iqm([0.2]) == pytest.approx(0.2)


def test_bootstrap_interval() -> None:
    low, high = bootstrap_ci([0.1, 0.4, 0.5, 0.6, 0.9], reps=2000)
    assert low < iqm([0.1, 0.4, 0.5, 0.6, 0.9]) < high
    assert low >= 0.1 and high <= 0.9
    assert bootstrap_ci([0.3, 0.3, 0.3], reps=200) == (pytest.approx(0.3), pytest.approx(0.3))
    assert bootstrap_ci([0.1, 0.9], reps=500, seed=1) == bootstrap_ci([0.1, 0.9], reps=500, seed=1)
    values = [0.9, 0.1, 0.4, 0.35, 0.8, 0.0, 0.6]  # the vectorised bootstrap statistic is the IQM
    assert trim_mean(np.array([values]), 0.25, axis=1)[0] == pytest.approx(iqm(values))


def fake_run(root: Path, method: str, seed: int, series: list[float], *, task: str = "hopper",
             speed: float = 1000.0, finished: bool = True) -> Path:
    """A run directory as `l2l gail train` leaves it (config.yaml and metrics.json only)."""
    run = root / method / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"task": task, "method": method, "seed": seed}))
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


def test_compare_writes_json_table_and_plot(experiment: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "results" / "hopper.json"
    assert main(["gail", "compare", str(experiment), "--output", str(output)]) == 0
    out = capsys.readouterr().out
    for path in (output, output.with_suffix(".md"), output.with_suffix(".png")):
        assert path.is_file() and str(path) in out
    assert output.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "note: left out: gail-gp/seed1 (no checkpoint yet) is unfinished; resume with `" in out
    assert "gail train --task hopper --method gail-gp --seeds 1 --experiment bench --runs-dir " in out
    summary = json.loads(output.read_text())
    assert (summary["task"], summary["timesteps"], summary["seeds"], summary["n_demos"]) == (
        "hopper", 5000, [0, 1, 2], 25)
    assert list(summary["methods"]) == ["gail", "gail-gp", "l2l-gail"]
    gail, l2l = summary["methods"]["gail"], summary["methods"]["l2l-gail"]
    assert set(gail) >= {"final_iqm", "final_ci95", "final_std", "collapsed_runs",
                         "max_drawdown_median", "auc_mean", "env_steps_per_second_median"}
    assert gail["collapsed_runs"] == 2 and l2l["collapsed_runs"] == 0
    assert gail["max_drawdown_median"] == pytest.approx(0.7)
    assert gail["final_iqm"] == pytest.approx(np.mean([0.2, 0.2, 0.9]))  # 3 runs: no trimming
    assert l2l["final_iqm"] == pytest.approx(0.9) and l2l["final_std"] == 0.0
    assert gail["env_steps_per_second_median"] == 1001.0
    assert summary["methods"]["gail-gp"]["n_runs"] == 1
    assert "| l2l-gail | 3 | 0.900 [0.900, 0.900] | 0.000 | 0/3 |" in output.with_suffix(".md").read_text()


def test_compare_refuses_to_overwrite(experiment: Path, tmp_path: Path) -> None:
    output = tmp_path / "r.json"
    compare(experiment, output)
    output.with_suffix(".md").write_text("keep me")
    with pytest.raises(L2LError, match="exists: pass --force"):
        compare(experiment, output)
    assert output.with_suffix(".md").read_text() == "keep me"
    compare(experiment, output, force=True)
    assert output.with_suffix(".md").read_text().startswith("Task `hopper`")


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


def test_discriminator_diagnostics_average_the_last_fifth_of_rounds(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path / "bench"
    for seed, offset in ((0, 0.0), (1, 1.0), (2, 2.0)):
        run = fake_run(root, "l2l-gail", seed, [0.5, 0.6])
        writer = SummaryWriter(str(run / "tb"))
        for step in range(10):  # last 20% of 10 rounds: steps 8 and 9
            writer.add_scalar("disc/logit_gen", -float(step) - offset, step)
            writer.add_scalar("disc/disc_acc_gen", 0.5 if step < 8 else 1.0, step)
        writer.close()
    fake_run(root, "gail", 0, [0.5, 0.6])  # no TensorBoard events: no diagnostics, no error
    output = tmp_path / "r.json"
    summary = compare(root, output).summary
    l2l = summary["methods"]["l2l-gail"]
    assert l2l["runs"]["seed2"]["discriminator"]["logit_gen"] == pytest.approx(-10.5)
    assert l2l["discriminator_median"] == pytest.approx({"logit_gen": -9.5, "acc_gen": 1.0})
    assert summary["methods"]["gail"]["discriminator_median"] == {}
    table = output.with_suffix(".md").read_text()
    assert "| l2l-gail | - | 1.000 | - | -9.500 | - | - |" in table
    assert "| gail | - | - | - | - | - | - |" in table


def test_compare_a_subset_of_methods_in_the_given_order(experiment: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "sub.json"
    assert main(["gail", "compare", str(experiment), "--output", str(output),
                 "--methods", "l2l-gail,gail"]) == 0
    assert list(json.loads(output.read_text())["methods"]) == ["l2l-gail", "gail"]
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
    from l2l_gail.gail.tasks import load_task
    from l2l_gail.gail.train import GAILConfig

    config = GAILConfig(task="inverted-pendulum", method=method, seed=seed, **options)
    run = root / config.run_method / f"seed{seed}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(
        dataclasses.asdict(config.resolved(load_task("inverted-pendulum"))), sort_keys=True))
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
