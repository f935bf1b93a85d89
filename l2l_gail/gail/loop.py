"""The training loop of the GAIL mode: one method, one seed, one run directory, exact resume.

A run alternates rounds of ``imitation``'s adversarial training -- PPO collects
``n_envs * n_steps`` environment steps on the learned reward and takes its update, then the
discriminator takes ``n_disc_updates_per_round`` steps -- and, every ``eval_every`` environment
steps, evaluates the generator on the task's **true** reward (deterministic policy, the same
``eval_episodes`` initial states every time) and writes a checkpoint (:mod:`~l2l_gail.gail.checkpoint`).

The normalised return ``(R - R_random) / (R_expert - R_random)`` uses the expert return of the
demonstrations' manifest and the random-policy return of the task file, so 0 is a random
policy and 1 the expert on every task.

Exact resume: a checkpoint holds every piece of training state (the trainer's ``state_dict`` and
the global RNG states). Environments cannot be checkpointed mid-episode (gymnasium's MuJoCo envs
pickle without their physics state), so instead every segment between checkpoints starts by
resetting the training environments with a seed derived from ``(seed, segment)`` -- in an
uninterrupted run as in a resumed one -- and a resumed run then reproduces the uninterrupted one
exactly at a fixed number of torch threads.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from imitation.util import networks
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv
from tqdm.auto import tqdm

from l2l_gail.errors import L2LError
from l2l_gail.gail import compat
from l2l_gail.gail.checkpoint import Progress, checkpoint, restore, save_final
from l2l_gail.gail.expert import evaluate
from l2l_gail.gail.factory import Prepared, build
from l2l_gail.gail.methods import GAILTrainer
from l2l_gail.runs import RunDir, RunLoop

EVAL_SEED_OFFSET = 10_000


def start_segment(trainer: GAILTrainer, seed: int, segment: int) -> None:
    """Reset the training environments with a seed of ``(seed, segment)`` (see module docstring)."""
    trainer.venv.seed(int(np.random.SeedSequence([seed, segment]).generate_state(1)[0]))
    compat.forget_last_obs(trainer.gen_algo)  # SB3 then resets the environments on its next learn()


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


def evaluate_generator(trainer: GAILTrainer, prepared: Prepared) -> tuple[float, float]:
    """Mean and std of the true return over ``eval_episodes`` deterministic episodes, on
    ``eval_envs`` environments side by side.

    The evaluation environments are re-seeded every time (environment ``i`` with the run's
    seed + offset + ``i``), so every evaluation of every run starts from the same initial states
    and the global RNGs are left untouched.
    """
    env = DummyVecEnv([lambda: Monitor(prepared.task.make_env())] * prepared.config.eval_envs)
    env.seed(prepared.config.seed + EVAL_SEED_OFFSET)
    try:
        return evaluate(trainer.gen_algo, env, prepared.config.eval_episodes)
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
    gen = trainer.gen_algo
    if not isinstance(gen, OnPolicyAlgorithm):
        raise TypeError("the GAIL loop reads the reward of an on-policy generator's rollout (PPO)")
    scalars["reward/mean"] = float(np.mean(gen.rollout_buffer.rewards))
    scalars["reward/std"] = float(np.std(gen.rollout_buffer.rewards))
    return scalars


def train(prepared: Prepared, run: RunDir, *, resume: bool = False, progress: bool = True,
          on_checkpoint: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train (or resume) one GAIL run; returns and writes its metrics.

    Args:
        prepared: the configuration, task and demonstrations (:func:`~l2l_gail.gail.factory.prepare`).
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
        n_rounds = config.timesteps // round_steps
        done = Progress(history=[])
        # TensorBoard's step unit: environment steps, logged at SB3's count of steps done, so a
        # checkpoint's tb_step is that count plus one (one from before tb_step was recorded ends
        # after its round)
        with RunLoop(run, resume=resume,
                     legacy_tb_step=lambda state: (int(state["round"]) + 1) * round_steps + 1) as loop:
            if loop.state is not None:
                done = restore(trainer, loop.state)
            bar = tqdm(total=n_rounds * round_steps, initial=done.next_round * round_steps, unit="step",
                       desc=f"{config.run_method} seed {config.seed}", disable=not progress, leave=False)
            try:
                start_segment(trainer, config.seed, len(done.history))
                for r in range(done.next_round, n_rounds):
                    seconds = train_round(trainer)
                    done.train_seconds += seconds
                    step = trainer.gen_algo.num_timesteps
                    scalars = round_scalars(trainer)
                    trainer.logger.dump(trainer.global_step)
                    scalars["time/env_steps_per_second"] = round_steps / seconds
                    _check_finite(scalars, step, run)
                    loop.log(scalars, step)
                    bar.update(round_steps)
                    if not _eval_due(step - round_steps, step, config.eval_every, r == n_rounds - 1):
                        continue
                    ret, ret_std = evaluate_generator(trainer, prepared)
                    done.history.append({"step": step, "return": ret, "return_std": ret_std,
                                         "normalized_return": prepared.normalize(ret),
                                         "disc_acc_expert": scalars.get("disc/disc_acc_expert", math.nan),
                                         "disc_acc_gen": scalars.get("disc/disc_acc_gen", math.nan)})
                    loop.log({"eval/return": ret, "eval/normalized_return": prepared.normalize(ret),
                              "eval/return_std": ret_std}, step)
                    bar.set_postfix(ret=f"{ret:.0f}", norm=f"{prepared.normalize(ret):.2f}")
                    done.next_round = r + 1
                    loop.checkpoint(checkpoint(trainer, done, config), step, tb_step=step + 1)
                    if on_checkpoint is not None:
                        on_checkpoint(step)
                    start_segment(trainer, config.seed, len(done.history))
            finally:
                bar.close()
        save_final(trainer, run)
    metrics = run_metrics(prepared, done.history, done.train_seconds)
    run.write_metrics(metrics)
    return metrics


def _eval_due(done_before: int, done_after: int, every: int, last: bool) -> bool:
    return last or done_after // every > done_before // every


def _check_finite(scalars: Mapping[str, float], step: int, run: RunDir) -> None:
    bad = sorted(k for k, v in scalars.items() if k.startswith(("disc/", "l2l/")) and not math.isfinite(v))
    if bad:
        last = run.latest_checkpoint()
        raise L2LError(f"{', '.join(bad)} became non-finite at step {step}: the discriminator diverged; "
                       f"lower --disc-lr or --l2l-meta-lr; the last good checkpoint {last or '(none yet)'} "
                       "is kept")


def run_metrics(prepared: Prepared, history: list[dict[str, float]], train_seconds: float) -> dict[str, Any]:
    """``metrics.json``: the configuration's key facts, the evaluation series and throughput."""
    from l2l_gail.gail.stats import series_metrics

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
