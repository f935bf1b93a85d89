"""GAIL and its two stabilised variants, as small subclasses of ``imitation``'s GAIL trainer.

GAIL (Ho & Ermon, *Generative Adversarial Imitation Learning*, NeurIPS 2016, arXiv 1606.03476)
solves ``min_pi max_D E_expert[log D] + E_pi[log(1 - D)]``: a discriminator ``D`` tells expert
from generator transitions, and the generator (here stable-baselines3's PPO) is trained on the
reward ``-log(1 - D)``. The discriminator is the follower of this min-max problem, and the usual
failure is that it over-fits: its logits grow, the reward saturates, and the generator's return
collapses. Three ways to step the discriminator:

* :class:`GAILTrainer` (``gail``) -- Adam, as in ``imitation``;
* :class:`GAILGPTrainer` (``gail-gp``) -- Adam on the loss plus a gradient penalty at
  interpolates of expert and generator inputs (Gulrajani et al. 2017, arXiv 1704.00028, as used
  for adversarial imitation by Kostrikov et al. 2019, *Discriminator-Actor-Critic*, arXiv
  1809.02925), the standard stabiliser and our strongest baseline;
* :class:`L2LGAILTrainer` (``l2l-gail``) -- the learned optimizer ``g_phi`` of
  :mod:`l2l_gail.core`, with ``phi`` trained online on the discriminator loss measured on a
  *fresh* expert + generator batch after each step (DESIGN.md, section 3: our reading of the
  extension claimed in Jiang et al. 2021, arXiv 1811.01213).

Optionally the generator's PPO step also goes through a learned optimizer
(:class:`L2LPPO` with :class:`LookaheadPolicyOptimizer`), ``phi`` then being trained on the
PPO loss of another minibatch of the same rollout.

Only the discriminator update and the expert sampling are overridden; rollouts, the replay
buffer, the reward wrapper and the batch layout are ``imitation``'s own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from imitation.algorithms.adversarial.common import compute_train_stats
from imitation.algorithms.adversarial.gail import GAIL
from imitation.data import types
from imitation.util import networks
from stable_baselines3 import PPO
from torch import Tensor, nn
from torch.func import functional_call

from l2l_gail.core import LearnedOptimizer, LookaheadStats, Params, UpdateRule

Batch = Mapping[str, Any]
"""One discriminator batch as ``imitation`` builds it: ``state``, ``action``, ``next_state``,
``done`` and ``labels_expert_is_one`` tensors, expert rows first, then as many generator rows."""
EXPERT_KEYS = ("obs", "acts", "next_obs", "dones")
META_OBJECTIVES = ("heldout", "heldout-gp")


@dataclasses.dataclass
class DiscObjective:
    """The discriminator's objective on one batch and what the statistics need from it."""

    total: Tensor
    """What the update minimises (the cross-entropy plus any regulariser)."""
    bce: Tensor
    """The binary cross-entropy of expert-vs-generator classification (GAIL's loss)."""
    logits: Tensor
    """The logits (high = expert), one per row."""
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    """Further statistics (e.g. the gradient penalty)."""


