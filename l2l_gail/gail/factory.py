"""Everything a GAIL run is built from: its checked inputs (:func:`prepare`) and its trainer
(:func:`build`: environments, PPO, discriminator and the method's trainer)."""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import load_env_creator
from imitation.data import rollout, types
from imitation.policies.base import NormalizeFeaturesExtractor
from imitation.rewards.reward_nets import BasicRewardNet
from imitation.util import logger as imitation_logger
from imitation.util import networks
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from l2l_gail.core import LSTMRuleConfig, MLPRule, MLPRuleConfig, UpdateRule
from l2l_gail.errors import L2LError, first_line
from l2l_gail.gail import demos as demo_files
from l2l_gail.gail.config import POLICY_KWARGS, GAILConfig, ResolvedGAILConfig
from l2l_gail.gail.methods import GAILGPTrainer, GAILTrainer, L2LGAILTrainer
from l2l_gail.gail.phi_init import adam_clone
from l2l_gail.gail.policy import L2LPPO, LookaheadPolicyOptimizer
from l2l_gail.gail.steps import SignSGD
from l2l_gail.gail.tasks import TaskSpec, load_task


@dataclass
class Prepared:
    """A checked configuration with its task and demonstrations, before any run exists."""

    config: ResolvedGAILConfig
    task: TaskSpec
    demonstrations: types.Transitions
    expert_return: float

    def normalize(self, ret: float) -> float:
        """``(R - R_random) / (R_expert - R_random)``: 0 is a random policy, 1 the expert."""
        return (ret - self.task.random_return) / (self.expert_return - self.task.random_return)


def prepare(config: GAILConfig, data_dir: Path | None = None) -> Prepared:
    """Resolve and check ``config`` and load its demonstrations (all errors before any run).

    Raises:
        L2LError: unknown task or method, bad numbers, missing, corrupted or foreign
            demonstrations (the loader's own message).
    """
    task = load_task(config.task)
    resolved = config.resolved(task)
    data_dir = data_dir or demo_files.EXPERT_DATA_DIR
    trajectories = demo_files.load_demos(task, data_dir, n_episodes=resolved.demo_episodes,
                                         kind=resolved.demos)
    # the deterministic expert's return, whichever demonstrations: the generator is evaluated
    # deterministically, and scores stay comparable across --demos
    expert_return = float(demo_files.read_manifest(data_dir)["tasks"][task.name]["mean_return"])
    if not expert_return > task.random_return:
        raise L2LError(f"the demonstrations' return {expert_return} is not above the random "
                       f"return {task.random_return} of {task.path}: re-collect them")
    transitions = rollout.flatten_trajectories(trajectories)
    if len(transitions) < resolved.demo_batch_size:
        raise L2LError(f"{len(transitions)} expert transitions are fewer than one batch of "
                       f"--demo-batch-size {resolved.demo_batch_size}")
    return Prepared(resolved, task, transitions, expert_return)


def initial_phi(config: ResolvedGAILConfig) -> UpdateRule:
    """``phi`` at the start of a run: ``--l2l-init`` if given (any rule), else the Adam clone of
    ``--l2l-rule`` (the LSTM's fitted, :mod:`~l2l_gail.gail.phi_init`; the MLP rule's exact by
    construction, :meth:`~l2l_gail.core.MLPRule.adam_clone`), both in units of lr."""
    if config.l2l_init is not None:
        learned = UpdateRule.load(config.l2l_init)
        learned.step_units = "lr"  # the trainers scale its steps by lr, so the phi they save is in lr
        return learned
    if config.l2l_rule == "mlp":
        return MLPRule.adam_clone(MLPRuleConfig(step_mult=1.0, max_step=config.l2l_max_step))
    lstm, _ = adam_clone(lstm=LSTMRuleConfig(output_scale=1.0, max_step=config.l2l_max_step))
    return lstm


class IgnoreTermination(gym.Wrapper):  # type: ignore[type-arg]
    """Report every step as not terminated, so that only the time limit (``truncated``) ends an
    episode: a fixed horizon for an environment that has no option for it."""

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, _, truncated, info = self.env.step(action)
        return obs, reward, False, truncated, info


def make_train_env(task: TaskSpec, fixed_horizon: bool) -> gym.Env:  # type: ignore[type-arg]
    """One of the generator's training environments; with ``fixed_horizon`` one whose episodes
    end only at the time limit.

    A fixed horizon is what imitation's seals MuJoCo environments do: gymnasium's
    ``terminate_when_unhealthy=False`` where the environment takes it (Hopper, Walker2d, Ant: the
    simulation goes on after a fall, and the true reward, which only the logged episode returns
    read, pays the healthy bonus only while healthy); any other termination (HalfCheetah has none,
    InvertedPendulum's fallen pole) is ignored (:class:`IgnoreTermination`). Episodes that end
    when the robot falls leak the reward: with GAIL's always-positive ``-log(1 - D)`` every step
    survived is paid (Kostrikov et al. 2019, arXiv 1809.02925).
    """
    if not fixed_horizon:
        return task.make_env()
    entry = gym.spec(task.env_id).entry_point
    creator = load_env_creator(entry) if isinstance(entry, str) else entry
    takes = callable(creator) and "terminate_when_unhealthy" in inspect.signature(creator).parameters
    options = {"terminate_when_unhealthy": False} if takes else {}
    return IgnoreTermination(task.make_env(**options))


