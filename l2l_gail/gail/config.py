"""The configuration of a GAIL run: what the user gives, and what a run is built from.

:class:`GAILConfig` is what the command line and the scripts fill in: any field left ``None``
takes the task file's ``gail:`` value, and its choices are plain strings. :meth:`GAILConfig.resolved`
merges the task file in, checks every value, and returns a :class:`ResolvedGAILConfig`: frozen,
every number concrete, every choice a ``Literal``. The trainers, the loop and the run directory
only ever see the resolved form; its :meth:`~ResolvedGAILConfig.to_dict` is the run's
``config.yaml``, which ``--resume`` compares.

This module imports neither torch nor the RL libraries, so ``l2l gail train --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from l2l_gail.errors import L2LError
from l2l_gail.gail.tasks import DEMO_KINDS, DemoKind, TaskSpec, check_kwargs

Method = Literal["gail", "gail-gp", "l2l-gail", "sign-sgd"]
L2LTarget = Literal["discriminator", "policy", "both"]
MetaObjective = Literal["heldout", "heldout-gp"]
L2LRule = Literal["lstm", "mlp"]
StepNorm = Literal["learned", "adam", "ttur"]
StepDirection = Literal["learned", "adam"]
Constraint = Literal["none", "logit", "kl"]
Heldout = Literal["fresh", "next-round"]
METHODS: tuple[Method, ...] = typing.get_args(Method)
L2L_TARGETS: tuple[L2LTarget, ...] = typing.get_args(L2LTarget)
META_OBJECTIVES: tuple[MetaObjective, ...] = typing.get_args(MetaObjective)
L2L_RULES: tuple[L2LRule, ...] = typing.get_args(L2LRule)
STEP_NORMS: tuple[StepNorm, ...] = typing.get_args(StepNorm)
STEP_DIRECTIONS: tuple[StepDirection, ...] = typing.get_args(StepDirection)
CONSTRAINTS: tuple[Constraint, ...] = typing.get_args(Constraint)
HELDOUTS: tuple[Heldout, ...] = typing.get_args(Heldout)
CHOICES: dict[str, tuple[str, ...]] = {
    "method": METHODS, "l2l_target": L2L_TARGETS, "l2l_objective": META_OBJECTIVES,
    "l2l_rule": L2L_RULES, "l2l_step_norm": STEP_NORMS, "l2l_step_direction": STEP_DIRECTIONS,
    "l2l_constraint": CONSTRAINTS, "l2l_heldout": HELDOUTS, "demos": DEMO_KINDS}
"""The names each choice of :class:`GAILConfig` accepts (the ``Literal`` types above), for the
command line's ``--help``."""
OMITTED_AT: dict[str, Any] = {"l2l_rule": "lstm", "l2l_step_norm": "learned", "l2l_step_direction": "learned",
                              "l2l_constraint": "none", "l2l_budget": None, "l2l_dual_lr": 1.0,
                              "l2l_heldout": "fresh", "obs_norm": False, "fixed_horizon": False,
                              "demos": "deterministic", "eval_envs": 1, "gen_norm_disc_batches": True}
"""Options added after the first runs, with the value those runs had: ``config.yaml`` leaves an
option out at that value, so an older run's file, which lacks the key, compares equal on
``--resume``."""
PPO_N_STEPS = 2048
"""stable-baselines3's default ``n_steps``, for a task file whose ``gail.ppo`` leaves it out."""
ACTIVATIONS = ("tanh", "relu")
"""The policy's activations ``gail.ppo.activation_fn`` may name (stable-baselines3's default is
tanh; imitation's tuned hopper and walker2d policies use ReLU)."""
POLICY_KWARGS = ("net_arch", "activation_fn")
"""Keys of ``gail.ppo`` that go to the policy (``policy_kwargs``), not to PPO itself."""

_T = TypeVar("_T", bound=str)


