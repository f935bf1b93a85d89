"""`train_expert`: evaluation and checkpoint cadences, early stop at the threshold, and resume.

A PPO expert on InvertedPendulum with a few hundred steps and one-episode evaluations, from a
copy of envs/inverted-pendulum.yaml in a tmp folder, so each test takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from l2l_gail.gail import expert
from l2l_gail.gail.tasks import ENVS_DIR, TaskSpec, load_task_file
from l2l_gail.runs import RunDir

TASK = "inverted-pendulum"


def tiny_task(tmp_path: Path, threshold: float) -> TaskSpec:
    """The task with a 768-step budget, evaluations every 256 steps and checkpoints every 512."""
    data = yaml.safe_load((ENVS_DIR / f"{TASK}.yaml").read_text())
    data["expert"].update(timesteps=768, threshold=threshold, eval_every=256, eval_episodes=1,
                          checkpoint_every=512)
    data["expert"]["hyperparams"].update(n_steps=256, batch_size=64, n_epochs=1)
    path = tmp_path / "envs" / f"{TASK}.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return load_task_file(path)


def open_run(tmp_path: Path, task: TaskSpec, resume: bool = False) -> RunDir:
    return RunDir.for_mode("expert", TASK, {"expert": task.expert}, root=tmp_path / "runs",
                           resume=resume)


def history(run: RunDir) -> list[dict[str, Any]]:
    return json.loads((run.checkpoints_dir / "history.json").read_text())


def test_cadences_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = tiny_task(tmp_path, threshold=1e6)  # never reached: trains the whole budget
    saved_at: list[int] = []
    save = expert.save_checkpoint

    def record(model: Any, run: RunDir, hist: list[dict[str, float]]) -> None:
        saved_at.append(model.num_timesteps)
        save(model, run, hist)

    monkeypatch.setattr(expert, "save_checkpoint", record)
    run = open_run(tmp_path, task)
    metrics = expert.train_expert(task, run, seed=0, progress=False)
    assert [h["timesteps"] for h in history(run)] == [256, 512, 768]
    assert saved_at == [512, 768]  # every checkpoint_every steps, and once at the end
    assert metrics["timesteps"] == 768 and not metrics["reached_threshold"]
    assert (run.checkpoints_dir / "best_model.zip").is_file()

    monkeypatch.setattr(expert, "save_checkpoint", save)
    resumed = expert.train_expert(task, open_run(tmp_path, task, resume=True), seed=0,
                                  timesteps=1024, resume=True, progress=False)
    assert resumed["timesteps"] == 1024  # continues from 768, not from 0
    assert [h["timesteps"] for h in history(run)] == [256, 512, 768, 1024]


def test_stops_at_the_threshold_and_a_higher_target_continues(tmp_path: Path) -> None:
    task = tiny_task(tmp_path, threshold=1.0)  # any balancing episode earns at least 1
    run = open_run(tmp_path, task)
    metrics = expert.train_expert(task, run, seed=0, progress=False)
    assert metrics["reached_threshold"] and metrics["timesteps"] == 256  # the first evaluation
    again = expert.train_expert(task, open_run(tmp_path, task, resume=True), seed=0, resume=True,
                                progress=False)
    assert again["timesteps"] == 256 and len(history(run)) == 1  # nothing more to train
    # a higher target continues the stopped run (from its checkpoint, not from scratch)
    further = expert.train_expert(task, open_run(tmp_path, task, resume=True), seed=0, resume=True,
                                  timesteps=512, target_return=1e6, progress=False)
    assert further["timesteps"] == 512 and further["target_return"] == 1e6
    assert [h["timesteps"] for h in history(run)] == [256, 512]
