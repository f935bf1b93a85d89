"""Training loop of the GAIL mode: one method, one seed, one run directory, exact resume.

A run alternates rounds of ``imitation``'s adversarial training -- PPO collects
``n_envs * n_steps`` environment steps on the learned reward and takes its update, then the
discriminator takes ``n_disc_updates_per_round`` steps -- and, every ``eval_every`` environment
steps, evaluates the generator on the task's **true** reward (deterministic policy, the same
``eval_episodes`` initial states every time) and writes a checkpoint.

The normalised return ``(R - R_random) / (R_expert - R_random)`` uses the expert return of the
demonstrations' manifest and the random-policy return of the task file, so 0 is a random
policy and 1 the expert on every task.

Exact resume: a checkpoint holds every piece of training state -- policy, PPO optimizer,
discriminator (with its input-normalisation statistics), discriminator optimizer, the learned
optimizers' ``phi`` and their meta-optimizers, the generator replay buffer, the expert sampler
and the global torch / numpy / python RNG states. Environments cannot be checkpointed
mid-episode (gymnasium's MuJoCo envs pickle without their physics state), so instead every
segment between checkpoints starts by resetting the training environments with a seed derived
from ``(seed, segment)`` -- in an uninterrupted run as in a resumed one -- and a resumed run
then reproduces the uninterrupted one exactly at a fixed number of torch threads.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from imitation.data import rollout, types
from imitation.rewards.reward_nets import BasicRewardNet
from imitation.util import logger as imitation_logger
from imitation.util import networks
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from l2l_gail.core import LSTMRule, LSTMRuleConfig, UpdateRule
from l2l_gail.errors import L2LError
from l2l_gail.gail import demos as demo_files
from l2l_gail.gail.expert import evaluate, save_model
from l2l_gail.gail.phi_init import adam_clone
from l2l_gail.gail.tasks import TaskSpec, check_kwargs, load_task
from l2l_gail.gail.trainer import (
    L2LPPO,
    META_OBJECTIVES,
    GAILGPTrainer,
    GAILTrainer,
    L2LGAILTrainer,
    LookaheadPolicyOptimizer,
)
from l2l_gail.runs import RunDir, atomic_write, global_rng_state, set_global_rng_state

METHODS = ("gail", "gail-gp", "l2l-gail")
L2L_TARGETS = ("discriminator", "policy", "both")
EVAL_SEED_OFFSET = 10_000
FINAL_FILES = {"policy": "policy.zip", "discriminator": "discriminator.pt",
               "phi_discriminator": "phi_discriminator.pt", "phi_policy": "phi_policy.pt"}


@dataclass
class GAILConfig:
    """Everything a GAIL run depends on (stored as the run's ``config.yaml``).

    Fields left ``None`` take the task file's ``gail:`` value (:meth:`resolved`).
    """

    task: str = "inverted-pendulum"
    """task name (a file envs/<task>.yaml)"""
    method: str = "gail"
    """gail, gail-gp or l2l-gail"""
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
    l2l_target: str = "discriminator"
    """l2l-gail: what the learned optimizer steps: discriminator, policy or both"""
    l2l_init: str | None = None
    """l2l-gail: start phi from this file, a phi_*.pt of an earlier run (default: the Adam clone)"""
    l2l_meta_lr: float = 1e-3
    """l2l-gail: Adam learning rate on phi (online look-ahead)"""
    l2l_meta_every: int = 1
    """l2l-gail: train phi on every N-th learned step (the others only apply it)"""
    l2l_objective: str = "heldout"
    """l2l-gail: phi's objective: heldout (discriminator loss on a fresh batch after the step) or
    heldout-gp (plus gp_coef x the gradient penalty on that batch)"""
    l2l_max_step: float | None = None
    """l2l-gail: bound each coordinate's step to this many learning rates (tanh); none by default;
    with --l2l-init the file's own bound applies"""
    ppo: dict[str, Any] = field(default_factory=dict)
    """PPO hyper-parameters: the task file's gail.ppo, updated by these"""
    label: str | None = None
    """name of this configuration in its experiment (run directory and row of `l2l gail compare`),
    e.g. to compare variants of one method; default: the method's name"""

    def resolved(self, task: TaskSpec) -> GAILConfig:
        """A copy with every ``None`` filled from ``task.gail`` and ``ppo`` merged over it."""
        values = dataclasses.asdict(self)
        for key, value in values.items():
            if value is None and key in task.gail:
                values[key] = task.gail[key]
        values["ppo"] = {**task.gail["ppo"], **self.ppo}
        return GAILConfig(**values)

    @property
    def run_method(self) -> str:
        """The method's directory name: ``label`` if set, else ``l2l-gail``, ``l2l-gail-policy`` /
        ``-both``, ``gail`` or ``gail-gp``."""
        if self.label:
            return self.label
        if self.method == "l2l-gail" and self.l2l_target != "discriminator":
            return f"l2l-gail-{self.l2l_target}"
        return self.method

    @property
    def l2l_discriminator(self) -> bool:
        return self.method == "l2l-gail" and self.l2l_target in ("discriminator", "both")

    @property
    def l2l_policy(self) -> bool:
        return self.method == "l2l-gail" and self.l2l_target in ("policy", "both")

    @property
    def round_steps(self) -> int:
        """Environment steps per round: ``n_envs * ppo.n_steps`` (PPO's rollout)."""
        return int(self.n_envs or 0) * int(self.ppo.get("n_steps", 2048))

    def validate(self) -> None:
        """Raise :class:`L2LError` for an unknown method or target, or impossible numbers.

        Call on a :meth:`resolved` configuration.
        """
        if self.method not in METHODS:
            raise L2LError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.l2l_objective not in META_OBJECTIVES:
            raise L2LError(f"unknown --l2l-objective {self.l2l_objective!r}; choose one of "
                           f"{', '.join(META_OBJECTIVES)}")
        if self.l2l_target not in L2L_TARGETS:
            raise L2LError(f"unknown --l2l-target {self.l2l_target!r}; choose one of "
                           f"{', '.join(L2L_TARGETS)}")
        if self.label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.label):
            raise L2LError(f"--label {self.label!r} must be a directory name: letters, digits, '.', '_', '-'")
        positive = ("timesteps", "demo_episodes", "eval_every", "eval_episodes", "n_envs",
                    "demo_batch_size", "n_disc_updates_per_round", "l2l_meta_every")
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise L2LError(f"--{key.replace('_', '-')} must be a positive integer, got {value!r}")
        for key in ("disc_lr", "gp_coef", "l2l_meta_lr", "l2l_max_step"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, int | float) and value >= 0
                                          and math.isfinite(value)):
                raise L2LError(f"--{key.replace('_', '-')} must be a non-negative number, got {value!r}")
        if self.timesteps < self.round_steps:  # type: ignore[operator]
            raise L2LError(
                f"--timesteps {self.timesteps} is less than one round of {self.round_steps} "
                f"environment steps (n_envs {self.n_envs} x ppo n_steps {self.ppo.get('n_steps')}); "
                f"ask for at least {self.round_steps}")
        capacity = self.gen_replay_buffer_capacity or self.round_steps
        if capacity < self.demo_batch_size:  # type: ignore[operator]
            raise L2LError(f"the generator replay buffer ({capacity}) is smaller than one "
                           f"discriminator batch ({self.demo_batch_size}); raise "
                           "--gen-replay-buffer-capacity or lower --demo-batch-size")
        known = set(inspect.signature(PPO.__init__).parameters) - {"self", "policy", "env"}
        unknown = sorted(set(self.ppo) - known - {"net_arch"})
        if unknown:
            raise L2LError(f"bad PPO hyper-parameter(s) {', '.join(unknown)} (from gail.ppo of the "
                           "task file or --ppo); see stable_baselines3.PPO's arguments")
        check_kwargs(self.ppo, PPO.__init__, "PPO hyper-parameter", "gail.ppo of the task file or --ppo")
        if self.l2l_init is not None and not Path(self.l2l_init).is_file():
            raise L2LError(f"--l2l-init {self.l2l_init}: no such file; pass a phi_*.pt written "
                           "by an l2l-gail run")