@dataclass
class GAILConfig:
    """Everything a GAIL run depends on, as the user gives it.

    Fields left ``None`` take the task file's ``gail:`` value (:meth:`resolved`).
    """

    task: str = "inverted-pendulum"
    """task name (a file envs/<task>.yaml)"""
    method: str = "gail"
    """gail, gail-gp, l2l-gail or sign-sgd"""
    seed: int = 0
    """random seed"""
    timesteps: int | None = None
    """generator environment steps (default: the task file's gail.timesteps)"""
    demo_episodes: int | None = None
    """expert episodes used as demonstrations (default: the task file's gail.demo_episodes)"""
    eval_every: int | None = None
    """evaluate on the true reward and checkpoint every this many environment steps (default: the
    task file's gail.eval_every)"""
    eval_episodes: int | None = None
    """episodes per evaluation (default: the task file's gail.eval_episodes)"""
    eval_envs: int | None = None
    """environments an evaluation runs side by side, the policy acting on all at once (its
    episodes split evenly among them, each environment seeded apart, stable-baselines3's
    evaluate_policy); the same numbers in distribution, fewer policy calls (default: the task
    file's gail.eval_envs, else 1)"""
    n_envs: int | None = None
    """parallel environments of the generator (default: the task file's gail.n_envs)"""
    demo_batch_size: int | None = None
    """expert transitions per discriminator batch, as many generator ones are added (default: the
    task file's gail.demo_batch_size)"""
    gen_replay_buffer_capacity: int | None = None
    """generator transitions kept for discriminator batches (default: the task file's
    gail.gen_replay_buffer_capacity, else one round's)"""
    n_disc_updates_per_round: int | None = None
    """discriminator updates after each generator round (default: the task file's
    gail.n_disc_updates_per_round)"""
    disc_lr: float | None = None
    """discriminator learning rate: Adam's, or the unit of the learned steps (default: the task
    file's gail.disc_lr)"""
    gp_coef: float | None = None
    """gradient-penalty weight of gail-gp (default: the task file's gail.gp_coef)"""
    obs_norm: bool | None = None
    """normalise the generator's observations by their running mean and variance (imitation's
    NormalizeFeaturesExtractor with RunningNorm, as in all of imitation's tuned GAIL configs); the
    statistics are buffers of the policy, in its checkpoints and policy.zip (default: the task
    file's gail.obs_norm, else off)"""
    fixed_horizon: bool | None = None
    """the generator's training episodes end only at the time limit (gymnasium's
    terminate_when_unhealthy=False, as imitation's seals environments; any other termination
    ignored), so the always-positive reward -log(1 - D) pays no bonus for surviving (Kostrikov et
    al. 2019, arXiv 1809.02925); evaluation on the true reward stays on the standard environment,
    where the expert's return was measured (default: the task file's gail.fixed_horizon, else
    off)"""
    gen_norm_disc_batches: bool | None = None
    """with --obs-norm: the discriminator's batches, half of them expert rows, also update the
    generator's running observation statistics, as in imitation 1.0.1, which evaluates the
    generator's log-probability of every batch (GAIL never reads it) with the policy still in
    training mode after PPO's update; --no-gen-norm-disc-batches skips that evaluation, so the
    statistics see generator samples only and a discriminator batch costs one policy pass less
    (default: the task file's gail.gen_norm_disc_batches, else on)"""
    demos: str | None = None
    """expert demonstrations: deterministic (the expert's mean action) or stochastic (actions
    sampled from the expert, `l2l expert collect --stochastic`); scores are normalised by the
    deterministic expert's return either way (default: the task file's gail.demos, else
    deterministic)"""
    l2l_target: str = "discriminator"
    """l2l-gail: what the learned optimizer steps: discriminator, policy or both"""
    l2l_rule: str = "lstm"
    """l2l-gail: the learned update rule: lstm (coordinatewise LSTM, 1606.04474) or mlp
    (per-parameter MLP over Adam-like features, 1810.10180); each starts as Adam's clone"""
    l2l_init: str | None = None
    """l2l-gail: start phi from this file, a phi_*.pt of an earlier run, whichever rule it holds
    (default: the Adam clone of --l2l-rule)"""
    l2l_meta_lr: float = 1e-3
    """l2l-gail: Adam learning rate on phi (online look-ahead); 0 keeps phi at its start and skips
    the meta-training (the l2l-frozen control)"""
    l2l_meta_every: int = 1
    """l2l-gail: train phi on every N-th learned step (the others only apply it)"""
    l2l_objective: str = "heldout"
    """l2l-gail: phi's objective: heldout (discriminator loss on a fresh batch after the step) or
    heldout-gp (plus gp_coef x the gradient penalty on that batch)"""
    l2l_max_step: float | None = None
    """l2l-gail: bound each coordinate's step to this many learning rates (tanh); none by default;
    with --l2l-init the file's own bound applies"""
    l2l_step_norm: str = "learned"
    """l2l-gail: each discriminator tensor's step norm: learned (phi's own), adam (that of Adam's
    step on the same gradient, so phi chooses only the direction) or ttur (norm disc_lr for
    every tensor, a two-time-scale budget after Heusel et al. 2017, arXiv 1706.08500)"""
    l2l_step_direction: str = "learned"
    """l2l-gail: each tensor's step direction: learned (phi's) or adam (Adam's step on the same
    gradient; with --l2l-step-norm learned, the adam-matched control: Adam's direction at the
    norm of phi's step, phi meta-trained on its own step exactly as in l2l-gail)"""
    l2l_constraint: str = "none"
    """l2l-gail: constrain phi's meta-objective: none, logit (mean |change| of the logits on the
    held-out generator rows that one step makes <= --l2l-budget) or kl (mean KL of the
    discriminator's Bernoulli outputs there, before vs after the step, <= --l2l-budget); the
    multiplier is learned by dual ascent as in VDB (Peng et al. 2018, arXiv 1810.00821)"""
    l2l_budget: float | None = None
    """l2l-gail: the budget of --l2l-constraint, per discriminator step (default: none; required
    with a constraint)"""
    l2l_dual_lr: float = 1.0
    """l2l-gail: dual ascent step of the constraint's multiplier: lambda <- max(0, lambda +
    dual_lr x (measured - budget)) after each meta step"""
    l2l_heldout: str = "fresh"
    """l2l-gail: where phi's step is scored: fresh (another expert + replay-buffer batch now) or
    next-round (the next round's generator rows, collected after PPO has moved, and expert rows
    the step did not train on; phi learns one round late)"""
    ppo: dict[str, Any] = field(default_factory=dict)
    """PPO hyper-parameters: the task file's gail.ppo, updated by these"""
    label: str | None = None
    """name of this configuration in its experiment (run directory and row of `l2l gail compare`),
    e.g. to compare variants of one method; default: the method's name"""

    def resolved(self, task: TaskSpec) -> ResolvedGAILConfig:
        """Every ``None`` filled from ``task.gail`` (an option the task file lacks: the value it had
        before the option existed, :data:`OMITTED_AT`), ``ppo`` merged over the task's, all checked.

        Raises:
            L2LError: an unknown method, target or objective, a bad label, impossible numbers,
                unknown PPO hyper-parameters or a missing ``--l2l-init`` file.
        """
        values = dataclasses.asdict(self)
        for key, value in values.items():
            if value is None:
                values[key] = task.gail[key] if key in task.gail else OMITTED_AT.get(key)
        values["ppo"] = {**task.gail["ppo"], **self.ppo}
        return _resolve(values)


