"""`l2l expert collect` / `l2l expert show` end to end on InvertedPendulum with a tiny budget.

The expert is a PPO model trained for one rollout (1024 steps) into a tmp runs dir; the
demonstrations go to a tmp data dir, so the repository's expert_data/ is never written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from l2l_gail.cli import main
from l2l_gail.gail import demos as D
from l2l_gail.gail import expert_data
from l2l_gail.gail.tasks import INSTALLED

TASK = "inverted-pendulum"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tmp runs dir with a barely trained expert (no evaluation ran, so no best_model.zip)."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["expert", "train", "--task", TASK, "--timesteps", "1024", "--runs-dir", str(root),
                 "--no-progress"]) == 0
    assert (root / "expert" / TASK / "checkpoints" / "model.zip").is_file()
    return root


def collect(runs_dir: Path, data_dir: Path, *extra: str) -> int:
    return main(["expert", "collect", "--task", TASK, "--runs-dir", str(runs_dir),
                 "--data-dir", str(data_dir), *extra])


def test_collect_writes_a_valid_file(runs_dir: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert collect(runs_dir, tmp_path, "--episodes", "2", "--seed", "5") == 0
    out = capsys.readouterr().out
    assert "checkpoints/model.zip" in out  # fell back from the missing best model
    # 1024 steps is no expert: its 2-episode mean return was 25-40 over training seeds 0-9 x
    # ATEN_CPU_CAPABILITY default/avx2/avx512
    assert "below the task's expert threshold 1000" in out
    trajectories = D.load_demos(TASK, tmp_path)
    assert len(trajectories) == 2
    entry = expert_data.verify(TASK, tmp_path)
    assert (entry["episodes"], entry["seed"], entry["env_id"]) == (2, 5, "InvertedPendulum-v4")
    assert entry["transitions"] == sum(len(t) for t in trajectories)
    assert entry["expert_timesteps"] == 1024 and entry["expert_algo"] == "ppo"
    assert (tmp_path / "policies" / f"{TASK}.zip").read_bytes() == (
        runs_dir / "expert" / TASK / "checkpoints" / "model.zip").read_bytes()
    # deterministic: the same policy and seed give the same transitions
    other = tmp_path / "again"
    assert collect(runs_dir, other, "--episodes", "2", "--seed", "5") == 0
    again = D.read_demos(TASK, other)
    first = D.read_demos(TASK, tmp_path)
    assert all((a == b).all() for a, b in zip(first.arrays().values(), again.arrays().values(),
                                              strict=True))


def test_collect_stochastic(runs_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--stochastic samples the PPO expert's actions into <task>-stochastic.npz, beside the
    deterministic file, from the same policy; both verify and `show` lists both."""
    assert collect(runs_dir, tmp_path, "--episodes", "2", "--stochastic") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"collect them first with `l2l expert collect --task {TASK}`" in err
    assert collect(runs_dir, tmp_path, "--episodes", "2", "--seed", "5") == 0
    deterministic = D.read_demos(TASK, tmp_path)
    assert collect(runs_dir, tmp_path, "--episodes", "2", "--seed", "5", "--stochastic") == 0
    assert "sampled from the PPO policy's distribution" in capsys.readouterr().out
    stochastic = D.read_demos(TASK, tmp_path, kind="stochastic")
    assert D.demo_path(TASK, tmp_path, "stochastic").name == f"{TASK}-stochastic.npz"
    np.testing.assert_array_equal(deterministic.obs[0], stochastic.obs[0])  # same initial state
    assert not np.array_equal(deterministic.acts[:5], stochastic.acts[:5])
    entry = expert_data.verify(TASK, tmp_path, "stochastic")
    assert entry["policy_sha256"] == expert_data.verify(TASK, tmp_path)["policy_sha256"]
    # sampling is seeded
    assert collect(runs_dir, tmp_path / "again", "--episodes", "2", "--seed", "5") == 0
    assert collect(runs_dir, tmp_path / "again", "--episodes", "2", "--seed", "5", "--stochastic") == 0
    again = D.read_demos(TASK, tmp_path / "again", kind="stochastic")
    assert all((a == b).all() for a, b in zip(stochastic.arrays().values(), again.arrays().values(),
                                              strict=True))
    # re-collecting the deterministic kind keeps the stochastic entry
    assert collect(runs_dir, tmp_path, "--episodes", "3", "--force") == 0
    assert expert_data.verify(TASK, tmp_path, "stochastic")["episodes"] == 2
    assert collect(runs_dir, tmp_path, "--episodes", "2", "--stochastic") == 2  # exists: --force
    capsys.readouterr()
    assert main(["expert", "show", "--data-dir", str(tmp_path)]) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines() if line.startswith(TASK)]
    assert rows == [[TASK, "deterministic"], [TASK, "stochastic"]]