@dataclass
class Prepared:
    """A validated configuration with its task and demonstrations, before any run exists."""

    config: GAILConfig
    task: TaskSpec
    demonstrations: types.Transitions
    expert_return: float

    def normalize(self, ret: float) -> float:
        """``(R - R_random) / (R_expert - R_random)``."""
        return (ret - self.task.random_return) / (self.expert_return - self.task.random_return)


def prepare(config: GAILConfig, data_dir: Path | None = None) -> Prepared:
    """Resolve and validate ``config`` and load its demonstrations (all errors before any run).

    Raises:
        L2LError: unknown task or method, bad numbers, missing, corrupted or foreign
            demonstrations (the loader's own message).
    """
    task = load_task(config.task)
    resolved = config.resolved(task)
    resolved.validate()
    data_dir = data_dir or demo_files.EXPERT_DATA_DIR
    trajectories = demo_files.load_demos(task, data_dir, n_episodes=resolved.demo_episodes)
    expert_return = float(demo_files.read_manifest(data_dir)["tasks"][task.name]["mean_return"])
    if not expert_return > task.random_return:
        raise L2LError(f"the demonstrations' return {expert_return} is not above the random "
                       f"return {task.random_return} of {task.path}: re-collect them")
    transitions = rollout.flatten_trajectories(trajectories)
    if len(transitions) < int(resolved.demo_batch_size):  # type: ignore[arg-type]
        raise L2LError(f"{len(transitions)} expert transitions are fewer than one batch of "
                       f"--demo-batch-size {resolved.demo_batch_size}")
    return Prepared(resolved, task, transitions, expert_return)


