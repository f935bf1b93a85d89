"""`l2l gail train` refuses bad input with one line on stderr, exit status 2, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from l2l_gail.cli import main
from l2l_gail.gail import demos as D

TASK = "inverted-pendulum"
TINY = ["--timesteps", "256", "--eval-every", "256", "--eval-episodes", "1", "--n-envs", "2",
        "--ppo", "n_steps=128", "--demo-batch-size", "64", "--gen-replay-buffer-capacity", "256",
        "--no-progress"]


def gail_train(tmp_path: Path, *args: str) -> int:
    return main(["gail", "train", "--experiment", "bad", "--runs-dir", str(tmp_path / "runs"), *args])


def one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def copy_demos(tmp_path: Path, task: str = TASK) -> Path:
    """The shipped inverted-pendulum demonstrations in a tmp data dir, filed under ``task``."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(D.demo_path(TASK), D.demo_path(task, data))
    manifest = D.read_manifest()
    manifest["tasks"] = {task: {**manifest["tasks"][TASK], "file": f"{task}.npz"}}
    (data / D.MANIFEST).write_text(json.dumps(manifest))
    return data


@pytest.mark.parametrize(("args", "fragments"), [
    (["--task", "pendulum", "--method", "gail"], ["unknown task 'pendulum'", "inverted-pendulum"]),
    (["--task", TASK, "--method", "wgail"], ["unknown method 'wgail'", "gail-gp"]),
    (["--task", TASK, "--method", "gail", "--timesteps", "100"],
     ["--timesteps 100 is less than one round of", "ask for at least"]),
    (["--task", TASK, "--method", "gail", "--seeds", "0,x"], ["--seeds must be comma-separated"]),
    (["--task", TASK, "--method", "gail", "--ppo", "n_steps"], ["--ppo takes KEY=VALUE"]),
    (["--task", TASK, "--method", "gail", "--ppo", "learning_rat=1e-3", "--timesteps", "16384"],
     ["bad PPO hyper-parameter", "learning_rat"]),
    (["--task", TASK, "--method", "gail", "--ppo", "learning_rate=1e-x"],
     ["PPO hyper-parameter learning_rate must be a number, got '1e-x'", "--ppo"]),
    (["--task", TASK, "--method", "gail", "--ppo", "normalize_advantage=2"],
     ["PPO hyper-parameter normalize_advantage must be true or false, got 2"]),
    (["--task", TASK, "--method", "l2l-gail", "--l2l-init", "/nonexistent/phi.pt"],
     ["--l2l-init /nonexistent/phi.pt: no such file"]),
    (["--task", TASK, "--method", "gail", "--demo-episodes", "500"], ["asked for 500 demonstration"]),
])
def test_bad_options(args: list[str], fragments: list[str], tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    assert gail_train(tmp_path, *args) == 2
    one_line_error(capsys, *fragments)
    assert not (tmp_path / "runs").exists()


def test_missing_demonstrations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gail_train(tmp_path, "--task", TASK, "--method", "gail", "--data-dir", str(tmp_path)) == 2
    one_line_error(capsys, "no demonstrations for task 'inverted-pendulum'", "l2l expert collect")
    assert not (tmp_path / "runs").exists()


def test_corrupted_demonstrations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = copy_demos(tmp_path)
    npz = D.demo_path(TASK, data)
    npz.write_bytes(npz.read_bytes()[:1000])
    assert gail_train(tmp_path, "--task", TASK, "--method", "gail", "--data-dir", str(data)) == 2
    one_line_error(capsys, str(npz))
    assert not (tmp_path / "runs").exists()


def test_demonstrations_of_another_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = copy_demos(tmp_path, task="hopper")  # InvertedPendulum-v4 rollouts filed as hopper's
    assert gail_train(tmp_path, "--task", "hopper", "--method", "gail", "--demos", "deterministic",
                      "--data-dir", str(data)) == 2
    one_line_error(capsys, "collected on InvertedPendulum-v4", "uses Hopper-v4")


def test_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gail_train(tmp_path, "--task", TASK, "--method", "gail", "--seeds", "1", *TINY) == 0
    run = tmp_path / "runs" / "gail" / "bad" / "gail" / "seed1"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    # seed 0 is new, seed 1 exists: refused before seed 0 starts
    assert gail_train(tmp_path, "--task", TASK, "--method", "gail", "--seeds", "0,1", *TINY) == 2
    one_line_error(capsys, str(run), "already exists", "--resume")
    assert not (run.parent / "seed0").exists()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # --resume of a finished run keeps its results; --resume of a missing run is refused
    assert gail_train(tmp_path, "--task", TASK, "--method", "gail", "--seeds", "0", "--resume", *TINY) == 2
    one_line_error(capsys, "cannot resume", "seed0", "does not exist")
    assert gail_train(tmp_path, "--task", TASK, "--method", "gail", "--seeds", "1", "--resume",
                      *TINY[:-1], "--gp-coef", "3") == 2
    one_line_error(capsys, "configuration differs", "gp_coef")


def test_ppo_values_typed_as_on_the_command_line(tmp_path: Path) -> None:
    """`--ppo learning_rate=1e-4` (PyYAML reads 1e-4 as a string) trains; the run records numbers."""
    import yaml

    assert gail_train(tmp_path, "--task", TASK, "--method", "gail", *TINY, "--ppo", "learning_rate=1e-4",
                      "--ppo", "net_arch=[16, 16]", "--ppo", "target_kl=None") == 0
    run = tmp_path / "runs" / "gail" / "bad" / "gail" / "seed0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["ppo"]["learning_rate"] == 1e-4 and isinstance(config["ppo"]["learning_rate"], float)
    assert config["ppo"]["net_arch"] == [16, 16] and config["ppo"]["target_kl"] is None


def test_sb3_validation_failure_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SB3 checks some values with `assert` (here: a minibatch of one cannot be normalised)."""
    assert gail_train(tmp_path, "--task", TASK, "--method", "gail", *TINY, "--ppo", "batch_size=1") == 2
    one_line_error(capsys, "bad PPO hyper-parameter", "batch_size", "--ppo")


def test_help_lists_every_choice(capsys: pytest.CaptureFixture[str]) -> None:
    """Every ``Literal`` choice of the resolved configuration is in ``CHOICES``, and
    ``l2l gail train --help`` shows each option's names."""
    import typing

    from l2l_gail.gail.config import CHOICES, ResolvedGAILConfig

    literals = {name: typing.get_args(hint) for name, hint in
                typing.get_type_hints(ResolvedGAILConfig).items()
                if typing.get_origin(hint) is typing.Literal}
    assert literals == CHOICES
    with pytest.raises(SystemExit):
        main(["gail", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for names in CHOICES.values():
        assert "{" + ",".join(names) + "}" in text
