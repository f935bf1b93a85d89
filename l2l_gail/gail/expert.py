"""Expert policies: train with stable-baselines3, evaluate, and measure the random baseline.

Experts cannot be downloaded on machines without internet, so this project trains its own
(``l2l expert train``), rolls them out into demonstrations (``l2l expert collect``, see
:mod:`l2l_gail.gail.demos`) and ships both. Training is long (CPU hours for the locomotion
tasks), so it checkpoints the model and the replay buffer atomically and resumes from them.

The resume checkpoint (``checkpoints/step_<n>.pt``) holds state dicts, tensors and plain data
only, and loads with ``weights_only=True``: an SB3 zip would be unpickled (cloudpickle) and its
replay-buffer file too. The SB3 zips written beside it (``model.zip``, ``best_model.zip``) are
policies for ``l2l expert collect``, never read by ``--resume``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import recursive_getattr

from l2l_gail.errors import L2LError, first_line
from l2l_gail.gail import compat
from l2l_gail.gail.tasks import TaskSpec, check_kwargs
from l2l_gail.runs import RunDir, atomic_write, global_rng_state, set_global_rng_state, write_json

ALGOS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "td3": TD3, "ppo": PPO}
MODEL_FILE = "model.zip"
BEST_FILE = "best_model.zip"
OLD_BUFFER_FILE = "replay_buffer.pkl"  # the pickled replay buffer of checkpoints before step_<n>.pt


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
        reason = first_line(exc)
        raise L2LError(f"{task.path}: bad expert.hyperparams for {algo.__name__}: {reason}") from exc


def evaluate(model: BaseAlgorithm, env: Any, episodes: int) -> tuple[float, float]:
    """Mean and std of the undiscounted return over ``episodes`` deterministic episodes."""
    # Without return_episode_rewards, evaluate_policy returns two floats (its annotation is a union).
    mean, std = cast(tuple[float, float],
                     evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True))
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
    """The resume state (:func:`checkpoint_state`), the latest policy as an SB3 zip (for
    ``l2l expert collect``) and the evaluation history as JSON, each written atomically.

    Only the newest resume state is kept: with the replay buffer it is hundreds of MB.
    """
    run.save_checkpoint(checkpoint_state(model, history), model.num_timesteps, keep=1)
    save_model(model, run.checkpoints_dir / MODEL_FILE)
    write_json(run.checkpoints_dir / "history.json", history)


def checkpoint_state(model: BaseAlgorithm, history: list[dict[str, float]]) -> dict[str, Any]:
    """What :func:`restore_checkpoint` needs to continue training ``model``, as tensors and plain
    data: the state dicts SB3's own ``save`` writes, the counters that schedule updates (TD3's
    delayed policy updates count ``_n_updates``), the recent episodes behind the logged rollout
    means, the replay buffer of off-policy learners, the global RNG states and ``history``.

    The environments are not saved: training resumes at the start of a new episode.
    """
    state: dict[str, Any] = {
        "parameters": model.get_parameters(),
        "variables": {name: recursive_getattr(model, name).detach().clone()
                      for name in compat.torch_variables(model)},
        "counters": {"num_timesteps": model.num_timesteps, "n_updates": compat.n_updates(model),
                     "episode_num": compat.episode_num(model)},
        **compat.episode_history(model),  # "episodes", "successes"
        "history": history,
        "rng": global_rng_state(),
    }
    buffer = model.replay_buffer if isinstance(model, OffPolicyAlgorithm) else None
    if buffer is not None:
        state["replay_buffer"] = {
            "arrays": {k: torch.from_numpy(v) for k, v in vars(buffer).items() if isinstance(v, np.ndarray)},
            "pos": buffer.pos, "full": buffer.full}
    return state


def restore_checkpoint(model: BaseAlgorithm, state: Mapping[str, Any]) -> list[dict[str, float]]:
    """Load :func:`checkpoint_state` into ``model`` freshly built by :func:`build_expert` with the
    same task; returns the evaluation history."""
    model.set_parameters(state["parameters"], exact_match=True, device=model.device)
    for name, value in state["variables"].items():
        recursive_getattr(model, name).data.copy_(value)
    model.num_timesteps = int(state["counters"]["num_timesteps"])
    compat.set_n_updates(model, int(state["counters"]["n_updates"]))
    compat.set_episode_num(model, int(state["counters"]["episode_num"]))
    compat.load_episode_history(model, state)
    buffer = model.replay_buffer if isinstance(model, OffPolicyAlgorithm) else None
    if buffer is not None:
        for key, value in state["replay_buffer"]["arrays"].items():
            getattr(buffer, key)[...] = value.numpy()
        buffer.pos, buffer.full = int(state["replay_buffer"]["pos"]), bool(state["replay_buffer"]["full"])
    set_global_rng_state(state["rng"])
    return list(state["history"])


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

    env: Monitor[Any, Any] = Monitor(task.make_env())
    eval_env: Monitor[Any, Any] = Monitor(task.make_env())
    eval_env.reset(seed=seed + 10_000)
    total = int(timesteps or task.expert["timesteps"])
    history: list[dict[str, float]] = []
    ckpt = run.checkpoints_dir / MODEL_FILE
    model = build_expert(task, env, seed, run.tb_dir)
    if resume and (state := run.load_latest()) is not None:
        history = restore_checkpoint(model, state)
    elif resume and ckpt.is_file():
        raise L2LError(f"cannot resume {run.path}: it has a {MODEL_FILE} but no step_*.pt, the "
                       f"checkpoint of an older l2l_gail ({MODEL_FILE} and {OLD_BUFFER_FILE}), which "
                       "--resume no longer unpickles; start a new --name (its best_model.zip remains "
                       f"a usable policy), or delete {ckpt} to train this run from the start")
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
