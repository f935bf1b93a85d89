"""The learned policy optimizer's held-out objective is PPO's own loss, on its own minibatches.

``ppo_loss`` is checked against stable-baselines3's ``PPO.train`` itself: SB3 trains on one
rollout with a single minibatch per epoch, an Adam that records the parameters and gradients of
every step stands in for its optimizer, and at the last step (where the clip range binds) SB3's
logged loss and its gradient must be ``ppo_loss``'s at the recorded parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import Tensor

from l2l_gail.gail import compat
from l2l_gail.gail.phi_init import adam_clone
from l2l_gail.gail.policy import L2LPPO, EvaluateActions, LookaheadPolicyOptimizer, ppo_loss
from l2l_gail.runs import global_rng_state

N_ENVS, N_STEPS = 2, 32
ROWS = N_ENVS * N_STEPS


class RecordingAdam(torch.optim.Adam):
    """Adam that keeps each step's parameters and gradients (before the step)."""

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.seen: list[tuple[list[Tensor], list[Tensor]]] = []

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        params = self.param_groups[0]["params"]
        self.seen.append(([p.detach().clone() for p in params], [p.grad.detach().clone() for p in params]))
        return super().step(closure)


def venv(env_id: str) -> DummyVecEnv:
    env = DummyVecEnv([lambda: gym.make(env_id) for _ in range(N_ENVS)])
    env.seed(0)
    return env


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])  # continuous, discrete actions
def test_ppo_loss_is_sb3s_loss(env_id: str) -> None:
    clip = 0.02
    model = PPO("MlpPolicy", venv(env_id), n_steps=N_STEPS, batch_size=ROWS, n_epochs=4, clip_range=clip,
                ent_coef=0.01, vf_coef=0.5, learning_rate=1e-2, max_grad_norm=1e9, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16, 16], "optimizer_class": RecordingAdam})
    model.learn(total_timesteps=ROWS)
    optimizer = model.policy.optimizer
    assert isinstance(optimizer, RecordingAdam) and len(optimizer.seen) == 4  # one minibatch an epoch
    names = [name for name, _ in model.policy.named_parameters()]
    values, grads = optimizer.seen[-1]
    params = {f"policy.{n}": v.requires_grad_() for n, v in zip(names, values, strict=True)}
    data = compat.rollout_samples(model.rollout_buffer, np.arange(ROWS))
    loss = ppo_loss(model, EvaluateActions(model.policy), params, data)
    torch.testing.assert_close(loss.item(), model.logger.name_to_value["train/loss"], rtol=1e-5, atol=1e-7)
    ours = torch.autograd.grad(loss, list(params.values()))
    for name, a, b in zip(names, ours, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7, msg=name)
    with torch.no_grad():  # the clipped branch of the surrogate is exercised
        actions = data.actions.long().flatten() if env_id == "CartPole-v1" else data.actions
        _, log_prob, _ = torch.func.functional_call(EvaluateActions(model.policy), params,
                                                    (data.observations, actions))
        assert bool(((log_prob - data.old_log_prob).exp() - 1).abs().gt(clip).any())


def l2l_ppo(seed: int, **extra: Any) -> L2LPPO:
    policy_kwargs = {"net_arch": [16, 16], "optimizer_class": LookaheadPolicyOptimizer,
                     "optimizer_kwargs": {"learned": adam_clone()[0]}, **extra}
    return L2LPPO("MlpPolicy", venv("Pendulum-v1"), n_steps=N_STEPS, batch_size=16, n_epochs=2, seed=seed,
                  device="cpu", policy_kwargs=policy_kwargs)


def test_heldout_minibatch_comes_from_its_own_seeded_generator() -> None:
    """``heldout_loss`` is ``ppo_loss`` on ``batch_size`` rows drawn by ``heldout_rng``: seeded
    by the algorithm's seed, restored by ``load_state_dict``, and apart from numpy's global RNG."""
    model = l2l_ppo(seed=3)
    model.learn(total_timesteps=ROWS)
    params = {n: p.detach() for n, p in EvaluateActions(model.policy).named_parameters()}
    saved = copy.deepcopy(model.state_dict())
    expected_rows = copy.deepcopy(model.heldout_rng).integers(ROWS, size=model.batch_size)
    numpy_state = global_rng_state()["numpy"]
    loss = model.heldout_loss(params)
    assert global_rng_state()["numpy"] == numpy_state
    data = compat.rollout_samples(model.rollout_buffer, expected_rows)
    assert torch.equal(loss, ppo_loss(model, EvaluateActions(model.policy), params, data))
    model.load_state_dict(saved)
    assert torch.equal(model.heldout_loss(params), loss)
    same_seed, other_seed = l2l_ppo(seed=3), l2l_ppo(seed=4)
    draws = [m.heldout_rng.integers(1 << 30, size=4).tolist() for m in (same_seed, other_seed)]
    assert draws[0] == l2l_ppo(seed=3).heldout_rng.integers(1 << 30, size=4).tolist() != draws[1]


def test_heldout_rows_leave_the_observation_statistics_alone() -> None:
    """With ``--obs-norm`` (imitation's RunningNorm in the features extractor), only PPO's own
    minibatches update the running statistics: the held-out loss runs the policy in eval mode and
    restores its mode."""
    from imitation.policies.base import NormalizeFeaturesExtractor
    from imitation.util import networks

    model = l2l_ppo(seed=3, features_extractor_class=NormalizeFeaturesExtractor,
                    features_extractor_kwargs={"normalize_class": networks.RunningNorm})
    model.learn(total_timesteps=ROWS)
    norm = next(m for m in model.policy.modules() if isinstance(m, networks.RunningNorm))
    params = {n: p.detach() for n, p in EvaluateActions(model.policy).named_parameters()}
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    assert before["count"] > 0  # PPO's minibatches did update them
    model.policy.set_training_mode(True)
    model.heldout_loss(params)
    assert all(torch.equal(before[k], v) for k, v in norm.state_dict().items())
    assert model.policy.training