# ----------------------------------------------------------------------------- building
def initial_phi(config: GAILConfig) -> LSTMRule:
    """``phi`` at the start of a run: ``--l2l-init`` if given, else the Adam clone."""
    if config.l2l_init is not None:
        learned = LSTMRule.load(config.l2l_init)
        learned.step_units = "lr"  # the trainers scale its steps by lr, so the phi they save is in lr
        return learned
    learned, _ = adam_clone(lstm=LSTMRuleConfig(output_scale=1.0, max_step=config.l2l_max_step))
    return learned


def build(prepared: Prepared, log_dir: Path) -> GAILTrainer:
    """The trainer of ``prepared.config.method`` with a fresh generator and discriminator."""
    config, task = prepared.config, prepared.task
    _seed_everything(config.seed)
    venv = DummyVecEnv([lambda: Monitor(task.make_env()) for _ in range(int(config.n_envs or 1))])
    ppo_kwargs = dict(config.ppo)
    policy_kwargs: dict[str, Any] = {}
    if "net_arch" in ppo_kwargs:
        policy_kwargs["net_arch"] = ppo_kwargs.pop("net_arch")
    algo: type[PPO] = PPO
    if config.l2l_policy:
        algo = L2LPPO
        policy_kwargs.update(optimizer_class=LookaheadPolicyOptimizer, optimizer_kwargs={
            "learned": initial_phi(config), "meta_lr": config.l2l_meta_lr,
            "meta_every": config.l2l_meta_every})
    try:
        gen_algo = algo("MlpPolicy", venv, seed=config.seed, verbose=0, device="cpu",
                        policy_kwargs=policy_kwargs, **ppo_kwargs)
    except (TypeError, ValueError, AssertionError) as exc:  # SB3 validates with assert
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise L2LError(f"bad PPO hyper-parameter ({reason}); check gail.ppo in {task.path} "
                       "and --ppo") from exc
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space,
                                normalize_input_layer=networks.RunningNorm)
    common: dict[str, Any] = {
        "demonstrations": prepared.demonstrations, "rng": np.random.default_rng(config.seed),
        "demo_batch_size": config.demo_batch_size, "venv": venv, "gen_algo": gen_algo,
        "reward_net": reward_net, "n_disc_updates_per_round": config.n_disc_updates_per_round,
        "gen_replay_buffer_capacity": config.gen_replay_buffer_capacity,
        "custom_logger": imitation_logger.configure(log_dir, format_strs=[]),
        # Episodes end when the robot falls: a fixed horizon would need absorbing states.
        "allow_variable_horizon": True,
    }
    if config.l2l_discriminator:
        return L2LGAILTrainer(learned=initial_phi(config), disc_lr=float(config.disc_lr or 0),
                              meta_lr=config.l2l_meta_lr, meta_every=config.l2l_meta_every,
                              meta_objective=config.l2l_objective, gp_coef=float(config.gp_coef or 0),
                              **common)
    adam = {"disc_opt_kwargs": {"lr": config.disc_lr}}
    if config.method == "gail-gp":
        return GAILGPTrainer(gp_coef=float(config.gp_coef or 0), **adam, **common)
    return GAILTrainer(**adam, **common)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def learned_optimizers(trainer: GAILTrainer) -> dict[str, UpdateRule]:
    """The run's learned optimizers by target (``discriminator``, ``policy``)."""
    found = {}
    if isinstance(trainer, L2LGAILTrainer):
        found["discriminator"] = trainer.learned
    opt = trainer.gen_algo.policy.optimizer
    if isinstance(opt, LookaheadPolicyOptimizer):
        found["policy"] = opt.learned
    return found