class GAILTrainer(GAIL):
    """``imitation``'s GAIL with an Adam discriminator: the ``gail`` baseline and the base class
    of the other methods.

    Two changes to :class:`imitation.algorithms.adversarial.gail.GAIL`, neither of which alters
    the algorithm:

    * expert batches are drawn by ``rng`` (a numpy ``Generator`` whose state is checkpointed)
      instead of a torch ``DataLoader`` whose position within its epoch cannot be saved, so
      ``--resume`` reproduces an uninterrupted run;
    * :meth:`train_disc` delegates the step to :meth:`disc_update` (the one thing the methods
      change) and also logs the mean logit of each class and the size of the update.

    Args:
        demonstrations: the expert transitions.
        rng: draws the expert batches.
        **kwargs: passed to ``GAIL`` (``demo_batch_size``, ``venv``, ``gen_algo``,
            ``reward_net``, ``disc_opt_kwargs``, ...).
    """

    def __init__(self, *, demonstrations: types.Transitions, rng: np.random.Generator,
                 **kwargs: Any) -> None:
        self.rng = rng
        super().__init__(demonstrations=demonstrations, **kwargs)

    def set_demonstrations(self, demonstrations: Any) -> None:
        if not isinstance(demonstrations, types.Transitions):
            raise TypeError("GAILTrainer takes demonstrations as imitation Transitions")
        if len(demonstrations) < self.demo_batch_size:
            raise ValueError(f"{len(demonstrations)} expert transitions are fewer than one batch "
                             f"of {self.demo_batch_size}")
        self._expert = demonstrations

    def _next_expert_batch(self) -> Mapping[str, np.ndarray]:
        idx = self.rng.choice(len(self._expert), self.demo_batch_size, replace=False)
        return {k: getattr(self._expert, k)[idx] for k in EXPERT_KEYS}

    def disc_batch(self, expert_samples: Mapping | None = None,
                   gen_samples: Mapping | None = None) -> Batch:
        """A discriminator batch: fresh expert and replay-buffer samples unless given."""
        if self.demo_minibatch_size != self.demo_batch_size:
            raise ValueError("GAILTrainer steps on whole batches: leave demo_minibatch_size unset")
        return next(iter(self._make_disc_train_batches(expert_samples=expert_samples,
                                                       gen_samples=gen_samples)))

    def disc_logits(self, batch: Batch, params: Params | None = None) -> Tensor:
        """The discriminator's logits on ``batch``, with ``params`` substituted if given."""
        args = (batch["state"], batch["action"], batch["next_state"], batch["done"])
        if params is None:
            return self._reward_net(*args)
        return functional_call(self._reward_net, params, args)

    def disc_objective(self, batch: Batch, params: Params | None = None) -> DiscObjective:
        """GAIL's discriminator loss: binary cross-entropy, expert labelled 1."""
        logits = self.disc_logits(batch, params)
        bce = F.binary_cross_entropy_with_logits(logits, batch["labels_expert_is_one"].float())
        return DiscObjective(total=bce, bce=bce, logits=logits)

    def gradient_penalty(self, batch: Batch, params: Params | None = None) -> Tensor:
        """``E[(||grad_x D(x_hat)|| - 1)^2]`` at one random interpolate ``x_hat`` per
        expert/generator pair of ``batch`` (Gulrajani et al. 2017, arXiv 1704.00028), with
        ``params`` substituted if given. The mixing weights come from torch's global RNG."""
        n = len(batch["state"]) // 2
        alpha = torch.rand(n, device=batch["state"].device)

        def mix(x: Tensor) -> Tensor:
            a = alpha.view(n, *([1] * (x.dim() - 1)))
            return (a * x[:n].float() + (1 - a) * x[n:].float()).detach().requires_grad_()

        inputs = {key: mix(batch[key]) for key in ("state", "action", "next_state")}
        # Interpolates are not data: they must not move the input normalisation's statistics.
        with networks.evaluating(self._reward_net):
            logits = self.disc_logits({**inputs, "done": batch["done"][:n]}, params)
        grads = torch.autograd.grad(logits.sum(), list(inputs.values()), create_graph=True,
                                    allow_unused=True)
        flat = torch.cat([g.flatten(1) for g in grads if g is not None], dim=1)
        return (flat.norm(dim=1) - 1).square().mean()

    def disc_update(self, batch: Batch) -> DiscObjective:
        """One step of the discriminator on ``batch``; returns the objective before the step."""
        self._disc_opt.zero_grad()
        objective = self.disc_objective(batch)
        objective.total.backward()
        self._disc_opt.step()
        return objective

    def train_disc(self, *, expert_samples: Mapping | None = None,
                   gen_samples: Mapping | None = None) -> Mapping[str, float]:
        """One discriminator update and its statistics (recorded under ``disc/``)."""
        with self.logger.accumulate_means("disc"):
            batch = self.disc_batch(expert_samples, gen_samples)
            before = [p.detach().clone() for p in self._reward_net.parameters()]
            objective = self.disc_update(batch)
            self._disc_step += 1
            with torch.no_grad():
                moved = sum(float((p - b).square().sum())
                            for p, b in zip(self._reward_net.parameters(), before, strict=True))
                labels = batch["labels_expert_is_one"]
                logits = objective.logits.detach()
                stats = dict(compute_train_stats(logits, labels, objective.bce.detach()))
                stats.update(logit_expert=float(logits[labels == 1].mean()),
                             logit_gen=float(logits[labels == 0].mean()),
                             update_norm=math.sqrt(moved), **objective.extra)
            for key, value in stats.items():
                self.logger.record(key, value)
            self.logger.dump(self._disc_step)
        return stats


