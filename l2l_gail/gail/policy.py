"""The generator's learned optimizer: PPO whose policy step is ``g_phi``, trained on held-out data.

With ``--l2l-target policy`` (or ``both``), stable-baselines3's PPO steps the policy with a
:class:`LookaheadPolicyOptimizer` (injected through ``policy_kwargs``, so SB3's training loop is
untouched), and :class:`L2LPPO` gives that optimizer PPO's own loss on another minibatch of the
same rollout as the held-out objective of ``phi`` (:func:`ppo_loss`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from imitation.util import networks
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from torch import Tensor, nn
from torch.func import functional_call

from l2l_gail.core import LearnedOptimizer, LookaheadStats, Params, UpdateRule
from l2l_gail.gail import compat

HELDOUT_STREAM = 1
"""Seeds ``L2LPPO.heldout_rng`` with ``[seed, HELDOUT_STREAM]``: a stream apart from the
``default_rng(seed)`` that draws the expert batches."""


def lookahead_extra(stats: LookaheadStats) -> dict[str, float]:
    """The look-ahead statistics TensorBoard shows under ``l2l/``."""
    return {"l2l/meta_loss": stats.meta_loss, "l2l/update_norm": stats.update_norm,
            "l2l/meta_grad_norm": stats.meta_grad_norm}


class EvaluateActions(nn.Module):
    """Makes ``policy.evaluate_actions`` the ``forward`` that ``functional_call`` runs (its
    parameters are the policy's, prefixed ``policy.``)."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        return self.policy.evaluate_actions(obs, actions)


def ppo_loss(algo: PPO, evaluator: EvaluateActions, params: Params, data: RolloutBufferSamples) -> Tensor:
    """PPO's loss on the minibatch ``data`` at the policy parameters ``params``, term for term as
    ``stable_baselines3.PPO.train`` computes it (Schulman et al. 2017, arXiv 1707.06347): the
    clipped surrogate with ``algo``'s clip range at its current progress, plus ``ent_coef`` times
    the entropy loss and ``vf_coef`` times the value error (``tests/test_gail_policy.py`` checks
    value and gradient against SB3's own update). Value clipping (``clip_range_vf``) is not
    supported.
    """
    actions = data.actions
    if isinstance(algo.action_space, spaces.Discrete):
        actions = actions.long().flatten()  # SB3 stores discrete actions as floats
    values, log_prob, entropy = functional_call(evaluator, params, (data.observations, actions))
    advantages = data.advantages
    if algo.normalize_advantage and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    clip = algo.clip_range(compat.progress_remaining(algo))  # type: ignore[operator]
    ratio = torch.exp(log_prob - data.old_log_prob)
    policy_loss = -torch.min(advantages * ratio, advantages * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
    value_loss = F.mse_loss(data.returns, values.flatten())
    entropy_loss = -torch.mean(-log_prob if entropy is None else entropy)
    return policy_loss + algo.ent_coef * entropy_loss + algo.vf_coef * value_loss


class LookaheadPolicyOptimizer(LearnedOptimizer):
    """A :class:`LearnedOptimizer` for SB3's ``optimizer_class`` that trains ``phi`` as it steps.

    stable-baselines3 computes and clips the gradient, then calls :meth:`step`. When
    :class:`L2LPPO` has attached a held-out loss, the step is a look-ahead: the learned update
    is applied functionally, ``phi`` takes one Adam step on the held-out loss of the updated
    parameters, and those parameters are written back. (The core's look-ahead wants a training
    loss to differentiate; ``sum(theta * g)`` has exactly SB3's clipped gradient ``g``.)

    Args:
        params: the policy's parameters (SB3 passes them).
        lr: SB3's learning rate (the learned steps are in units of it, ``reference_lr = 1``).
        learned: ``g_phi``.
        meta_lr: Adam's learning rate on ``phi``.
        meta_every: train ``phi`` on every ``meta_every``-th step.
    """

    def __init__(self, params: Any, lr: float = 3e-4, *, learned: UpdateRule | None = None,
                 meta_lr: float = 1e-3, meta_every: int = 1) -> None:
        super().__init__(params, lr, learned=learned, reference_lr=1.0, allow_untrained=True)
        self.meta_opt = torch.optim.Adam(self.learned.parameters(), lr=meta_lr)
        self.meta_every = meta_every
        self.steps_taken = 0
        self.evaluator: nn.Module | None = None
        self.heldout_loss: Callable[[Params], Tensor] | None = None
        self.stats: list[LookaheadStats] = []

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        meta = self.heldout_loss is not None and self.steps_taken % self.meta_every == 0
        self.steps_taken += 1
        if not meta or self.evaluator is None or self.heldout_loss is None:
            return super().step(closure)
        grads = {n: p.grad.detach().clone() for n, p in self.evaluator.named_parameters()
                 if p.grad is not None}

        def train_loss(params: Params) -> Tensor:
            return sum(((params[n] * g).sum() for n, g in grads.items() if n in params),
                       start=torch.zeros(()))

        self.stats.append(self.lookahead_step(self.evaluator, train_loss, self.heldout_loss,
                                              self.meta_opt))
        return None

    def state_dict(self) -> dict[str, Any]:
        """:class:`LearnedOptimizer`'s state plus the meta-optimizer's and the step count."""
        return {**super().state_dict(), "meta_opt": self.meta_opt.state_dict(),
                "steps_taken": self.steps_taken}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state_dict = dict(state_dict)
        meta_opt = state_dict.pop("meta_opt", None)
        self.steps_taken = int(state_dict.pop("steps_taken", 0))
        super().load_state_dict(state_dict)
        if meta_opt is not None:
            self.meta_opt.load_state_dict(meta_opt)


class L2LPPO(PPO):
    """PPO whose optimizer, a :class:`LookaheadPolicyOptimizer`, trains ``phi`` on held-out data.

    During :meth:`train` the optimizer's held-out loss is :func:`ppo_loss` on a random minibatch
    of the current rollout: ``batch_size`` rows drawn with replacement, independently of the
    minibatch being stepped on, by ``heldout_rng``. That generator is seeded with the
    algorithm's seed (on a stream of its own) and saved by :meth:`state_dict`, so the draws
    neither depend on nor move numpy's global RNG.
    """

    heldout_rng: np.random.Generator

    def set_random_seed(self, seed: int | None = None) -> None:
        """SB3's seeding (called with the constructor's ``seed``), and ``heldout_rng``'s."""
        super().set_random_seed(seed)
        self.heldout_rng = np.random.default_rng(None if seed is None else [seed, HELDOUT_STREAM])

    def train(self) -> None:
        opt = self.policy.optimizer
        if not isinstance(opt, LookaheadPolicyOptimizer):
            raise TypeError("L2LPPO needs policy_kwargs optimizer_class=LookaheadPolicyOptimizer")
        if self.clip_range_vf is not None:
            raise ValueError("L2LPPO's held-out loss does not clip the value error: unset clip_range_vf")
        opt.evaluator = EvaluateActions(self.policy)
        opt.heldout_loss = self.heldout_loss
        opt.stats.clear()
        try:
            super().train()
        finally:
            opt.evaluator, opt.heldout_loss = None, None
        if opt.stats:
            for key, value in lookahead_extra(_mean_stats(opt.stats)).items():
                self.logger.record(f"train/{key.replace('/', '_')}", value)

    def heldout_loss(self, params: Params) -> Tensor:
        """:func:`ppo_loss` on a random minibatch of the rollout, at the parameters ``params``.

        The policy is in eval mode meanwhile, so that with ``--obs-norm`` the held-out rows do not
        update the running observation statistics (only PPO's own minibatches do, as in imitation).
        """
        buffer = self.rollout_buffer
        idx = self.heldout_rng.integers(buffer.buffer_size * buffer.n_envs, size=self.batch_size)
        with networks.evaluating(self.policy):
            return ppo_loss(self, EvaluateActions(self.policy), params, compat.rollout_samples(buffer, idx))

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs beyond the policy and its optimizer: ``heldout_rng``'s state."""
        return {"heldout_rng": self.heldout_rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.heldout_rng.bit_generator.state = state["heldout_rng"]


def _mean_stats(stats: list[LookaheadStats]) -> LookaheadStats:
    return LookaheadStats(*(float(np.mean([dataclasses.astuple(s)[i] for s in stats]))
                            for i in range(len(dataclasses.fields(LookaheadStats)))))