# ----------------------------------------------------------------------------- checkpoints
def trainer_state(trainer: GAILTrainer) -> dict[str, Any]:
    """Every piece of training state that is not rebuilt identically by :func:`build`, as
    tensors and plain data (a checkpoint loads with ``weights_only=True``).

    The replay buffer's ``infos`` (an object array of dicts) are left out: the discriminator
    reads only observations, actions, next observations and dones.
    """
    gen = trainer.gen_algo
    buffer = trainer._gen_replay_buffer._buffer
    state: dict[str, Any] = {
        "policy": gen.policy.state_dict(),
        "policy_optimizer": gen.policy.optimizer.state_dict(),
        "ppo": {"num_timesteps": gen.num_timesteps, "n_updates": gen._n_updates},
        "discriminator": trainer._reward_net.state_dict(),
        "disc_optimizer": trainer._disc_opt.state_dict(),
        "replay_buffer": {"arrays": {k: torch.from_numpy(v.copy()) for k, v in buffer._arrays.items()
                                     if v.dtype != object},
                          "idx": buffer._idx, "n_data": buffer._n_data},
        "imitation": {"global_step": trainer._global_step, "disc_step": trainer._disc_step},
        "expert_rng": trainer.rng.bit_generator.state,
        "rng": global_rng_state(),
    }
    if isinstance(trainer, L2LGAILTrainer):
        state["meta_optimizer"] = trainer.meta_opt.state_dict()
    return state


def load_trainer_state(trainer: GAILTrainer, state: Mapping[str, Any]) -> None:
    """Restore :func:`trainer_state` into a trainer freshly built from the same configuration."""
    gen = trainer.gen_algo
    gen.policy.load_state_dict(state["policy"])
    gen.policy.optimizer.load_state_dict(state["policy_optimizer"])
    gen.num_timesteps = int(state["ppo"]["num_timesteps"])
    gen._n_updates = int(state["ppo"]["n_updates"])
    trainer._reward_net.load_state_dict(state["discriminator"])
    trainer._disc_opt.load_state_dict(state["disc_optimizer"])
    buffer = trainer._gen_replay_buffer._buffer
    for key, value in state["replay_buffer"]["arrays"].items():
        buffer._arrays[key][...] = value.numpy()
    buffer._idx, buffer._n_data = state["replay_buffer"]["idx"], state["replay_buffer"]["n_data"]
    trainer._global_step = state["imitation"]["global_step"]
    trainer._disc_step = state["imitation"]["disc_step"]
    trainer.rng.bit_generator.state = state["expert_rng"]
    if isinstance(trainer, L2LGAILTrainer):
        trainer.meta_opt.load_state_dict(state["meta_optimizer"])
    set_global_rng_state(state["rng"])


def start_segment(trainer: GAILTrainer, seed: int, segment: int) -> None:
    """Reset the training environments with a seed of ``(seed, segment)`` (see module docstring)."""
    trainer.venv.seed(int(np.random.SeedSequence([seed, segment]).generate_state(1)[0]))
    trainer.gen_algo._last_obs = None  # type: ignore[assignment]  # SB3 resets on its next learn()


# ----------------------------------------------------------------------------- the loop
def evaluate_generator(trainer: GAILTrainer, prepared: Prepared) -> tuple[float, float]:
    """Mean and std of the true return over ``eval_episodes`` deterministic episodes.

    The evaluation environment is re-seeded every time, so every evaluation of every run
    starts from the same initial states and the global RNGs are left untouched.
    """
    env = DummyVecEnv([lambda: Monitor(prepared.task.make_env())])
    env.seed(prepared.config.seed + EVAL_SEED_OFFSET)
    try:
        return evaluate(trainer.gen_algo, env, int(prepared.config.eval_episodes or 1))
    finally:
        env.close()


def round_scalars(trainer: GAILTrainer) -> dict[str, float]:
    """This round's means from ``imitation``'s logger, as TensorBoard tags, and the reward."""
    scalars: dict[str, float] = {}
    for key, value in trainer.logger.name_to_value.items():
        if key.startswith("mean/disc/"):
            name = key[len("mean/disc/"):]
            scalars[name if "/" in name else f"disc/{name}"] = float(value)
        elif key.startswith("mean/gen/"):
            scalars[f"gen/{key[len('mean/gen/'):]}"] = float(value)
    rewards = trainer.gen_algo.rollout_buffer.rewards
    scalars["reward/mean"] = float(np.mean(rewards))
    scalars["reward/std"] = float(np.std(rewards))
    return scalars


