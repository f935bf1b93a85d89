"""Every use of imitation's and stable-baselines3's private attributes, in one place.

The GAIL trainers subclass imitation's GAIL and drive stable-baselines3's PPO. Exact resume and
the learned policy optimizer need some of their state that neither library exposes: imitation's
discriminator, its optimizer, step counters, replay buffer and learned-reward wrapper; SB3's
update and episode counters, its episode statistics window, its last observation, its
rollout-buffer sampling and its progress. This module gives each a public name
(the :class:`ImitationGAIL` base class, and functions for SB3's algorithms), so the rest of the
package never touches a private attribute (``ruff --select SLF001`` holds everywhere else), and a
new release of either library is adapted here alone.

It is written against the versions ``pyproject.toml`` pins, imitation 1.0.1 and
stable-baselines3 2.2.x (``tests/test_gail_compat.py`` checks what it relies on). Importing it
with other versions warns once, in one line: training may still work, but an attribute may
have moved (an ``AttributeError``) or changed meaning (a resume that no longer reproduces the
uninterrupted run).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import imitation
import numpy as np
import stable_baselines3
import torch
from imitation.algorithms.adversarial.gail import GAIL
from imitation.rewards.reward_nets import RewardNet
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import RolloutBufferSamples

IMITATION_VERSION = "1.0.1"
SB3_VERSIONS = "2.2."
"""The versions this module is written for: imitation exactly, stable-baselines3 by prefix."""


class CompatibilityWarning(UserWarning):
    """imitation or stable-baselines3 is not a version this module was written for."""


def version_problem(imitation_version: str, sb3_version: str) -> str | None:
    """The one-line warning for these versions, or None if they are the supported ones."""
    found = []
    if imitation_version != IMITATION_VERSION:
        found.append(f"imitation {imitation_version}")
    if not sb3_version.startswith(SB3_VERSIONS):
        found.append(f"stable-baselines3 {sb3_version}")
    if not found:
        return None
    return (f"l2l_gail's GAIL mode is written for imitation {IMITATION_VERSION} and "
            f"stable-baselines3 {SB3_VERSIONS}x, found {' and '.join(found)}: training may fail or "
            "a resumed run may differ; install the versions pyproject.toml pins")


def check_versions() -> None:
    """Warn (:class:`CompatibilityWarning`) if the installed versions are not the supported ones."""
    problem = version_problem(imitation.__version__, stable_baselines3.__version__)
    if problem is not None:
        warnings.warn(problem, CompatibilityWarning, stacklevel=2)


check_versions()


# ----------------------------------------------------------------------------- imitation
class ImitationGAIL(GAIL):
    """imitation's :class:`~imitation.algorithms.adversarial.gail.GAIL` with public names for the
    private state the trainers of :mod:`l2l_gail.gail.methods` read and write.

    Also turns imitation's private expert-sampling hook into :meth:`next_expert_batch`, which a
    subclass may override (by default it is imitation's own ``DataLoader`` iterator).

    Args:
        policy_log_prob: whether each discriminator batch carries the generator's log-probability
            of its actions, as imitation computes it. GAIL's discriminator never reads it (AIRL's
            does), but computing it runs the policy in the mode stable-baselines3 left it in,
            training mode after PPO's update, so with observation normalisation every batch's rows
            (half of them expert) update the generator's running statistics. False skips the
            pass: the statistics then see only PPO's own updates on generator samples.
        **kwargs: passed to ``GAIL``.
    """

    def __init__(self, *, policy_log_prob: bool = True, **kwargs: Any) -> None:
        self.policy_log_prob = policy_log_prob
        super().__init__(**kwargs)

    def _get_log_policy_act_prob(self, obs_th: torch.Tensor, acts_th: torch.Tensor) -> torch.Tensor | None:
        # imitation's _make_disc_train_batches accepts None (its policies other than SB3's give it)
        return super()._get_log_policy_act_prob(obs_th, acts_th) if self.policy_log_prob else None

    @property
    def discriminator(self) -> RewardNet:
        """The discriminator: its logits are high for expert transitions."""
        return self._reward_net

    @property
    def disc_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of the discriminator (``disc_opt_cls(params, **disc_opt_kwargs)``)."""
        return self._disc_opt

    @property
    def disc_step(self) -> int:
        """Discriminator updates so far (imitation logs under this step)."""
        return int(self._disc_step)

    @disc_step.setter
    def disc_step(self, value: int) -> None:
        self._disc_step = value

    @property
    def global_step(self) -> int:
        """Generator rounds so far."""
        return int(self._global_step)

    @global_step.setter
    def global_step(self, value: int) -> None:
        self._global_step = value

    def disc_batches(self, expert_samples: Mapping[str, Any] | None = None,
                     gen_samples: Mapping[str, Any] | None = None) -> Iterator[Mapping[str, Any]]:
        """imitation's discriminator minibatches of one update: expert rows first, then as many
        generator rows; fresh expert and replay-buffer samples where none are given.

        Raises:
            RuntimeError: no ``gen_samples`` and an empty replay buffer.
            ValueError: the sample counts differ from ``demo_batch_size``.
        """
        return self._make_disc_train_batches(expert_samples=expert_samples, gen_samples=gen_samples)

    def next_expert_batch(self) -> Mapping[str, np.ndarray]:
        """``demo_batch_size`` expert transitions for the next discriminator batch."""
        return super()._next_expert_batch()

    def _next_expert_batch(self) -> Mapping[str, np.ndarray]:
        return self.next_expert_batch()

    def replay_buffer_state(self) -> dict[str, Any]:
        """The generator replay buffer as tensors and plain data.

        Its ``infos`` (an object array of dicts) are left out: the discriminator reads only
        observations, actions, next observations and dones.
        """
        buffer = self._gen_replay_buffer._buffer
        return {"arrays": {k: torch.from_numpy(v.copy()) for k, v in buffer._arrays.items()
                           if v.dtype != object},
                "idx": buffer._idx, "n_data": buffer._n_data}

    def load_replay_buffer_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`replay_buffer_state` into a buffer of the same capacity."""
        buffer = self._gen_replay_buffer._buffer
        for key, value in state["arrays"].items():
            buffer._arrays[key][...] = value.numpy()
        buffer._idx, buffer._n_data = state["idx"], state["n_data"]

    def newest_generator_rows(self, n: int) -> dict[str, np.ndarray]:
        """The ``n`` generator transitions the replay buffer stored last (all it holds if fewer),
        as ``obs``, ``acts``, ``next_obs`` and ``dones`` arrays."""
        buffer = self._gen_replay_buffer._buffer
        n = min(n, buffer._n_data)
        idx = (buffer._idx - n + np.arange(n)) % buffer.capacity
        return {k: buffer._arrays[k][idx] for k in ("obs", "acts", "next_obs", "dones")}

    def reward_wrapper_state(self) -> dict[str, Any]:
        """What the learned-reward wrapper of the training environments remembers: the learned
        return of each running episode and of the recent finished ones (which imitation logs as
        ``rollout/ep_rew_wrapped_mean``)."""
        wrapper = self.venv_wrapped
        return {"episode_rewards": [float(r) for r in wrapper.episode_rewards],
                "running": torch.from_numpy(wrapper._cumulative_rew.copy())}

    def load_reward_wrapper_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`reward_wrapper_state`."""
        wrapper = self.venv_wrapped
        wrapper.episode_rewards.clear()
        wrapper.episode_rewards.extend(state["episode_rewards"])
        wrapper._cumulative_rew[...] = state["running"].numpy()


