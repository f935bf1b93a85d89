"""GAIL and its two stabilised variants, as small subclasses of ``imitation``'s GAIL trainer.

GAIL (Ho & Ermon, *Generative Adversarial Imitation Learning*, NeurIPS 2016, arXiv 1606.03476)
solves ``min_pi max_D E_expert[log D] + E_pi[log(1 - D)]``: a discriminator ``D`` tells expert
from generator transitions, and the generator (here stable-baselines3's PPO) is trained on the
reward ``-log(1 - D)``. The discriminator is the follower of this min-max problem, and the usual
failure is that it over-fits: its logits grow, the reward saturates, and the generator's return
collapses. Three ways to step the discriminator, the ``--method`` choices:

* :class:`GAILTrainer` (``gail``) -- Adam, as in ``imitation``;
* :class:`GAILGPTrainer` (``gail-gp``) -- Adam on the loss plus a gradient penalty at
  interpolates of expert and generator inputs (Gulrajani et al. 2017, arXiv 1704.00028, as used
  for adversarial imitation by Kostrikov et al. 2019, *Discriminator-Actor-Critic*, arXiv
  1809.02925), the standard stabiliser and our strongest baseline;
* :class:`L2LGAILTrainer` (``l2l-gail``) -- the learned optimizer ``g_phi`` of
  :mod:`l2l_gail.core`, with ``phi`` trained online on the discriminator loss measured on a
  *fresh* expert + generator batch after each step (``docs/design.md``, "The GAIL mode": our
  reading of the extension claimed in Jiang et al. 2021, arXiv 1811.01213).

Optionally the generator's PPO step also goes through a learned optimizer
(:mod:`l2l_gail.gail.policy`).

Only the discriminator update and the expert sampling are overridden; rollouts, the replay
buffer, the reward wrapper and the batch layout are ``imitation``'s own, and so is the trainer
contract (``tests/test_gail_contract.py``). Each trainer owns its training state
(:meth:`GAILTrainer.state_dict`), as tensors and plain data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from imitation.algorithms.adversarial.common import compute_train_stats
from imitation.data import types
from imitation.util import networks
from torch import Tensor
from torch.func import functional_call

from l2l_gail.core import LearnedOptimizer, Params, UpdateRule
from l2l_gail.gail import compat
from l2l_gail.gail.config import META_OBJECTIVES, MetaObjective
from l2l_gail.gail.policy import L2LPPO, LookaheadPolicyOptimizer, lookahead_extra

Batch = Mapping[str, Any]
"""One discriminator batch as ``imitation`` builds it: ``state``, ``action``, ``next_state``,
``done`` and ``labels_expert_is_one`` tensors, expert rows first, then as many generator rows."""
EXPERT_KEYS = ("obs", "acts", "next_obs", "dones")


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


class GAILTrainer(compat.ImitationGAIL):
    """``imitation``'s GAIL with an Adam discriminator: the ``gail`` baseline and the base class
    of the other methods.

    Three changes to :class:`imitation.algorithms.adversarial.gail.GAIL`, none of which alters
    the algorithm:

    * expert batches are drawn by ``rng`` (a numpy ``Generator`` whose state is checkpointed)
      instead of a torch ``DataLoader`` whose position within its epoch cannot be saved, so
      ``--resume`` reproduces an uninterrupted run; the demonstrations must therefore be
      ``Transitions``;
    * :meth:`train_disc` delegates the step to :meth:`disc_update` (the one thing the methods
      change), steps on whole batches (no ``demo_minibatch_size``), and also logs the mean
      logit of each class and the size of the update;
    * :meth:`state_dict` / :meth:`load_state_dict` hold every piece of its training state.

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
        if self.demo_minibatch_size != self.demo_batch_size:
            raise ValueError("GAILTrainer steps on whole batches: leave demo_minibatch_size unset")

    def set_demonstrations(self, demonstrations: Any) -> None:
        if not isinstance(demonstrations, types.Transitions):
            raise TypeError("GAILTrainer takes demonstrations as imitation Transitions")
        if len(demonstrations) < self.demo_batch_size:
            raise ValueError(f"{len(demonstrations)} expert transitions are fewer than one batch "
                             f"of {self.demo_batch_size}")
        self._expert = demonstrations

    def next_expert_batch(self) -> Mapping[str, np.ndarray]:
        idx = self.rng.choice(len(self._expert), self.demo_batch_size, replace=False)
        return {k: getattr(self._expert, k)[idx] for k in EXPERT_KEYS}

    def disc_batch(self, expert_samples: Mapping | None = None,
                   gen_samples: Mapping | None = None) -> Batch:
        """A discriminator batch: the given samples, or fresh expert and replay-buffer ones."""
        return next(iter(self.disc_batches(expert_samples, gen_samples)))

    def disc_logits(self, batch: Batch, params: Params | None = None) -> Tensor:
        """The discriminator's logits on ``batch``, with ``params`` substituted if given."""
        args = (batch["state"], batch["action"], batch["next_state"], batch["done"])
        if params is None:
            return self.discriminator(*args)
        return functional_call(self.discriminator, params, args)

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
        with networks.evaluating(self.discriminator):
            logits = self.disc_logits({**inputs, "done": batch["done"][:n]}, params)
        grads = torch.autograd.grad(logits.sum(), list(inputs.values()), create_graph=True,
                                    allow_unused=True)
        flat = torch.cat([g.flatten(1) for g in grads if g is not None], dim=1)
        return (flat.norm(dim=1) - 1).square().mean()

    def disc_update(self, batch: Batch, heldout_batch: Callable[[], Batch]) -> DiscObjective:
        """One step of the discriminator on ``batch``; returns the objective before the step.

        ``heldout_batch`` draws another batch from the same sources as ``batch`` (for methods
        that evaluate their step on one; Adam does not call it).
        """
        self.disc_optimizer.zero_grad()
        objective = self.disc_objective(batch)
        objective.total.backward()
        self.disc_optimizer.step()
        return objective

    def train_disc(self, *, expert_samples: Mapping | None = None,
                   gen_samples: Mapping | None = None) -> Mapping[str, float]:
        """One discriminator update and its statistics (recorded under ``disc/``).

        As in ``imitation``: the given samples (exactly ``demo_batch_size`` each), else fresh
        expert samples and ``demo_batch_size`` rows of the generator replay buffer.
        """
        with self.logger.accumulate_means("disc"):
            batch = self.disc_batch(expert_samples, gen_samples)
            before = [p.detach().clone() for p in self.discriminator.parameters()]
            objective = self.disc_update(batch, lambda: self.disc_batch(expert_samples, gen_samples))
            self.disc_step += 1
            with torch.no_grad():
                moved = sum(float((p - b).square().sum())
                            for p, b in zip(self.discriminator.parameters(), before, strict=True))
                labels = batch["labels_expert_is_one"]
                logits = objective.logits.detach()
                stats = dict(compute_train_stats(logits, labels, objective.bce.detach()))
                stats.update(logit_expert=float(logits[labels == 1].mean()),
                             logit_gen=float(logits[labels == 0].mean()),
                             update_norm=math.sqrt(moved), **objective.extra)
            for key, value in stats.items():
                self.logger.record(key, value)
            self.logger.dump(self.disc_step)
        return stats

    def learned_rules(self) -> dict[str, UpdateRule]:
        """The learned optimizers by what they step (``discriminator``, ``policy``)."""
        opt = self.gen_algo.policy.optimizer
        return {"policy": opt.learned} if isinstance(opt, LookaheadPolicyOptimizer) else {}

    def state_dict(self) -> dict[str, Any]:
        """Every piece of training state that the constructor does not rebuild identically, as
        tensors and plain data (a checkpoint of it loads with ``weights_only=True``): the
        generator's policy, optimizer and counters, the discriminator (with its input
        normalisation), its optimizer, the replay buffer, imitation's counters, the expert
        sampler, the recent episodes behind the logged rollout means and an
        :class:`~l2l_gail.gail.policy.L2LPPO`'s own state. The global RNGs,
        shared with everything else in the process, are the caller's.
        """
        gen = self.gen_algo
        state: dict[str, Any] = {
            "policy": gen.policy.state_dict(),
            "policy_optimizer": gen.policy.optimizer.state_dict(),
            "ppo": {"num_timesteps": gen.num_timesteps, "n_updates": compat.n_updates(gen)},
            "discriminator": self.discriminator.state_dict(),
            "disc_optimizer": self.disc_optimizer.state_dict(),
            "replay_buffer": self.replay_buffer_state(),
            "imitation": {"global_step": self.global_step, "disc_step": self.disc_step},
            "expert_rng": self.rng.bit_generator.state,
            "logged": {"episodes": compat.episode_history(gen), "wrapped": self.reward_wrapper_state()},
        }
        if isinstance(gen, L2LPPO):
            state["l2l_ppo"] = gen.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into a trainer built with the same arguments."""
        gen = self.gen_algo
        gen.policy.load_state_dict(state["policy"])
        gen.policy.optimizer.load_state_dict(state["policy_optimizer"])
        gen.num_timesteps = int(state["ppo"]["num_timesteps"])
        compat.set_n_updates(gen, int(state["ppo"]["n_updates"]))
        self.discriminator.load_state_dict(state["discriminator"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.load_replay_buffer_state(state["replay_buffer"])
        self.global_step = state["imitation"]["global_step"]
        self.disc_step = state["imitation"]["disc_step"]
        self.rng.bit_generator.state = state["expert_rng"]
        if "logged" in state:  # not in checkpoints before it existed
            compat.load_episode_history(gen, state["logged"]["episodes"])
            self.load_reward_wrapper_state(state["logged"]["wrapped"])
        if isinstance(gen, L2LPPO) and "l2l_ppo" in state:  # not in checkpoints before it existed
            gen.load_state_dict(state["l2l_ppo"])


class GAILGPTrainer(GAILTrainer):
    """GAIL with a gradient penalty on the discriminator (``gail-gp``).

    Adds ``gp_coef * E[(||grad_x D(x_hat)|| - 1)^2]`` at random interpolates ``x_hat`` of
    paired expert and generator inputs (Gulrajani et al. 2017, arXiv 1704.00028), as
    Discriminator-Actor-Critic does for adversarial imitation (Kostrikov et al. 2019, arXiv
    1809.02925): it keeps the discriminator smooth between the two distributions, so its
    logits -- and the generator's reward -- cannot saturate. The update minimises the
    cross-entropy *plus* the penalty, so the cross-entropy alone may rise on a step.

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
    *fresh* batch (:meth:`LearnedOptimizer.lookahead_step`). A step that only fits the training
    batch raises the held-out loss, so ``phi`` is pushed away from the over-fitting that makes
    GAIL's reward collapse (``docs/design.md``, "The GAIL mode").

    The held-out batch comes from the same sources as the training batch: fresh expert samples
    and fresh replay-buffer rows by default; where the caller of :meth:`train_disc` supplies
    ``expert_samples`` or ``gen_samples``, those same samples (the caller defines the data, and
    there are no others to hold out -- with both supplied, ``phi``'s objective is the loss after
    the step on the training batch itself).

    Args:
        learned: the learned optimizer (its steps are in units of ``disc_lr``, see
            :mod:`l2l_gail.gail.phi_init`); shared, so the caller can save it.
        disc_lr: multiplies the learned steps.
        meta_lr: Adam's learning rate on ``phi`` (online look-ahead training diverged at 3e-3
            and above in the core's tests with a step scale of 0.1).
        meta_every: train ``phi`` on every ``meta_every``-th update (the others only apply it).
        meta_objective: ``heldout`` -- the cross-entropy on the fresh batch; ``heldout-gp`` --
            plus ``gp_coef`` times the gradient penalty on the fresh batch, so ``phi`` is
            rewarded for steps that keep the discriminator smooth, not only accurate (measured
            on InvertedPendulum: the plain held-out loss trains ``phi`` towards ever larger
            steps, until the logits saturate and the generator's reward vanishes).
        gp_coef: the penalty's weight in ``heldout-gp``.
        **kwargs: as :class:`GAILTrainer`.
    """

    def __init__(self, *, learned: UpdateRule, disc_lr: float, meta_lr: float,
                 meta_every: int = 1, meta_objective: MetaObjective = "heldout", gp_coef: float = 10.0,
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
    def learned_optimizer(self) -> LearnedOptimizer:
        """The discriminator's optimizer (``disc_opt_cls`` is :class:`LearnedOptimizer`)."""
        return cast(LearnedOptimizer, self.disc_optimizer)

    @property
    def learned(self) -> UpdateRule:
        """The discriminator's learned optimizer ``g_phi``."""
        return self.learned_optimizer.learned

    def disc_update(self, batch: Batch, heldout_batch: Callable[[], Batch]) -> DiscObjective:
        if self.disc_step % self.meta_every:
            return super().disc_update(batch, heldout_batch)
        heldout = heldout_batch()
        seen: list[DiscObjective] = []

        def train_loss(params: Params) -> Tensor:
            seen.append(self.disc_objective(batch, params))
            return seen[-1].total

        def heldout_loss(params: Params) -> Tensor:
            # Held-out rows are evaluation data: keep them out of the input statistics.
            with networks.evaluating(self.discriminator):
                loss = self.disc_objective(heldout, params).total
            if self.meta_objective == "heldout-gp":
                loss = loss + self.gp_coef * self.gradient_penalty(heldout, params)
            return loss

        stats = self.learned_optimizer.lookahead_step(self.discriminator, train_loss, heldout_loss,
                                                      self.meta_opt)
        objective = seen[0]
        objective.extra.update(lookahead_extra(stats))
        return objective

    def learned_rules(self) -> dict[str, UpdateRule]:
        return {"discriminator": self.learned, **super().learned_rules()}

    def state_dict(self) -> dict[str, Any]:
        """:meth:`GAILTrainer.state_dict` plus the meta-optimizer of ``phi`` (``phi`` itself is
        in the discriminator optimizer's state)."""
        return {**super().state_dict(), "meta_optimizer": self.meta_opt.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.meta_opt.load_state_dict(state["meta_optimizer"])