def _eval_due(done_before: int, done_after: int, every: int, last: bool) -> bool:
    return last or done_after // every > done_before // every


def train_round(trainer: GAILTrainer) -> float:
    """One GAIL round (Ho & Ermon 2016, as ``imitation`` schedules it): a PPO rollout and update
    on the discriminator's reward, then ``n_disc_updates_per_round`` discriminator steps.
    Returns its wall-clock seconds (the env steps/s of every run and benchmark come from these)."""
    started = time.perf_counter()
    trainer.train_gen()
    with networks.training(trainer.reward_train):
        for _ in range(trainer.n_disc_updates_per_round):
            trainer.train_disc()
    return time.perf_counter() - started


def train(prepared: Prepared, run: RunDir, *, resume: bool = False, progress: bool = True,
          on_checkpoint: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) one GAIL run; returns and writes its metrics.

    Args:
        prepared: the configuration, task and demonstrations (:func:`prepare`).
        run: the run directory.
        resume: continue from the run's newest checkpoint, if any.
        progress: show a progress bar.
        on_checkpoint: called with the environment step after each checkpoint (tests use it to
            interrupt a run).
    """
    config = prepared.config
    with tempfile.TemporaryDirectory(prefix="l2l-gail-log-") as log_dir:
        trainer = build(prepared, Path(log_dir))
        round_steps = trainer.gen_train_timesteps
        n_rounds = int(config.timesteps or 0) // round_steps
        history: list[dict[str, float]] = []
        first_round, train_seconds = 0, 0.0
        if resume and (state := run.load_latest()) is not None:
            load_trainer_state(trainer, state["trainer"])
            history, first_round, train_seconds = state["history"], state["round"] + 1, state["train_seconds"]
        # Events written after the checkpoint we resume from are dropped by TensorBoard.
        purge = first_round * round_steps + 1 if resume else None
        writer = SummaryWriter(str(run.tb_dir), purge_step=purge)
        bar = tqdm(total=n_rounds * round_steps, initial=first_round * round_steps, unit="step",
                   desc=f"{config.run_method} seed {config.seed}", disable=not progress, leave=False)
        try:
            start_segment(trainer, config.seed, len(history))
            for r in range(first_round, n_rounds):
                seconds = train_round(trainer)
                train_seconds += seconds
                step = trainer.gen_algo.num_timesteps
                scalars = round_scalars(trainer)
                trainer.logger.dump(trainer._global_step)
                scalars["time/env_steps_per_second"] = round_steps / seconds
                _check_finite(scalars, step, run)
                for key, value in scalars.items():
                    writer.add_scalar(key, value, step)
                bar.update(round_steps)
                if not _eval_due(step - round_steps, step, int(config.eval_every or 1), r == n_rounds - 1):
                    continue
                ret, ret_std = evaluate_generator(trainer, prepared)
                history.append({"step": step, "return": ret, "return_std": ret_std,
                                "normalized_return": prepared.normalize(ret),
                                "disc_acc_expert": scalars.get("disc/disc_acc_expert", math.nan),
                                "disc_acc_gen": scalars.get("disc/disc_acc_gen", math.nan)})
                writer.add_scalar("eval/return", ret, step)
                writer.add_scalar("eval/normalized_return", prepared.normalize(ret), step)
                writer.add_scalar("eval/return_std", ret_std, step)
                writer.flush()
                bar.set_postfix(ret=f"{ret:.0f}", norm=f"{prepared.normalize(ret):.2f}")
                run.save_checkpoint({"trainer": trainer_state(trainer), "history": history, "round": r,
                                     "train_seconds": train_seconds,
                                     "config": dataclasses.asdict(config)}, step)
                if on_checkpoint is not None:
                    on_checkpoint(step)
                start_segment(trainer, config.seed, len(history))
        finally:
            bar.close()
            writer.close()
        save_final(trainer, run)
    metrics = run_metrics(prepared, history, train_seconds)
    run.write_metrics(metrics)
    return metrics


def _check_finite(scalars: Mapping[str, float], step: int, run: RunDir) -> None:
    bad = sorted(k for k, v in scalars.items() if k.startswith(("disc/", "l2l/")) and not math.isfinite(v))
    if bad:
        last = run.latest_checkpoint()
        raise L2LError(f"{', '.join(bad)} became non-finite at step {step}: the discriminator diverged; "
                       f"lower --disc-lr or --l2l-meta-lr; the last good checkpoint {last or '(none yet)'} "
                       "is kept")


def save_final(trainer: GAILTrainer, run: RunDir) -> None:
    """The trained policy (SB3 zip), the discriminator and any learned optimizer's ``phi``."""
    save_model(trainer.gen_algo, run.path / FINAL_FILES["policy"])
    disc = trainer._reward_net.state_dict()
    atomic_write(run.path / FINAL_FILES["discriminator"], lambda tmp: torch.save(disc, tmp))
    for target, learned in learned_optimizers(trainer).items():
        learned.save(run.path / FINAL_FILES[f"phi_{target}"])