class GAILGPTrainer(GAILTrainer):
    """GAIL with a gradient penalty on the discriminator (``gail-gp``).

    Adds ``gp_coef * E[(||grad_x D(x_hat)|| - 1)^2]`` at random interpolates ``x_hat`` of
    paired expert and generator inputs (Gulrajani et al. 2017, arXiv 1704.00028), as
    Discriminator-Actor-Critic does for adversarial imitation (Kostrikov et al. 2019, arXiv
    1809.02925): it keeps the discriminator smooth between the two distributions, so its
    logits -- and the generator's reward -- cannot saturate.

    Args:
        gp_coef: the penalty's weight (10 in both papers).
        **kwargs: as :class:`GAILTrainer`.
    """

    def __init__(self, *, gp_coef: float, **kwargs: Any) -> None:
        self.gp_coef = gp_coef
        super().__init__(**kwargs)

    def disc_objective(self, batch: Batch, params: Params | None = None) -> DiscObjective:
        objective = super().disc_objective(batch, params)
        penalty = self.gradient_penalty(batch, params)
        objective.total = objective.total + self.gp_coef * penalty
        objective.extra["grad_penalty"] = float(penalty.detach())
        return objective


class L2LGAILTrainer(GAILTrainer):
    """GAIL whose discriminator is stepped by a learned optimizer trained online (``l2l-gail``).

    Each update: the learned step ``theta' = theta + lr * g_phi(grad L_train(theta))`` on the
    training batch, then one Adam step on ``phi`` for the loss ``L_heldout(theta')`` on a
    *fresh* expert + generator batch (:meth:`LearnedOptimizer.lookahead_step`). A step that
    only fits the training batch raises the held-out loss, so ``phi`` is pushed away from the
    over-fitting that makes GAIL's reward collapse (DESIGN.md, section 3).

    Args:
        learned: the learned optimizer (its steps are in units of ``disc_lr``, see
            :mod:`l2l_gail.gail.phi_init`); shared, so the caller can save it.
        disc_lr: multiplies the learned steps.
        meta_lr: Adam's learning rate on ``phi`` (online look-ahead training diverged at 3e-3
            and above in the core's tests with a step scale of 0.1).
        meta_every: train ``phi`` on every ``meta_every``-th update (the others only apply it).
        meta_objective: ``heldout`` -- the cross-entropy on the fresh batch (DESIGN.md);
            ``heldout-gp`` -- plus ``gp_coef`` times the gradient penalty on the fresh batch, so
            ``phi`` is rewarded for steps that keep the discriminator smooth, not only accurate
            (measured on InvertedPendulum: the plain held-out loss trains ``phi`` towards ever
            larger steps, until the logits saturate and the generator's reward vanishes).
        gp_coef: the penalty's weight in ``heldout-gp``.
        **kwargs: as :class:`GAILTrainer`.
    """

    def __init__(self, *, learned: UpdateRule, disc_lr: float, meta_lr: float,
                 meta_every: int = 1, meta_objective: str = "heldout", gp_coef: float = 10.0,
                 **kwargs: Any) -> None:
        if meta_every < 1:
            raise ValueError(f"meta_every must be >= 1, got {meta_every}")
        if meta_objective not in META_OBJECTIVES:
            raise ValueError(f"meta_objective must be one of {META_OBJECTIVES}, got {meta_objective!r}")
        self.meta_every, self.meta_objective, self.gp_coef = meta_every, meta_objective, gp_coef
        super().__init__(disc_opt_cls=LearnedOptimizer,
                         disc_opt_kwargs={"lr": disc_lr, "learned": learned, "reference_lr": 1.0,
                                          "allow_untrained": True},  # phi is trained online
                         **kwargs)
        self.meta_opt = torch.optim.Adam(self.learned.parameters(), lr=meta_lr)

    @property
    def learned(self) -> UpdateRule:
        """The discriminator's learned optimizer ``g_phi``."""
        return self._disc_opt.learned  # type: ignore[attr-defined, no-any-return]

    def disc_update(self, batch: Batch) -> DiscObjective:
        if self._disc_step % self.meta_every:
            return super().disc_update(batch)
        heldout = self.disc_batch()
        seen: list[DiscObjective] = []

        def train_loss(params: Params) -> Tensor:
            seen.append(self.disc_objective(batch, params))
            return seen[-1].total

        def heldout_loss(params: Params) -> Tensor:
            # Held-out rows are evaluation data: keep them out of the input statistics.
            with networks.evaluating(self._reward_net):
                loss = self.disc_objective(heldout, params).total
            if self.meta_objective == "heldout-gp":
                loss = loss + self.gp_coef * self.gradient_penalty(heldout, params)
            return loss

        stats = self._disc_opt.lookahead_step(self._reward_net, train_loss, heldout_loss,  # type: ignore[attr-defined]
                                              self.meta_opt)
        objective = seen[0]
        objective.extra.update(lookahead_extra(stats))
        return objective


