"""Task spec files: every shipped file validates and builds its env; bad files name the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from l2l_gail.errors import L2LError
from l2l_gail.gail.tasks import ENVS_DIR, load_task, load_task_file, task_names

EXPECTED_TASKS = {"inverted-pendulum", "hopper", "halfcheetah", "walker2d", "ant"}


def test_all_five_tasks_have_a_spec() -> None:
    assert set(task_names()) >= EXPECTED_TASKS


@pytest.mark.parametrize("name", task_names())
def test_spec_validates_and_env_constructs(name: str) -> None:
    task = load_task(name)
    assert task.name == name and task.path == ENVS_DIR / f"{name}.yaml"
    assert task.env_id.endswith("-v4")
    assert task.expert["threshold"] > task.random_return
    env = task.make_env()
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == env.observation_space.shape
        _, reward, *_ = env.step(env.action_space.sample())
        assert np.isfinite(reward)
    finally:
        env.close()


def _write_variant(tmp_path: Path, edit: Any) -> Path:
    """A copy of envs/hopper.yaml (as tmp_path/hopper.yaml) changed by ``edit(data)``."""
    data = yaml.safe_load((ENVS_DIR / "hopper.yaml").read_text())
    edit(data)
    path = tmp_path / "hopper.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unchanged_copy_validates(tmp_path: Path) -> None:
    assert load_task_file(_write_variant(tmp_path, lambda d: None)).env_id == "Hopper-v4"


@pytest.mark.parametrize(("edit", "fragments"), [
    (lambda d: d["expert"].update(thresold=1.0), ["unknown key 'expert.thresold'"]),
    (lambda d: d.update(extra=1), ["unknown key 'extra'"]),
    (lambda d: d["expert"].update(timesteps="many"), ["'expert.timesteps'", "must be int"]),
    (lambda d: d["expert"].update(timesteps=True), ["'expert.timesteps'", "must be int"]),
    (lambda d: d["gail"].update(disc_lr="fast"), ["'gail.disc_lr'", "must be float"]),
    (lambda d: d["gail"].pop("disc_lr"), ["missing key 'gail.disc_lr'"]),
    (lambda d: d["expert"].update(algo="ddpg"), ["'expert.algo'", "ddpg", "sac, td3, ppo"]),
    (lambda d: d.update(name="walker2d"), ["'name'", "walker2d"]),
    (lambda d: d["expert"].update(checkpoint_every=0), ["'expert.checkpoint_every'", "positive"]),
    (lambda d: d.update(expert=[1, 2]), ["expert", "must be a mapping"]),
])
def test_bad_spec_names_the_key(tmp_path: Path, edit: Any, fragments: list[str]) -> None:
    path = _write_variant(tmp_path, edit)
    with pytest.raises(L2LError) as info:
        load_task_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_optional_key_may_be_absent(tmp_path: Path) -> None:
    task = load_task_file(_write_variant(tmp_path, lambda d: d["gail"].pop(
        "gen_replay_buffer_capacity")))
    assert "gen_replay_buffer_capacity" not in task.gail


def test_invalid_yaml_and_unknown_task(tmp_path: Path) -> None:
    path = tmp_path / "hopper.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(L2LError, match="not valid YAML"):
        load_task_file(path)
    with pytest.raises(L2LError, match=r"unknown task 'hoper'.*hopper"):
        load_task("hoper")