def run_metrics(prepared: Prepared, history: list[dict[str, float]], train_seconds: float) -> dict[str, Any]:
    """``metrics.json``: the configuration's key facts, the evaluation series and throughput."""
    from l2l_gail.gail.compare import series_metrics

    config = prepared.config
    steps = history[-1]["step"] if history else 0
    return {
        "task": config.task, "env_id": prepared.task.env_id, "method": config.run_method,
        "seed": config.seed, "timesteps": steps, "n_demos": config.demo_episodes,
        "expert_return": prepared.expert_return, "random_return": prepared.task.random_return,
        "train_seconds": train_seconds,
        "env_steps_per_second": steps / train_seconds if train_seconds > 0 else math.nan,
        **series_metrics([h["normalized_return"] for h in history]),
        "history": history, "finished": True,
    }


# ----------------------------------------------------------------------------- several seeds
def run_path(experiment: str, config: GAILConfig, runs_dir: Path | None = None) -> Path:
    """``<runs_dir>/gail/<experiment>/<method>/seed<k>``."""
    from l2l_gail.runs import DEFAULT_ROOT

    return Path(runs_dir or DEFAULT_ROOT) / "gail" / experiment / config.run_method / f"seed{config.seed}"


def train_seeds(prepared: Prepared, seeds: list[int], experiment: str, *, runs_dir: Path | None = None,
                resume: str = "no", progress: bool = True,
                echo: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Train ``prepared`` once per seed under ``runs/gail/<experiment>/<method>/seed<k>/``.

    Args:
        resume: ``"no"`` -- every run directory must be new; ``"yes"`` -- every one must exist
            and is continued; ``"auto"`` -- finished runs are skipped, unfinished ones continued
            and missing ones started (what the benchmark script does).
        echo: receives one line per run (the CLI prints them).

    Raises:
        L2LError: before anything is trained, if a directory exists with ``resume="no"`` or is
            missing with ``resume="yes"``.
    """
    if resume not in ("no", "yes", "auto"):
        raise ValueError(f"resume must be 'no', 'yes' or 'auto', got {resume!r}")
    plans = []
    for seed in seeds:
        config = dataclasses.replace(prepared.config, seed=seed)
        path = run_path(experiment, config, runs_dir)
        exists = path.is_dir() and any(path.iterdir())
        if resume == "no" and exists:
            raise L2LError(f"run directory {path} already exists: pass --resume to continue it or "
                           "choose another --experiment")
        if resume == "yes" and not exists:
            raise L2LError(f"cannot resume {path}: it does not exist; start it without --resume")
        plans.append((config, path, exists))
    results = []
    for config, path, exists in plans:
        if resume == "auto" and (path / "metrics.json").is_file():
            echo(f"{config.run_method} seed {config.seed}: finished, skipped ({path})")
            continue
        seed_prepared = dataclasses.replace(prepared, config=config)
        run = RunDir.for_mode("gail", path.relative_to(path.parents[2]).as_posix(),
                              dataclasses.asdict(config), root=path.parents[3], resume=exists)
        echo(f"{config.run_method} seed {config.seed}: {'resuming' if exists else 'training'} in {run.path}")
        metrics = train(seed_prepared, run, resume=exists, progress=progress)
        echo(f"{config.run_method} seed {config.seed}: final normalised return {metrics['final']:.3f} "
             f"(peak {metrics['peak']:.3f}), {metrics['env_steps_per_second']:.0f} env steps/s")
        results.append(metrics)
    if plans:
        echo(f"tensorboard --logdir {plans[0][1].parents[1]}")
    return results