# ----------------------------------------------------------------------------- stable-baselines3
def n_updates(algo: BaseAlgorithm) -> int:
    """The algorithm's update counter (PPO's epochs; TD3 schedules its delayed updates by it)."""
    return int(algo._n_updates)


def set_n_updates(algo: BaseAlgorithm, value: int) -> None:
    """Restore :func:`n_updates`."""
    algo._n_updates = value


def episode_num(algo: BaseAlgorithm) -> int:
    """Episodes an off-policy algorithm has completed (its train-frequency unit may be episodes)."""
    return int(algo._episode_num)


def set_episode_num(algo: BaseAlgorithm, value: int) -> None:
    """Restore :func:`episode_num`."""
    algo._episode_num = value


def episode_history(algo: BaseAlgorithm) -> dict[str, list[Any]]:
    """The recent episodes behind SB3's logged rollout means (``rollout/ep_rew_mean``,
    ``ep_len_mean``, ``success_rate``), as plain data: Monitor's records with numpy scalars made
    floats, and the successes."""
    return {"episodes": [{k: float(v) for k, v in info.items()} for info in algo.ep_info_buffer or ()],
            "successes": [bool(x) for x in algo.ep_success_buffer or ()]}


def load_episode_history(algo: BaseAlgorithm, state: Mapping[str, Any]) -> None:
    """Restore :func:`episode_history` (windows as long as the algorithm's)."""
    algo.ep_info_buffer = deque(state["episodes"], maxlen=algo._stats_window_size)
    algo.ep_success_buffer = deque(state["successes"], maxlen=algo._stats_window_size)


def torch_variables(algo: BaseAlgorithm) -> list[str]:
    """Names of the tensors (beside the state dicts) that SB3's own ``save`` stores, e.g. SAC's
    entropy coefficient."""
    _, variables = algo._get_torch_save_params()
    return list(variables or ())


def forget_last_obs(algo: BaseAlgorithm) -> None:
    """Make the next ``learn(reset_num_timesteps=False)`` reset the environments (SB3 only does
    when it holds no last observation)."""
    algo._last_obs = None


def progress_remaining(algo: BaseAlgorithm) -> float:
    """The fraction of ``learn``'s budget left, the argument of SB3's schedules (clip range,
    learning rate)."""
    return float(algo._current_progress_remaining)


def rollout_samples(buffer: RolloutBuffer, indices: np.ndarray) -> RolloutBufferSamples:
    """The rows ``indices`` of a filled rollout buffer, as PPO's minibatches hold them
    (observations, actions, old values and log-probabilities, advantages, returns)."""
    return buffer._get_samples(indices)