def policy_kwargs(config: ResolvedGAILConfig) -> dict[str, Any]:
    """The generator policy's ``policy_kwargs``: ``gail.ppo``'s policy keys (``net_arch``,
    ``activation_fn``) and, with ``obs_norm``, imitation's running observation normalisation (its
    statistics are buffers of the policy: in its ``state_dict``, hence in every checkpoint)."""
    kwargs: dict[str, Any] = {key: config.ppo[key] for key in POLICY_KWARGS if key in config.ppo}
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[kwargs["activation_fn"]]
    if config.obs_norm:
        kwargs.update(features_extractor_class=NormalizeFeaturesExtractor,
                      features_extractor_kwargs={"normalize_class": networks.RunningNorm})
    return kwargs


def build(prepared: Prepared, log_dir: Path) -> GAILTrainer:
    """The trainer of ``prepared.config.method`` with a fresh generator and discriminator.

    Seeds the global RNGs with the run's seed first, so two builds of one configuration are
    identical (a resumed run then loads its checkpoint into it).
    """
    config, task = prepared.config, prepared.task
    _seed_everything(config.seed)
    venv = DummyVecEnv([lambda: Monitor(make_train_env(task, config.fixed_horizon))
                        for _ in range(config.n_envs)])
    ppo_kwargs = {k: v for k, v in config.ppo.items() if k not in POLICY_KWARGS}
    policy = policy_kwargs(config)
    algo: type[PPO] = PPO
    if config.l2l_policy:
        algo = L2LPPO
        policy.update(optimizer_class=LookaheadPolicyOptimizer, optimizer_kwargs={
            "learned": initial_phi(config), "meta_lr": config.l2l_meta_lr,
            "meta_every": config.l2l_meta_every})
    try:
        gen_algo = algo("MlpPolicy", venv, seed=config.seed, verbose=0, device="cpu",
                        policy_kwargs=policy, **ppo_kwargs)
    except (TypeError, ValueError, AssertionError) as exc:  # SB3 validates with assert
        reason = first_line(exc)
        raise L2LError(f"bad PPO hyper-parameter ({reason}); check gail.ppo in {task.path} "
                       "and --ppo") from exc
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space,
                                normalize_input_layer=networks.RunningNorm)
    demonstrations, rng = prepared.demonstrations, np.random.default_rng(config.seed)
    common: dict[str, Any] = {
        "demo_batch_size": config.demo_batch_size, "venv": venv, "gen_algo": gen_algo,
        "reward_net": reward_net, "n_disc_updates_per_round": config.n_disc_updates_per_round,
        "gen_replay_buffer_capacity": config.gen_replay_buffer_capacity,
        "custom_logger": imitation_logger.configure(log_dir, format_strs=[]),
        # Without a fixed horizon episodes end when the robot falls; with one, imitation checks
        # that every generator episode has the same length.
        "allow_variable_horizon": not config.fixed_horizon,
        "policy_log_prob": config.gen_norm_disc_batches,
    }
    if config.l2l_discriminator:
        return L2LGAILTrainer(demonstrations=demonstrations, rng=rng, learned=initial_phi(config),
                              disc_lr=config.disc_lr, meta_lr=config.l2l_meta_lr,
                              meta_every=config.l2l_meta_every, meta_objective=config.l2l_objective,
                              gp_coef=config.gp_coef, step_norm=config.l2l_step_norm,
                              step_direction=config.l2l_step_direction, constraint=config.l2l_constraint,
                              budget=config.l2l_budget, dual_lr=config.l2l_dual_lr,
                              heldout=config.l2l_heldout, **common)
    adam = {"lr": config.disc_lr}
    if config.method == "gail-gp":
        return GAILGPTrainer(demonstrations=demonstrations, rng=rng, gp_coef=config.gp_coef,
                             disc_opt_kwargs=adam, **common)
    if config.method == "sign-sgd":
        return GAILTrainer(demonstrations=demonstrations, rng=rng, disc_opt_cls=SignSGD,
                           disc_opt_kwargs={"lr": config.disc_lr}, **common)
    return GAILTrainer(demonstrations=demonstrations, rng=rng, disc_opt_kwargs=adam, **common)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