@dataclass(frozen=True)
class ResolvedGAILConfig:
    """A checked configuration with the task file merged in (:meth:`GAILConfig.resolved`).

    The fields are :class:`GAILConfig`'s, concrete. The ``None`` s left mean "none", not "not
    given": ``l2l_init`` (start from the Adam clone), ``l2l_max_step`` (no bound), ``l2l_budget``
    (no constraint) and ``label`` (the run is named by its method).
    """

    task: str
    method: Method
    seed: int
    timesteps: int
    demo_episodes: int
    eval_every: int
    eval_episodes: int
    eval_envs: int
    n_envs: int
    demo_batch_size: int
    gen_replay_buffer_capacity: int
    n_disc_updates_per_round: int
    disc_lr: float
    gp_coef: float
    obs_norm: bool
    fixed_horizon: bool
    gen_norm_disc_batches: bool
    demos: DemoKind
    l2l_target: L2LTarget
    l2l_rule: L2LRule
    l2l_init: str | None
    l2l_meta_lr: float
    l2l_meta_every: int
    l2l_objective: MetaObjective
    l2l_max_step: float | None
    l2l_step_norm: StepNorm
    l2l_step_direction: StepDirection
    l2l_constraint: Constraint
    l2l_budget: float | None
    l2l_dual_lr: float
    l2l_heldout: Heldout
    ppo: dict[str, Any]
    label: str | None

    def to_dict(self) -> dict[str, Any]:
        """The run's ``config.yaml`` (and the ``config`` of its checkpoints), without the options
        of :data:`OMITTED_AT` at their value."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in OMITTED_AT and v == OMITTED_AT[k])}

    @property
    def run_method(self) -> str:
        """The method's directory name (:func:`method_dir`)."""
        return method_dir(self.method, self.l2l_target, self.label)

    @property
    def l2l_discriminator(self) -> bool:
        """Whether a learned optimizer steps the discriminator."""
        return self.method == "l2l-gail" and self.l2l_target in ("discriminator", "both")

    @property
    def l2l_policy(self) -> bool:
        """Whether a learned optimizer steps the policy."""
        return self.method == "l2l-gail" and self.l2l_target in ("policy", "both")

    @property
    def round_steps(self) -> int:
        """Environment steps per round: ``n_envs * ppo.n_steps`` (PPO's rollout)."""
        return round_steps(self.n_envs, self.ppo)


