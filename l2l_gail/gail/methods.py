"""GAIL, its stabilised variants and their controls, as small subclasses of ``imitation``'s GAIL trainer.

GAIL (Ho & Ermon, *Generative Adversarial Imitation Learning*, NeurIPS 2016, arXiv 1606.03476)
solves ``min_pi max_D E_expert[log D] + E_pi[log(1 - D)]``: a discriminator ``D`` tells expert
from generator transitions, and the generator (here stable-baselines3's PPO) is trained on the
reward ``-log(1 - D)``. The discriminator is the follower of this min-max problem, and the usual
failure is that it over-fits: its logits grow, the reward saturates, and the generator's return
collapses. The ways to step the discriminator, the ``--method`` choices:

* :class:`GAILTrainer` (``gail``) -- Adam, as in ``imitation``;
* :class:`GAILGPTrainer` (``gail-gp``) -- Adam on the loss plus a gradient penalty at
  interpolates of expert and generator inputs (Gulrajani et al. 2017, arXiv 1704.00028, as used
  for adversarial imitation by Kostrikov et al. 2019, *Discriminator-Actor-Critic*, arXiv
  1809.02925), the standard stabiliser and our strongest baseline;
* :class:`L2LGAILTrainer` (``l2l-gail``) -- the learned optimizer ``g_phi`` of
  :mod:`l2l_gail.core`, with ``phi`` trained online on the discriminator loss measured on a
  *fresh* expert + generator batch after each step (``docs/design.md``, "The GAIL mode": our
  reading of the extension claimed in Jiang et al. 2021, arXiv 1811.01213); its options make
  the controls (``phi`` frozen at the Adam clone; Adam's direction at the learned step's norm)
  and the v2 configurations (``phi``'s direction at Adam's or a fixed norm; a constrained
  meta-objective; a held-out batch from the next round);
* :class:`GAILTrainer` with :class:`~l2l_gail.gail.steps.SignSGD` (``sign-sgd``) -- signSGD
  (Bernstein et al. 2018, arXiv 1802.04434), the limit of a bounded learned step.

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

from l2l_gail.core import (
    LearnedOptimizer,
    Params,
    State,
    UpdateRule,
    meta_step,
    trainable_params,
    write_params,
)
from l2l_gail.core.rule import l2_norm
from l2l_gail.gail import compat
from l2l_gail.gail.config import META_OBJECTIVES, Constraint, Heldout, MetaObjective, StepDirection, StepNorm
from l2l_gail.gail.policy import L2LPPO, LookaheadPolicyOptimizer, lookahead_extra
from l2l_gail.gail.steps import AdamReference, output_shift, shape_step

Batch = Mapping[str, Any]
"""One discriminator batch as ``imitation`` builds it: ``state``, ``action``, ``next_state``,
``done`` and ``labels_expert_is_one`` tensors, expert rows first, then as many generator rows."""
EXPERT_KEYS = ("obs", "acts", "next_obs", "dones")


def generator_rows(batch: Batch) -> dict[str, Tensor]:
    """The discriminator inputs of ``batch``'s generator rows (the second half)."""
    n = len(batch["state"]) // 2
    return {k: batch[k][n:] for k in ("state", "action", "next_state", "done")}


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

    expert_idx: Tensor | None = None
    """The demonstrations' rows of the expert batch drawn last (``None`` after a batch the caller
    supplied)."""

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
        self.expert_idx = torch.from_numpy(idx)
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
        expert samples and ``demo_batch_size`` rows of the generator replay buffer. Besides
        imitation's statistics: the mean logit of each class, the update's norm, and how far the
        update moved the discriminator's outputs on the batch's generator rows
        (``gen_logit_shift``, ``gen_kl_shift``: :func:`~l2l_gail.gail.steps.output_shift`, the
        quantities ``--l2l-constraint`` bounds, so a budget can be read off any method's run).
        """
        with self.logger.accumulate_means("disc"):
            self.expert_idx = None
            batch = self.disc_batch(expert_samples, gen_samples)
            before = {n: p.detach().clone() for n, p in self.discriminator.named_parameters()}
            objective = self.disc_update(batch, lambda: self.disc_batch(expert_samples, gen_samples))
            self.disc_step += 1
            with torch.no_grad():
                moved = sum(float((p - before[n]).square().sum())
                            for n, p in self.discriminator.named_parameters())
                gen = generator_rows(batch)
                with networks.evaluating(self.discriminator):
                    old, new = self.disc_logits(gen, before), self.disc_logits(gen)
                labels = batch["labels_expert_is_one"]
                logits = objective.logits.detach()
                stats = dict(compute_train_stats(logits, labels, objective.bce.detach()))
                stats.update(logit_expert=float(logits[labels == 1].mean()),
                             logit_gen=float(logits[labels == 0].mean()),
                             update_norm=math.sqrt(moved),
                             gen_logit_shift=float(output_shift(old, new, "logit")),
                             gen_kl_shift=float(output_shift(old, new, "kl")), **objective.extra)
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


@dataclasses.dataclass
class PendingStep:
    """A learned step taken this round and scored next round (``heldout="next-round"``): all it
    takes to take it again, differentiably in ``phi``."""

    params: Params
    """The discriminator's parameters before the step."""
    grads: Params
    """The gradients the step was taken on."""
    memory: State
    """The rule's memory before the step."""
    adam: Params
    """Adam's step on the same gradients."""
    expert_idx: Tensor | None
    """The demonstrations' rows in the training batch (``None``: the caller supplied them)."""

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "grads": self.grads, "adam": self.adam,
                "memory": {n: list(m) for n, m in self.memory.items()}, "expert_idx": self.expert_idx}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> PendingStep:
        return cls(params=dict(state["params"]), grads=dict(state["grads"]), adam=dict(state["adam"]),
                   memory={n: tuple(m) for n, m in state["memory"].items()}, expert_idx=state["expert_idx"])


