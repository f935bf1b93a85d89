"""``l2l_gail.gail.compat``: the version guard, and that each accessor reaches the state it names
in the installed imitation and stable-baselines3 (checked by what the state does, not by name)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import imitation
import numpy as np
import pytest
import stable_baselines3
from stable_baselines3 import PPO, SAC

from l2l_gail.gail import compat


def test_installed_versions_are_the_supported_ones() -> None:
    """Else the accessors below test a library this module was not written for."""
    assert compat.version_problem(imitation.__version__, stable_baselines3.__version__) is None


@pytest.mark.parametrize(("imitation_version", "sb3_version", "named"), [
    ("1.0.2", "2.2.1", ["imitation 1.0.2"]),
    ("1.0.1", "2.3.0", ["stable-baselines3 2.3.0"]),
    ("2.0.0", "1.8.0", ["imitation 2.0.0", "stable-baselines3 1.8.0"]),
])
def test_other_versions_warn_in_one_line(imitation_version: str, sb3_version: str, named: list[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert compat.version_problem("1.0.1", "2.2.7") is None
    monkeypatch.setattr(imitation, "__version__", imitation_version)
    monkeypatch.setattr(stable_baselines3, "__version__", sb3_version)
    with pytest.warns(compat.CompatibilityWarning) as record:
        compat.check_versions()
    message = str(record[0].message)
    assert "\n" not in message and "imitation 1.0.1" in message and all(n in message for n in named)


def test_supported_versions_are_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.check_versions()


def test_imitation_state(make_gail_trainer: Callable[..., Any]) -> None:
    trainer = make_gail_trainer("gail")
    assert trainer.discriminator is trainer.reward_train.base  # the logits under GAIL's reward
    assert list(trainer.disc_optimizer.param_groups[0]["params"]) == list(trainer.discriminator.parameters())
    trainer.train_gen()
    batch = next(trainer.disc_batches())
    assert len(batch["state"]) == 2 * trainer.demo_batch_size
    trainer.train_disc()
    assert (trainer.global_step, trainer.disc_step) == (1, 1)
    trainer.global_step, trainer.disc_step = 5, 7
    trainer.train_disc()
    assert (trainer.global_step, trainer.disc_step) == (5, 8)
    wrapped = trainer.reward_wrapper_state()
    assert wrapped["running"].shape == (trainer.venv.num_envs,) and wrapped["running"].abs().sum() > 0
    state = trainer.replay_buffer_state()
    assert state["n_data"] == trainer.gen_train_timesteps and "infos" not in state["arrays"]
    other = make_gail_trainer("gail")
    other.load_replay_buffer_state(state)
    other.load_reward_wrapper_state(wrapped)
    assert str(other.reward_wrapper_state()) == str(wrapped)
    np.random.seed(0)
    first = next(trainer.disc_batches())
    np.random.seed(0)
    second = next(other.disc_batches())
    assert all(np.array_equal(first[k][trainer.demo_batch_size:], second[k][trainer.demo_batch_size:])
               for k in ("state", "action", "next_state", "done"))  # the generator rows


def test_sb3_state() -> None:
    env = gym.make("Pendulum-v1")
    ppo = PPO("MlpPolicy", env, n_steps=32, batch_size=16, n_epochs=3, seed=0, device="cpu")
    ppo.learn(total_timesteps=64)
    assert compat.n_updates(ppo) == 2 * 3  # one per epoch
    assert compat.progress_remaining(ppo) == pytest.approx(1 - 64 / 64)
    compat.set_n_updates(ppo, 11)
    assert compat.n_updates(ppo) == 11
    rows = compat.rollout_samples(ppo.rollout_buffer, np.arange(32))
    assert np.array_equal(rows.returns.numpy(), ppo.rollout_buffer.returns.flatten())
    vec = ppo.get_env()
    assert vec is not None
    vec.seed(123)
    first_obs = np.asarray(vec.reset())
    vec.seed(123)
    compat.forget_last_obs(ppo)
    ppo.learn(total_timesteps=32, reset_num_timesteps=False)
    assert np.array_equal(ppo.rollout_buffer.observations[0].reshape(first_obs.shape), first_obs)  # reset
    sac = SAC("MlpPolicy", env, learning_starts=0, train_freq=(1, "episode"), seed=0, device="cpu")
    assert compat.torch_variables(sac) == ["log_ent_coef"]
    sac.learn(total_timesteps=400)
    assert compat.episode_num(sac) == 2  # Pendulum's episodes are 200 steps
    compat.set_episode_num(sac, 5)
    assert compat.episode_num(sac) == 5
    history = compat.episode_history(sac)
    assert [e["l"] for e in history["episodes"]] == [200.0, 200.0] and history["successes"] == []
    compat.load_episode_history(ppo, {"episodes": history["episodes"] * 60, "successes": []})
    assert ppo.ep_info_buffer is not None and len(ppo.ep_info_buffer) == 100  # the window's length