def round_steps(n_envs: int, ppo: Mapping[str, Any]) -> int:
    """Environment steps per round: ``n_envs`` times PPO's ``n_steps``."""
    return n_envs * int(ppo.get("n_steps", PPO_N_STEPS))


def _choice(value: Any, choices: tuple[_T, ...], what: str) -> _T:
    for choice in choices:
        if value == choice:
            return choice
    raise L2LError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _positive_int(key: str, value: Any) -> int:
    if not isinstance(value, int) or value < 1:
        raise L2LError(f"--{key.replace('_', '-')} must be a positive integer, got {value!r}")
    return value


def _flag(key: str, value: Any) -> bool:
    """A yes/no option (unset, it is already its value before the option existed)."""
    if not isinstance(value, bool):
        raise L2LError(f"--{key.replace('_', '-')} must be true or false, got {value!r}")
    return value


def _non_negative(key: str, value: Any) -> float:
    if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
        raise L2LError(f"--{key.replace('_', '-')} must be a non-negative number, got {value!r}")
    return value


def method_dir(method: str, l2l_target: str, label: str | None) -> str:
    """A method's directory name in an experiment: ``label`` if set, else ``l2l-gail``,
    ``l2l-gail-policy`` / ``-both``, ``gail`` or ``gail-gp``."""
    if label:
        return label
    if method == "l2l-gail" and l2l_target != "discriminator":
        return f"l2l-gail-{l2l_target}"
    return method