def test_collision_is_refused_without_force(runs_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert collect(runs_dir, tmp_path, "--episodes", "2") == 0
    before = D.sha256_file(D.demo_path(TASK, tmp_path))
    capsys.readouterr()
    assert collect(runs_dir, tmp_path, "--episodes", "3") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists: pass --force" in err
    assert err.count("\n") == 1
    assert D.sha256_file(D.demo_path(TASK, tmp_path)) == before
    assert collect(runs_dir, tmp_path, "--episodes", "3", "--force") == 0
    assert D.read_manifest(tmp_path)["tasks"][TASK]["episodes"] == 3
    assert len(D.load_demos(TASK, tmp_path)) == 3


def test_collect_without_any_expert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert collect(tmp_path / "no-runs", tmp_path / "data", "--episodes", "2") == 2
    err = capsys.readouterr().err
    assert "no expert policy" in err and f"l2l expert train --task {TASK}" in err
    assert not (tmp_path / "data" / f"{TASK}.npz").exists()


def test_collect_falls_back_to_the_shipped_policy(runs_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh clone has no runs dir: the policy shipped in the data dir is rolled out."""
    assert collect(runs_dir, tmp_path, "--episodes", "1") == 0
    capsys.readouterr()
    assert collect(tmp_path / "no-runs", tmp_path, "--episodes", "1", "--force") == 0
    assert str(tmp_path / "policies" / f"{TASK}.zip") in capsys.readouterr().out
    assert expert_data.verify(TASK, tmp_path)["episodes"] == 1


def test_show_prints_the_table(runs_dir: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert collect(runs_dir, tmp_path, "--episodes", "2") == 0
    entry = D.read_manifest(tmp_path)["tasks"][TASK]
    capsys.readouterr()
    assert main(["expert", "show", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "actions", "expert", "episodes", "return", "(mean", "+-", "std)",
                                "threshold", "random", "verified"]
    row = next(line for line in lines if line.startswith(TASK)).split()
    mean_std = f"{entry['mean_return']:.1f} +- {entry['std_return']:.1f}".split()
    assert row == [TASK, "deterministic", "PPO", "1.024k", "2", *mean_std, "1000", "6.23", "yes"]
    hopper = next(line for line in lines if line.startswith("hopper"))
    assert hopper.endswith("not collected")
    # a damaged file turns the row to NO, prints the reason and fails the command
    D.demo_path(TASK, tmp_path).write_bytes(b"damaged")
    assert main(["expert", "show", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith(TASK)).endswith("NO")
    assert "sha256 does not match" in out


def test_show_on_the_shipped_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["expert", "show"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(TASK))
    assert row.split()[-1] == "yes"


def test_show_of_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["expert", "show", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'nowhere'} does not exist" in err


def test_collect_never_writes_into_an_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Installed from a wheel, the shipped demonstrations live in site-packages: `collect` without
    --data-dir refuses (before any rollout) and says how to choose a directory."""
    installed = tmp_path / "site-packages" / "l2l_gail" / "_data" / "expert_data"
    installed.mkdir(parents=True)
    monkeypatch.setattr(D, "EXPERT_DATA_DIR", installed)
    monkeypatch.setattr(D, "EXPERT_DATA_SOURCE", INSTALLED)
    assert main(["expert", "collect", "--task", TASK, "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(installed) in err
    assert "--data-dir DIR" in err and f"{D.DATA_ENV}=DIR" in err
    assert not any(installed.iterdir())
