"""Task spec files: every shipped file validates and builds its env; bad files name the bad key;
numbers written the way PyYAML reads as strings (``3e-4``) are accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from l2l_gail.errors import L2LError
from l2l_gail.gail.tasks import (
    CHECKOUT,
    ENVS_DIR,
    TASKS_ENV,
    load_task,
    load_task_file,
    shipped_dir,
    task_names,
)

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
    (lambda d: d.update(random_return="nan"), ["'random_return'", "must be float"]),
    (lambda d: d["gail"].update(timesteps="2.5e5x"), ["'gail.timesteps'", "must be int"]),
    (lambda d: d["gail"].update(n_envs=2.5), ["'gail.n_envs'", "must be int", "2.5"]),
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


HOPPER_LR = "0.00025"  # gail.ppo.learning_rate of envs/hopper.yaml


def _edit_text(tmp_path: Path, old: str, new: str) -> Path:
    """envs/hopper.yaml as text, with ``old`` replaced by ``new`` (as a user would type it)."""
    text = (ENVS_DIR / "hopper.yaml").read_text()
    assert text.count(old) == 1
    path = tmp_path / "hopper.yaml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(("old", "new", "where", "expected"), [
    # PyYAML (YAML 1.1) reads 3e-4 and 1e6 as strings: they must still be numbers of the right type
    ("disc_lr: 0.0003", "disc_lr: 3e-4", ("gail", "disc_lr"), 3e-4),
    ("  timesteps: 1000000\n  demo_episodes", "  timesteps: 1e6\n  demo_episodes", ("gail", "timesteps"),
     1_000_000),
    ("n_disc_updates_per_round: 8", "n_disc_updates_per_round: 8.0", ("gail", "n_disc_updates_per_round"), 8),
    (f"learning_rate: {HOPPER_LR}", 'learning_rate: "2.5e-4"', ("gail", "ppo", "learning_rate"), 2.5e-4),
    ("learning_rate: 0.0003", "learning_rate: 3e-4", ("expert", "hyperparams", "learning_rate"), 3e-4),
    ("net_arch:\n    - 64\n    - 64", "net_arch: ['64', '64']", ("gail", "ppo", "net_arch"), [64, 64]),
    ("max_grad_norm: 0.9", "max_grad_norm: None", ("gail", "ppo", "max_grad_norm"), None),
])
def test_numeric_strings_become_numbers(tmp_path: Path, old: str, new: str, where: tuple[str, ...],
                                        expected: Any) -> None:
    task = load_task_file(_edit_text(tmp_path, old, new))
    value: Any = {"gail": task.gail, "expert": task.expert}
    for key in where:
        value = value[key]
    assert value == expected and type(value) is type(expected)


def test_ppo_values_from_the_task_file_are_checked_before_any_run(tmp_path: Path) -> None:
    from l2l_gail.gail.config import GAILConfig

    task = load_task_file(_edit_text(tmp_path, f"learning_rate: {HOPPER_LR}", 'learning_rate: "2.5e-4"'))
    GAILConfig(task="hopper").resolved(task)  # a quoted number is a number
    task = load_task_file(_edit_text(tmp_path, f"learning_rate: {HOPPER_LR}", "learning_rate: fast"))
    with pytest.raises(L2LError) as info:
        GAILConfig(task="hopper").resolved(task)
    assert str(info.value) == ("PPO hyper-parameter learning_rate must be a number, got 'fast' "
                               "(from gail.ppo of the task file or --ppo)")
    task = load_task_file(_edit_text(tmp_path, "n_epochs: 5", "n_epochs: true"))
    with pytest.raises(L2LError, match="n_epochs must be an integer, got True"):
        GAILConfig(task="hopper").resolved(task)


def test_expert_hyperparameters_are_checked(tmp_path: Path) -> None:
    from l2l_gail.gail.expert import build_expert

    task = load_task_file(_edit_text(tmp_path, "learning_rate: 0.0003", "learning_rate: 3e-x"))
    env = task.make_env()
    try:
        with pytest.raises(L2LError) as info:
            build_expert(task, env, seed=0, tb_dir=None)
    finally:
        env.close()
    message = str(info.value)
    assert "\n" not in message and str(task.path) in message
    assert "TD3 hyper-parameter learning_rate must be a number, got '3e-x'" in message


def test_an_empty_task_directory_is_an_error(tmp_path: Path) -> None:
    for call in (lambda: task_names(tmp_path), lambda: load_task("hopper", tmp_path)):
        with pytest.raises(L2LError) as info:
            call()
        message = str(info.value)
        assert f"no task files (*.yaml) in {tmp_path}" in message and TASKS_ENV in message


def test_the_task_directory_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TASKS_ENV, str(tmp_path))
    assert shipped_dir("envs", TASKS_ENV) == (tmp_path, f"${TASKS_ENV}")
    monkeypatch.delenv(TASKS_ENV)
    assert shipped_dir("envs", TASKS_ENV) == (Path(__file__).resolve().parents[1] / "envs", CHECKOUT)