class L2LGAILTrainer(GAILTrainer):
    """GAIL whose discriminator is stepped by a learned optimizer trained online (``l2l-gail``),
    and the controls and constrained variants built on it.

    Each update: the learned step ``theta' = theta + lr * g_phi(grad L_train(theta))`` on the
    training batch, then one Adam step on ``phi`` for the loss ``L_heldout(theta')`` on a
    held-out batch (:meth:`LearnedOptimizer.lookahead_step`). A step that only fits the training
    batch raises the held-out loss, so ``phi`` is pushed away from the over-fitting that makes
    GAIL's reward collapse (``docs/design.md``, "The GAIL mode").

    The held-out batch (``heldout="fresh"``) comes from the same sources as the training batch:
    fresh expert samples and fresh replay-buffer rows; where the caller of :meth:`train_disc`
    supplies ``expert_samples`` or ``gen_samples``, those same samples (the caller defines the
    data, and there are no others to hold out -- with both supplied, ``phi``'s objective is the
    loss after the step on the training batch itself). With ``heldout="next-round"`` each meta
    step waits for the next round: after PPO has moved and collected new samples
    (:meth:`train_gen`), the step is taken again with the current ``phi`` from what it was taken
    on (:class:`PendingStep`, kept in :meth:`state_dict`) and scored on ``demo_batch_size`` of the
    new generator rows and as many expert rows that none of the round's training batches held.
    An over-confident discriminator then pays log-loss on the data the generator moves to, and
    no held-out row was trained on.

    Every update also computes Adam's step on the same gradient (:class:`AdamReference`):
    TensorBoard shows its norm (``l2l/adam_norm``) beside the learned step's
    (``l2l/learned_norm``) and their ratio (``l2l/norm_ratio``), and ``step_norm`` /
    ``step_direction`` apply a step whose norm and direction each come from one of them
    (:func:`~l2l_gail.gail.steps.shape_step`). Where ``phi``'s direction is applied, ``phi`` is
    meta-trained through the applied step (with ``step_norm="adam"`` or ``"ttur"``
    the meta-objective cannot buy sharpness with step size); with Adam's direction (the
    adam-matched control) ``phi`` is meta-trained on its own step, as in l2l-gail, and only its
    norm is borrowed.

    ``constraint`` turns the meta-objective into a Lagrangian: ``L_heldout(theta') + lambda *
    (shift - budget)``, where ``shift`` is how far the step moves the discriminator's outputs on
    the held-out generator rows (``logit``: mean absolute change of the logits; ``kl``: mean
    ``KL(D_theta || D_theta')`` of the Bernoulli outputs), and after each meta step ``lambda <-
    max(0, lambda + dual_lr * (shift - budget))``: dual ascent, as the Variational Discriminator
    Bottleneck learns its multiplier (Peng et al. 2018, arXiv 1810.00821).

    Args:
        learned: the learned optimizer (its steps are in units of ``disc_lr``, see
            :mod:`l2l_gail.gail.phi_init`); shared, so the caller can save it.
        disc_lr: multiplies the learned steps.
        meta_lr: Adam's learning rate on ``phi`` (online look-ahead training diverged at 3e-3
            and above in the core's tests with a step scale of 0.1); 0 freezes ``phi`` and skips
            the meta-training altogether (the l2l-frozen control).
        meta_every: train ``phi`` on every ``meta_every``-th update (the others only apply it).
        meta_objective: ``heldout`` -- the cross-entropy on the held-out batch; ``heldout-gp`` --
            plus ``gp_coef`` times the gradient penalty on that batch, so ``phi`` is
            rewarded for steps that keep the discriminator smooth, not only accurate (measured
            on InvertedPendulum: the plain held-out loss trains ``phi`` towards ever larger
            steps, until the logits saturate and the generator's reward vanishes).
        gp_coef: the penalty's weight in ``heldout-gp``.
        step_norm: each tensor's step norm: ``learned``, ``adam`` or ``ttur`` (``disc_lr``).
        step_direction: each tensor's step direction: ``learned`` or ``adam``.
        constraint: ``none``, ``logit`` or ``kl`` (above).
        budget: the constraint's budget per step.
        dual_lr: the dual ascent's step on the multiplier.
        heldout: ``fresh`` or ``next-round`` (above).
        **kwargs: as :class:`GAILTrainer`.
    """

    def __init__(self, *, learned: UpdateRule, disc_lr: float, meta_lr: float,
                 meta_every: int = 1, meta_objective: MetaObjective = "heldout", gp_coef: float = 10.0,
                 step_norm: StepNorm = "learned", step_direction: StepDirection = "learned",
                 constraint: Constraint = "none", budget: float | None = None, dual_lr: float = 1.0,
                 heldout: Heldout = "fresh", **kwargs: Any) -> None:
        if meta_every < 1:
            raise ValueError(f"meta_every must be >= 1, got {meta_every}")
        if meta_objective not in META_OBJECTIVES:
            raise ValueError(f"meta_objective must be one of {META_OBJECTIVES}, got {meta_objective!r}")
        if (constraint == "none") != (budget is None):
            raise ValueError("a budget goes with a constraint (logit or kl), and only with one")
        self.meta_every, self.meta_objective, self.gp_coef = meta_every, meta_objective, gp_coef
        self.disc_lr, self.frozen = disc_lr, meta_lr == 0
        self.step_norm, self.step_direction, self.heldout = step_norm, step_direction, heldout
        self.constraint, self.budget, self.dual_lr = constraint, budget, dual_lr
        self.multiplier = 0.0
        """The constraint's Lagrange multiplier ``lambda`` (dual ascent)."""
        self.adam_reference = AdamReference(disc_lr)
        self.pending: list[PendingStep] = []
        self.scores: list[dict[str, float]] = []  # next-round meta steps, logged by the next update
        self.last_steps: dict[str, Params] = {}
        """The last update's ``learned``, ``adam`` and ``applied`` steps by tensor name."""
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

    @property
    def shaped(self) -> bool:
        """Whether the applied step differs from ``phi``'s (``step_norm`` or ``step_direction``)."""
        return not self.step_norm == self.step_direction == "learned"

    def shape(self, before: Params, after: Params, adam: Params) -> Params:
        """The parameters after the applied step, given those after ``phi``'s step."""
        return {n: before[n] + shape_step(after[n] - before[n], adam[n], norm=self.step_norm,
                                          direction=self.step_direction, lr=self.disc_lr)
                if n in adam else after[n] for n in after}

    def disc_update(self, batch: Batch, heldout_batch: Callable[[], Batch]) -> DiscObjective:
        params = trainable_params(self.discriminator)
        objective = self.disc_objective(batch, params)
        names = list(params)
        grads = {n: g for n, g in zip(names, torch.autograd.grad(
            objective.total, [params[n] for n in names], allow_unused=True), strict=True) if g is not None}
        adam = self.adam_reference.step(grads)
        before = {n: p.detach().clone() for n, p in params.items()}
        meta = not self.frozen and self.disc_step % self.meta_every == 0
        extra = self._pop_scores()
        if meta and self.heldout == "next-round":
            self.pending.append(PendingStep(before, grads, self._memory(), adam, self.expert_idx))
        if meta and self.heldout == "fresh":
            heldout = heldout_batch()
            shifts: list[Tensor] = []

            def heldout_loss(after: Params) -> Tensor:
                loss, shift = self.meta_loss(heldout, before, after, adam)
                shifts.extend([] if shift is None else [shift.detach()])
                return loss

            stats = self.learned_optimizer.lookahead_step(self.discriminator, grads,
                                                          heldout_loss, self.meta_opt)
            extra.update(lookahead_extra(stats))
            extra.update(self._dual_ascent(shifts))
        else:
            for name, p in self.discriminator.named_parameters():
                p.grad = grads.get(name)
            self.learned_optimizer.step()
        current = dict(self.discriminator.named_parameters())
        learned = {n: current[n].detach() - before[n] for n in adam}
        applied = learned
        if self.shaped:
            with torch.no_grad():
                after = {n: current[n].detach() for n in before}
                write_params(self.discriminator, self.shape(before, after, adam))
            applied = {n: current[n].detach() - before[n] for n in adam}
        self.last_steps = {"learned": learned, "adam": adam, "applied": applied}
        learned_norm, adam_norm = l2_norm(learned.values()), l2_norm(adam.values())
        extra.update({"l2l/learned_norm": learned_norm, "l2l/adam_norm": adam_norm})
        if adam_norm > 0:  # else no gradient at all: no ratio
            extra["l2l/norm_ratio"] = learned_norm / adam_norm
        if self.constraint != "none":
            extra["l2l/multiplier"] = self.multiplier
        objective.extra.update(extra)
        return objective

    def meta_loss(self, heldout: Batch, before: Params, after: Params,
                  adam: Params) -> tuple[Tensor, Tensor | None]:
        """``phi``'s objective for the step from ``before`` to ``after`` (``phi``'s own), and the
        step's shift of the generator rows' outputs when constrained (else ``None``)."""
        through_applied = self.shaped and self.step_direction == "learned"
        scored = self.shape(before, after, adam) if through_applied else after
        # Held-out rows are evaluation data: keep them out of the input statistics.
        with networks.evaluating(self.discriminator):
            loss = self.disc_objective(heldout, scored).total
            if self.meta_objective == "heldout-gp":
                loss = loss + self.gp_coef * self.gradient_penalty(heldout, scored)
            if self.constraint == "none":
                return loss, None
            gen = generator_rows(heldout)
            with torch.no_grad():
                old = self.disc_logits(gen, before)
            new = self.disc_logits(gen, scored)
        shift = output_shift(old, new, self.constraint)
        assert self.budget is not None
        return loss + self.multiplier * (shift - self.budget), shift

    def _dual_ascent(self, shifts: list[Tensor]) -> dict[str, float]:
        """``lambda <- max(0, lambda + dual_lr * (shift - budget))`` for each measured shift."""
        if not shifts or self.budget is None:
            return {}
        for shift in shifts:
            self.multiplier = max(0.0, self.multiplier + self.dual_lr * (float(shift) - self.budget))
        return {"l2l/shift": float(np.mean([float(s) for s in shifts]))}

    def _memory(self) -> State:
        """A copy of the rule's memory of each discriminator parameter (fresh where none yet)."""
        # memory_of on a copy of each state: the optimizer's own state is left as it is
        return {name: tuple(m.clone() for m in self.learned.memory_of(
                    dict(self.learned_optimizer.state.get(p, {})), p.numel()))
                for name, p in self.discriminator.named_parameters()}

    def train_gen(self, total_timesteps: int | None = None, learn_kwargs: Mapping | None = None) -> None:
        """imitation's generator round; then, with ``heldout="next-round"``, the meta steps of the
        previous round's learned steps, scored on this round's new generator rows."""
        started = self.gen_algo.num_timesteps
        super().train_gen(total_timesteps, learn_kwargs)
        if self.pending:
            self.score_pending(self.newest_generator_rows(self.gen_algo.num_timesteps - started))

    def next_round_batch(self, gen_rows: Mapping[str, np.ndarray], free: np.ndarray) -> Batch:
        """A held-out batch of ``demo_batch_size`` of ``gen_rows`` and as many of the expert rows
        ``free`` (those outside the round's training batches), drawn by ``rng``."""
        n = self.demo_batch_size
        if len(gen_rows["obs"]) < n or len(free) < n:
            raise ValueError(f"a next-round held-out batch needs {n} new generator rows and {n} expert "
                             f"rows outside the round's training batches; there are {len(gen_rows['obs'])} "
                             f"and {len(free)}")
        gen_idx = self.rng.choice(len(gen_rows["obs"]), n, replace=False)
        expert_idx = self.rng.choice(free, n, replace=False)
        return self.disc_batch({k: getattr(self._expert, k)[expert_idx] for k in EXPERT_KEYS},
                               {k: v[gen_idx] for k, v in gen_rows.items()})

    def score_pending(self, gen_rows: Mapping[str, np.ndarray]) -> None:
        """One meta step per :class:`PendingStep`, each scored on a batch of :meth:`next_round_batch`."""
        used = [p.expert_idx.numpy() for p in self.pending if p.expert_idx is not None]
        exclude = np.unique(np.concatenate(used)) if used else np.zeros(0, dtype=np.int64)
        free = np.setdiff1d(np.arange(len(self._expert)), exclude)
        for step in self.pending:
            heldout = self.next_round_batch(gen_rows, free)
            after, _, update = self.learned.update(step.params, step.grads, step.memory, create_graph=True,
                                                   scale=self.disc_lr)
            loss, shift = self.meta_loss(heldout, step.params, after, step.adam)
            stats = meta_step(loss, self.meta_opt)
            self.scores.append({"l2l/meta_loss": stats.meta_loss, "l2l/update_norm": update.update_norm,
                                "l2l/meta_grad_norm": stats.grad_norm,
                                **self._dual_ascent([] if shift is None else [shift.detach()])})
        self.pending.clear()

    def _pop_scores(self) -> dict[str, float]:
        scores, self.scores = self.scores, []
        return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]} if scores else {}

    def learned_rules(self) -> dict[str, UpdateRule]:
        return {"discriminator": self.learned, **super().learned_rules()}

    def state_dict(self) -> dict[str, Any]:
        """:meth:`GAILTrainer.state_dict` plus the meta-optimizer of ``phi`` (``phi`` itself is
        in the discriminator optimizer's state), the Adam reference, the constraint's
        multiplier and the learned steps waiting for the next round's samples."""
        return {**super().state_dict(), "meta_optimizer": self.meta_opt.state_dict(),
                "l2l": {"adam_reference": self.adam_reference.state_dict(), "multiplier": self.multiplier,
                        "pending": [p.to_dict() for p in self.pending], "scores": list(self.scores)}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; a checkpoint from before the Adam reference existed
        starts it afresh (it then only feeds ``l2l/adam_norm``, since such a run's steps are
        phi's own)."""
        super().load_state_dict(state)
        self.meta_opt.load_state_dict(state["meta_optimizer"])
        if "l2l" in state:
            self.adam_reference.load_state_dict(state["l2l"]["adam_reference"])
            self.multiplier = float(state["l2l"]["multiplier"])
            self.pending = [PendingStep.from_dict(p) for p in state["l2l"]["pending"]]
            self.scores = [dict(s) for s in state["l2l"]["scores"]]