def _resolve(values: Mapping[str, Any]) -> ResolvedGAILConfig:
    """Check the merged ``values`` and build the resolved configuration (the checks run in the
    order of :class:`GAILConfig`'s fields, so the first bad option is the one named)."""
    method = _choice(values["method"], METHODS, "method")
    objective = _choice(values["l2l_objective"], META_OBJECTIVES, "--l2l-objective")
    target = _choice(values["l2l_target"], L2L_TARGETS, "--l2l-target")
    rule = _choice(values["l2l_rule"], L2L_RULES, "--l2l-rule")
    step_norm = _choice(values["l2l_step_norm"], STEP_NORMS, "--l2l-step-norm")
    direction = _choice(values["l2l_step_direction"], STEP_DIRECTIONS, "--l2l-step-direction")
    if direction == "adam" and step_norm != "learned":
        raise L2LError("--l2l-step-direction adam takes the norm of phi's step (the adam-matched control): "
                       "leave --l2l-step-norm learned (Adam's direction at Adam's norm is --method gail)")
    constraint = _choice(values["l2l_constraint"], CONSTRAINTS, "--l2l-constraint")
    heldout = _choice(values["l2l_heldout"], HELDOUTS, "--l2l-heldout")
    label = values["label"]
    if label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", label):
        raise L2LError(f"--label {label!r} must be a directory name: letters, digits, '.', '_', '-'")
    count = {key: _positive_int(key, values[key]) for key in (
        "timesteps", "demo_episodes", "eval_every", "eval_episodes", "eval_envs", "n_envs",
        "demo_batch_size", "n_disc_updates_per_round", "l2l_meta_every")}
    if count["eval_envs"] > count["eval_episodes"]:
        raise L2LError(f"--eval-envs {count['eval_envs']} is more than --eval-episodes "
                       f"{count['eval_episodes']}: an environment would run no episode")
    rate = {key: _non_negative(key, values[key])
            for key in ("disc_lr", "gp_coef", "l2l_meta_lr", "l2l_dual_lr")}
    flags = {key: _flag(key, values[key]) for key in ("obs_norm", "fixed_horizon", "gen_norm_disc_batches")}
    demos = _choice(values["demos"], DEMO_KINDS, "--demos")
    max_step = values["l2l_max_step"]
    max_step = None if max_step is None else _non_negative("l2l_max_step", max_step)
    budget = values["l2l_budget"]
    if (budget is None) != (constraint == "none"):
        raise L2LError("--l2l-budget goes with --l2l-constraint logit or kl: give both or neither")
    budget = None if budget is None else _non_negative("l2l_budget", budget)
    ppo = dict(values["ppo"])
    steps = round_steps(count["n_envs"], ppo)
    if count["timesteps"] < steps:
        raise L2LError(
            f"--timesteps {count['timesteps']} is less than one round of {steps} environment steps "
            f"(n_envs {count['n_envs']} x ppo n_steps {ppo.get('n_steps')}); ask for at least {steps}")
    # None: imitation's default, the generator samples of one round. A buffer smaller than one
    # discriminator batch is allowed: imitation samples it with replacement (its tuned halfcheetah
    # config keeps 512 transitions for batches of 8192).
    capacity = values["gen_replay_buffer_capacity"]
    capacity = steps if capacity is None else _positive_int("gen_replay_buffer_capacity", capacity)
    _check_ppo_names(ppo)
    l2l_init = values["l2l_init"]
    if l2l_init is not None and not Path(l2l_init).is_file():
        raise L2LError(f"--l2l-init {l2l_init}: no such file; pass a phi_*.pt written by an l2l-gail run")
    return ResolvedGAILConfig(
        task=values["task"], method=method, seed=values["seed"], timesteps=count["timesteps"],
        demo_episodes=count["demo_episodes"], eval_every=count["eval_every"],
        eval_episodes=count["eval_episodes"], eval_envs=count["eval_envs"], n_envs=count["n_envs"],
        demo_batch_size=count["demo_batch_size"], gen_replay_buffer_capacity=capacity,
        n_disc_updates_per_round=count["n_disc_updates_per_round"], disc_lr=rate["disc_lr"],
        gp_coef=rate["gp_coef"], obs_norm=flags["obs_norm"], fixed_horizon=flags["fixed_horizon"],
        gen_norm_disc_batches=flags["gen_norm_disc_batches"], demos=demos, l2l_target=target,
        l2l_rule=rule, l2l_init=l2l_init, l2l_meta_lr=rate["l2l_meta_lr"],
        l2l_meta_every=count["l2l_meta_every"], l2l_objective=objective, l2l_max_step=max_step,
        l2l_step_norm=step_norm, l2l_step_direction=direction, l2l_constraint=constraint,
        l2l_budget=budget, l2l_dual_lr=rate["l2l_dual_lr"], l2l_heldout=heldout, ppo=ppo, label=label)


def _check_ppo_names(ppo: Mapping[str, Any]) -> None:
    from stable_baselines3 import PPO  # here, not at the top: --help must not import torch

    known = set(inspect.signature(PPO.__init__).parameters) - {"self", "policy", "env"}
    unknown = sorted(set(ppo) - known - set(POLICY_KWARGS))
    if unknown:
        raise L2LError(f"bad PPO hyper-parameter(s) {', '.join(unknown)} (from gail.ppo of the "
                       "task file or --ppo); see stable_baselines3.PPO's arguments")
    if ppo.get("activation_fn", ACTIVATIONS[0]) not in ACTIVATIONS:
        raise L2LError(f"PPO activation_fn {ppo['activation_fn']!r} (from gail.ppo of the task file or "
                       f"--ppo): choose one of {', '.join(ACTIVATIONS)}")
    check_kwargs(ppo, PPO.__init__, "PPO hyper-parameter", "gail.ppo of the task file or --ppo")
