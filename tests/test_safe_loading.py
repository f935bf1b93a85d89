"""No code runs from a file: planted checkpoints are refused on every load path.

A checkpoint's pickle can name any Python callable (``__reduce__``); ``torch.load`` with
``weights_only=False`` calls it. Every user-given file is read with ``weights_only=True``, and
the refusal is a one-line error naming the file. Every mode's checkpoint must therefore hold
only tensors and plain data: the resume tests of each mode load them that way, and the expert
(whose checkpoints were SB3 zips and a pickled replay buffer) is checked here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from l2l_gail.cli import main
from l2l_gail.errors import L2LError
from l2l_gail.gail import compat, expert
from l2l_gail.gail.tasks import ENVS_DIR, load_task_file
from l2l_gail.runs import RunDir, safe_torch_load


class Plant:
    """Unpickling this creates ``marker``: a stand-in for any code an attacker could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def plant(path: Path, marker: Path, protocol: int = 2) -> None:
    """A torch checkpoint (a plausible dict) whose unpickling would create ``marker``.

    Protocol 2 names the callable with GLOBAL, protocol 4 with STACK_GLOBAL.
    """
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 0, "payload": Plant(marker)}, path,
               pickle_protocol=protocol)


def one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")  # torch warns of the crafted file
@pytest.mark.parametrize("protocol", [2, 4])
def test_the_payload_is_real_and_refused(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "x.pt"
    plant(path, marker, protocol)
    with pytest.raises(L2LError, match=r"refusing to load .*could run code") as info:
        safe_torch_load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the unsafe load this replaces does run it
    assert marker.exists()


def test_resume_refuses_a_planted_checkpoint_even_with_an_older_good_one(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    run = RunDir(tmp_path / "r", {})
    run.save_checkpoint({"step": 1}, 1)
    planted = run.checkpoints_dir / "step_000000002.pt"
    plant(planted, marker)
    with pytest.raises(L2LError, match="refusing to load") as info:
        run.load_latest()
    assert str(planted) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_vision_resume_and_eval_refuse_damaged_and_planted_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    args = ["vision", "train", "--dataset", "synthetic", "--synthetic-shape", "3x8x8", "--model", "small-cnn",
            "--width", "4", "--method", "standard", "--epochs", "1", "--train-subset", "32",
            "--eval-subset", "16", "--runs-dir", str(tmp_path), "--name", "r", "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "vision" / "r"
    (checkpoint,) = (run / "checkpoints").iterdir()
    safe_torch_load(checkpoint)  # what vision writes loads weights-only
    safe_torch_load(run / "model.pt")
    capsys.readouterr()

    good = checkpoint.read_bytes()
    checkpoint.write_bytes(good[: len(good) // 2])
    assert main([*args, "--resume"]) == 0  # finished: the checkpoint is not needed, nor read
    assert "nothing to do" in capsys.readouterr().out
    (run / "metrics.json").unlink()  # unfinished: resuming needs the checkpoint
    assert main([*args, "--resume"]) == 2  # not silently retrained from epoch 0
    one_line_error(capsys, "every checkpoint is damaged", str(checkpoint), "delete them")
    plant(checkpoint, marker)
    assert main([*args, "--resume"]) == 2
    one_line_error(capsys, "refusing to load", str(checkpoint))
    plant(run / "model.pt", marker)
    assert main(["vision", "eval", str(run), "--attacks", "fgsm", "--no-progress"]) == 2
    one_line_error(capsys, "refusing to load", str(run / "model.pt"))
    assert not marker.exists()


# ----------------------------------------------------------------------------- expert checkpoints
def tiny_off_policy_task(tmp_path: Path, algo: str) -> Any:
    """InvertedPendulum with a tiny TD3 or SAC learner, checkpointed at 256 steps."""
    data = yaml.safe_load((ENVS_DIR / "inverted-pendulum.yaml").read_text())
    data["expert"].update(algo=algo, timesteps=256, threshold=1e6, eval_every=256, eval_episodes=1,
                          checkpoint_every=256)
    data["expert"]["hyperparams"] = {"learning_starts": 64, "buffer_size": 512, "batch_size": 16,
                                     "net_arch": [8, 8]}
    if algo == "td3":
        data["expert"]["hyperparams"]["action_noise_std"] = 0.1
    path = tmp_path / "envs" / "inverted-pendulum.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return load_task_file(path)


@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_expert_checkpoint_loads_weights_only_and_restores_the_learner(
        tmp_path: Path, algo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    task = tiny_off_policy_task(tmp_path, algo)
    run = RunDir(tmp_path / "run", {"expert": task.expert})
    trained: dict[str, Any] = {}
    save = expert.save_checkpoint

    def keep(model: Any, run_dir: RunDir, history: list[dict[str, float]]) -> None:
        trained["model"] = model
        save(model, run_dir, history)

    monkeypatch.setattr(expert, "save_checkpoint", keep)
    expert.train_expert(task, run, seed=0, progress=False)
    monkeypatch.setattr(expert, "save_checkpoint", save)
    assert not list(run.checkpoints_dir.glob("*.pkl"))
    state = run.load_latest()  # weights_only=True
    assert state is not None

    model = trained["model"]
    fresh: Any = expert.build_expert(task, model.get_env(), 1, None)  # seed 1: other weights
    history = expert.restore_checkpoint(fresh, state)
    assert [h["timesteps"] for h in history] == [256]
    assert (fresh.num_timesteps, compat.n_updates(fresh), compat.episode_num(fresh)) == \
        (model.num_timesteps, compat.n_updates(model), compat.episode_num(model))
    assert compat.n_updates(model) > 0
    for name, params in model.get_parameters().items():
        for key, value in params.items():
            restored = fresh.get_parameters()[name][key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, restored), (name, key)
    if algo == "sac":
        assert torch.equal(fresh.log_ent_coef, model.log_ent_coef)
    for key in ("observations", "actions", "rewards", "dones", "timeouts"):
        assert np.array_equal(getattr(fresh.replay_buffer, key), getattr(model.replay_buffer, key)), key
    assert (fresh.replay_buffer.pos, fresh.replay_buffer.full) == \
        (model.replay_buffer.pos, model.replay_buffer.full)

    resumed = expert.train_expert(task, RunDir(tmp_path / "run", {"expert": task.expert}, resume=True),
                                  seed=0, timesteps=320, resume=True, progress=False)
    assert resumed["timesteps"] == 320


def test_expert_resume_refuses_an_old_sb3_checkpoint(tmp_path: Path) -> None:
    task = tiny_off_policy_task(tmp_path, "td3")
    run = RunDir(tmp_path / "run", {"expert": task.expert})
    (run.checkpoints_dir / expert.MODEL_FILE).write_bytes(b"an SB3 zip of an older version")
    with pytest.raises(L2LError, match="no longer unpickles"):
        expert.train_expert(task, RunDir(tmp_path / "run", {"expert": task.expert}, resume=True), seed=0,
                            resume=True, progress=False)



def test_a_planted_learned_optimizer_file_is_refused(tmp_path: Path) -> None:
    from l2l_gail.core import LearnedOptimizer

    marker = tmp_path / "pwned"
    path = tmp_path / "phi.pt"
    plant(path, marker)
    with pytest.raises(L2LError, match="refusing to load"):
        LearnedOptimizer([torch.nn.Parameter(torch.zeros(2))], learned=path)
    assert not marker.exists()
