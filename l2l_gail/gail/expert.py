"""Expert policies: train with stable-baselines3, evaluate, and measure the random baseline.

Experts cannot be downloaded on machines without internet, so this project trains its own
(``l2l expert train``), rolls them out into demonstrations (``l2l expert collect``, see
:mod:`l2l_gail.gail.demos`) and ships both. Training is long (CPU hours for the locomotion
tasks), so it checkpoints the model and the replay buffer atomically and resumes from them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from l2l_gail.errors import L2LError
from l2l_gail.gail.tasks import TaskSpec, check_kwargs
from l2l_gail.runs import RunDir, atomic_write, write_json

ALGOS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "td3": TD3, "ppo": PPO}
MODEL_FILE = "model.zip"
BUFFER_FILE = "replay_buffer.pkl"
BEST_FILE = "best_model.zip"


def build_expert(task: TaskSpec, env: Any, seed: int, tb_dir: Path | None) -> BaseAlgorithm:
    """A fresh expert learner for ``task`` with the hyper-parameters of its spec file."""
    hp = dict(task.expert["hyperparams"])
    kwargs: dict[str, Any] = {}
    if "net_arch" in hp:
        kwargs["policy_kwargs"] = {"net_arch": hp.pop("net_arch")}
    noise_std = hp.pop("action_noise_std", None)
    if noise_std is not None:
        n = env.action_space.shape[-1]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n), noise_std * np.ones(n))
    algo = ALGOS[task.expert["algo"]]
    check_kwargs(hp, algo.__init__, f"{algo.__name__} hyper-parameter", f"expert.hyperparams of {task.path}")
    try:
        return algo(
            "MlpPolicy", env, seed=seed, verbose=0,
            tensorboard_log=str(tb_dir) if tb_dir else None, **hp, **kwargs,
        )
    except (TypeError, ValueError, AssertionError) as exc:  # SB3 validates with assert
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise L2LError(f"{task.path}: bad expert.hyperparams for {algo.__name__}: {reason}") from exc


def evaluate(model: BaseAlgorithm, env: Any, episodes: int) -> tuple[float, float]:
    """Mean and std of the undiscounted return over ``episodes`` deterministic episodes."""
    mean, std = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True)
    return float(mean), float(std)


class ExpertCallback(BaseCallback):
    """Evaluate, checkpoint and stop early once the expert reaches its task's threshold.

    Every ``expert.eval_every`` steps it evaluates ``eval_episodes`` deterministic episodes,
    logs ``eval/mean_return``, keeps the best model, and stops training when the mean return
    reaches ``stop_at`` (the task's threshold unless a stronger target is asked for). Every
    ``expert.checkpoint_every`` steps it atomically saves the model (and the replay buffer of
    off-policy learners) with the evaluation history for ``--resume``; the two cadences are
    separate because a replay-buffer checkpoint costs hundreds of MB.
    """

    def __init__(self, run: RunDir, task: TaskSpec, eval_env: Any, history: list[dict[str, float]],
                 stop_at: float):
        super().__init__()
        self.run, self.task, self.eval_env, self.history = run, task, eval_env, history
        self.stop_at = stop_at
        self.eval_every = int(task.expert["eval_every"])
        self.checkpoint_every = int(task.expert["checkpoint_every"])
        self.best = max((h["mean_return"] for h in history), default=-np.inf)

    def _on_step(self) -> bool:
        keep_going = True
        if self.num_timesteps % self.eval_every == 0:
            keep_going = self._evaluate()
        if self.num_timesteps % self.checkpoint_every == 0:
            save_checkpoint(self.model, self.run, self.history)
        return keep_going

    def _evaluate(self) -> bool:
        """Record one evaluation; False once the return reaches ``stop_at``."""
        mean, std = evaluate(self.model, self.eval_env, int(self.task.expert["eval_episodes"]))
        self.history.append({"timesteps": self.num_timesteps, "mean_return": mean, "std_return": std,
                             "unix_time": time.time()})
        self.logger.record("eval/mean_return", mean)
        self.logger.record("eval/std_return", std)
        if mean > self.best:
            self.best = mean
            save_model(self.model, self.run.checkpoints_dir / BEST_FILE)
        return mean < self.stop_at


def save_model(model: BaseAlgorithm, path: Path) -> None:
    """Atomically save an SB3 model zip."""
    atomic_write(path, lambda tmp: model.save(tmp))


def save_checkpoint(model: BaseAlgorithm, run: RunDir, history: list[dict[str, float]]) -> None:
    """Model, replay buffer (off-policy) and evaluation history, each written atomically."""
    save_model(model, run.checkpoints_dir / MODEL_FILE)
    if isinstance(model, OffPolicyAlgorithm):
        atomic_write(run.checkpoints_dir / BUFFER_FILE, lambda tmp: model.save_replay_buffer(tmp))
    write_json(run.checkpoints_dir / "history.json", history)


def train_expert(task: TaskSpec, run: RunDir, *, seed: int, timesteps: int | None = None,
                 target_return: float | None = None, resume: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the expert of ``task`` in ``run``; returns the final metrics.

    Training stops at the first evaluation whose mean return reaches ``target_return`` (default:
    the task's threshold). A 20-episode mean just above the threshold can still roll out 50
    demonstration episodes below it, so a higher target, given on ``--resume``, continues a run
    that already stopped.
    """
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(task.make_env())
    eval_env = Monitor(task.make_env())
    eval_env.reset(seed=seed + 10_000)
    total = int(timesteps or task.expert["timesteps"])
    history: list[dict[str, float]] = []
    ckpt = run.checkpoints_dir / MODEL_FILE
    if resume and ckpt.is_file():
        model = ALGOS[task.expert["algo"]].load(ckpt, env=env, tensorboard_log=str(run.tb_dir))
        if isinstance(model, OffPolicyAlgorithm) and (run.checkpoints_dir / BUFFER_FILE).is_file():
            model.load_replay_buffer(run.checkpoints_dir / BUFFER_FILE)
        hist_file = run.checkpoints_dir / "history.json"
        history = json.loads(hist_file.read_text()) if hist_file.is_file() else []
    else:
        model = build_expert(task, env, seed, run.tb_dir)
    done = model.num_timesteps
    stop_at = float(task.expert["threshold"] if target_return is None else target_return)
    stopped = bool(history) and history[-1]["mean_return"] >= stop_at
    remaining = 0 if stopped else max(total - done, 0)
    start = time.time()
    if remaining:
        model.learn(remaining, callback=ExpertCallback(run, task, eval_env, history, stop_at),
                    reset_num_timesteps=not resume, tb_log_name="expert", progress_bar=progress)
        save_checkpoint(model, run, history)
    best_path = run.checkpoints_dir / BEST_FILE
    best = max(history, key=lambda h: h["mean_return"]) if history else None
    metrics = {
        "task": task.name, "env_id": task.env_id, "algo": task.expert["algo"], "seed": seed,
        "timesteps": int(model.num_timesteps), "threshold": float(task.expert["threshold"]),
        "target_return": stop_at,
        "best_mean_return": best["mean_return"] if best else None,
        "best_timesteps": best["timesteps"] if best else None,
        "reached_threshold": bool(best and best["mean_return"] >= float(task.expert["threshold"])),
        "train_seconds_this_session": time.time() - start,
        "best_model": str(best_path if best_path.is_file() else ckpt),
    }
    run.write_metrics(metrics)
    return metrics


def random_return(task: TaskSpec, episodes: int, seed: int = 0) -> tuple[float, float]:
    """Mean and std return of a uniform random policy (the 0 of normalised scores)."""
    env = task.make_env()
    env.action_space.seed(seed)
    returns = []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            total += float(r)
            done = term or trunc
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


def load_expert(task: TaskSpec, path: Path) -> BaseAlgorithm:
    """Load a saved expert policy, with a one-line error for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise L2LError(f"no expert policy at {path}: train one with `l2l expert train --task {task.name}`")
    try:
        return ALGOS[task.expert["algo"]].load(path, device="cpu")
    except Exception as exc:  # SB3 raises many types for a damaged zip
        raise L2LError(f"cannot load expert policy {path} ({type(exc).__name__}: {exc}); "
                       f"retrain with `l2l expert train --task {task.name}`") from exc


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads (SB3's small MLPs run fastest on one thread)."""
    torch.set_num_threads(max(1, threads))