def lookahead_extra(stats: LookaheadStats) -> dict[str, float]:
    """The look-ahead statistics TensorBoard shows under ``l2l/``."""
    return {"l2l/meta_loss": stats.meta_loss, "l2l/update_norm": stats.update_norm,
            "l2l/meta_grad_norm": stats.meta_grad_norm}


# ----------------------------------------------------------------------------- policy target
class _EvaluateActions(nn.Module):
    """Makes ``policy.evaluate_actions`` the ``forward`` that ``functional_call`` runs."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        return self.policy.evaluate_actions(obs, actions)  # type: ignore[operator, no-any-return]


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

    During :meth:`train` the optimizer's held-out loss is PPO's own loss (clipped surrogate,
    value error and entropy terms with this PPO's coefficients; Schulman et al. 2017, arXiv
    1707.06347) on a random minibatch of the current rollout other than the one being stepped
    on. The minibatch is drawn with numpy's global RNG, which the checkpoints save. Value-loss
    clipping (``clip_range_vf``) is not supported in the held-out loss.
    """

    def train(self) -> None:
        opt = self.policy.optimizer
        if not isinstance(opt, LookaheadPolicyOptimizer):
            raise TypeError("L2LPPO needs policy_kwargs optimizer_class=LookaheadPolicyOptimizer")
        if self.clip_range_vf is not None:
            raise ValueError("L2LPPO's held-out loss does not clip the value error: unset clip_range_vf")
        opt.evaluator = _EvaluateActions(self.policy)
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
        """PPO's loss on a random minibatch of the rollout, at the parameters ``params``."""
        buffer = self.rollout_buffer
        idx = np.random.randint(buffer.buffer_size * buffer.n_envs, size=self.batch_size)
        data = buffer._get_samples(idx)
        evaluator = _EvaluateActions(self.policy)
        values, log_prob, entropy = functional_call(evaluator, params, (data.observations, data.actions))
        advantages = data.advantages
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        clip = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        ratio = torch.exp(log_prob - data.old_log_prob)
        policy_loss = -torch.min(advantages * ratio,
                                 advantages * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
        value_loss = F.mse_loss(data.returns, values.flatten())
        entropy_loss = -torch.mean(-log_prob if entropy is None else entropy)
        return policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss


def _mean_stats(stats: list[LookaheadStats]) -> LookaheadStats:
    return LookaheadStats(*(float(np.mean([dataclasses.astuple(s)[i] for s in stats]))
                            for i in range(len(dataclasses.fields(LookaheadStats)))))
