#!/usr/bin/env python
"""Diagnostic: what the final generators of a GAIL experiment earn, term by term of the true reward.

The normalised return says how far a generator is from the expert, not why. The MuJoCo
locomotion rewards are sums of terms (gymnasium's v4 environments): a healthy bonus per step
survived (``healthy_reward``; hopper, walker2d, ant), the control cost ``control_cost(action)``
and the rest, chiefly the forward progress. This script rebuilds every finished run of an
experiment from its ``config.yaml`` and its last checkpoint (read with ``weights_only=True``,
never the pickled ``policy.zip``), rolls the deterministic policy out on the standard
environment, as the training's evaluation does, and splits each episode's return into those
terms; the expert's shipped demonstrations are split the same way, and so is a policy that
does nothing (the zero action), the floor a generator should at least reach. It writes
``<output>.json`` (every run's episodes) and ``<output>.md`` (per method, means over seeds, with
the normalised return of each row).

    .venv/bin/python scripts/gail_reward_terms.py runs/gail/bench-ant --methods gail,gail-gp,l2l-v2 \
        --output results/gail/reward-terms-ant
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from l2l_gail.errors import L2LError
from l2l_gail.gail import demos as demo_files
from l2l_gail.gail.checkpoint import restore
from l2l_gail.gail.config import OMITTED_AT, GAILConfig
from l2l_gail.gail.factory import Prepared, build, prepare
from l2l_gail.gail.tasks import DEMO_KINDS, DemoKind, TaskSpec
from l2l_gail.runs import RunDir, report_paths, write_report

TERMS = ("healthy", "control", "forward")
"""The parts of an episode's return: ``forward`` is what is left after the other two (forward
progress, and ant's contact cost, which Ant-v4 leaves at zero by default)."""


def split_step(env: Any, action: np.ndarray, reward: float) -> dict[str, float]:
    """One step's reward as :data:`TERMS`, read after the step as the environment computed it:
    its ``healthy_reward`` property (which, with the default termination, pays the bonus on every
    step, the terminating one included) and its ``control_cost`` of the action."""
    base = env.unwrapped
    bonus = float(getattr(base, "healthy_reward", 0.0))
    control = -float(base.control_cost(action)) if hasattr(base, "control_cost") else 0.0
    return {"healthy": bonus, "control": control, "forward": reward - bonus - control}


def rollout_terms(policy: Any, task: TaskSpec, episodes: int, seed: int) -> list[dict[str, float]]:
    """The deterministic policy's episodes on the standard environment, each as its return, its
    length, :data:`TERMS`, the mean absolute action and the final x position."""
    env = task.make_env()
    out = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            sums = dict.fromkeys(TERMS, 0.0)
            total, steps, actions, done, info = 0.0, 0, [], False, {}
            while not done:
                action, _ = policy.predict(obs, deterministic=True)
                clipped = np.clip(action, env.action_space.low, env.action_space.high)
                obs, reward, terminated, truncated, info = env.step(clipped)
                for key, value in split_step(env, clipped, float(reward)).items():
                    sums[key] += value
                total += float(reward)
                steps += 1
                actions.append(np.abs(clipped).mean())
                done = terminated or truncated
            out.append({"return": total, "length": steps, **sums, "mean_abs_action": float(np.mean(actions)),
                        "x_position": float(info.get("x_position", float("nan")))})
    finally:
        env.close()
    return out


def expert_terms(task: TaskSpec, kind: DemoKind) -> dict[str, float]:
    """Per-episode means of :data:`TERMS` over the shipped demonstrations of ``kind`` (the
    environment is not stepped through them: its healthy bonus is the one the default termination
    pays on every step)."""
    trajectories = demo_files.load_demos(task, demo_files.EXPERT_DATA_DIR, kind=kind)
    env = task.make_env()
    try:
        episodes = []
        for traj in trajectories:
            acts, rews = np.asarray(traj.acts), np.asarray(traj.rews)
            sums = dict.fromkeys(TERMS, 0.0)
            for action, reward in zip(acts, rews, strict=True):
                for key, value in split_step(env, action, float(reward)).items():
                    sums[key] += value
            episodes.append({"return": float(rews.sum()), "length": len(rews), **sums,
                             "mean_abs_action": float(np.abs(acts).mean())})
    finally:
        env.close()
    return {key: statistics.fmean(e[key] for e in episodes) for key in episodes[0]}


def run_terms(run_dir: Path, episodes: int) -> tuple[Prepared, list[dict[str, float]]]:
    """The run rebuilt from its ``config.yaml`` (its task and the expert return it is normalised
    by), and :func:`rollout_terms` of the generator in its last checkpoint."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    if not isinstance(config, dict):
        raise L2LError(f"{run_dir / 'config.yaml'} is not a GAIL run's configuration")
    # a key config.yaml leaves out has its OMITTED_AT value, not the task file's current one
    prepared = prepare(GAILConfig(**{**OMITTED_AT, **config}))
    state = RunDir(run_dir, prepared.config.to_dict(), resume=True).load_latest()
    if state is None:
        raise L2LError(f"{run_dir} has no checkpoint: finish or resume the run first")
    if state["config"] != prepared.config.to_dict():
        raise L2LError(f"{run_dir}: its config.yaml differs from the configuration its checkpoint was "
                       "trained with; restore the run's config.yaml")
    with tempfile.TemporaryDirectory(prefix="l2l-terms-") as log_dir:
        trainer = build(prepared, Path(log_dir))
        restore(trainer, state)
        return prepared, rollout_terms(trainer.gen_algo, prepared.task, episodes, prepared.config.seed)


def finished_runs(experiment: Path, methods: list[str]) -> dict[str, list[Path]]:
    """The finished runs (``metrics.json`` written) of each method, in seed order."""
    runs = {}
    for method in methods:
        found = [p for p in (experiment / method).glob("seed*") if (p / "metrics.json").is_file()]
        runs[method] = sorted(found, key=lambda p: int(p.name[len("seed"):]))
    return runs


class ZeroPolicy:
    """The reference that does nothing: the zero action (the middle of every MuJoCo task's action
    box) at every step, which pays no control cost and, where the body stands on its own (ant),
    the full healthy bonus."""

    def __init__(self, action_space: Any) -> None:
        self.action = np.zeros(action_space.shape, dtype=action_space.dtype)

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return self.action, None


def references(task: TaskSpec, episodes: int) -> dict[str, dict[str, float]]:
    """The rows the generators are read against: the shipped demonstrations of each kind
    (:func:`expert_terms`) and the zero action (:class:`ZeroPolicy`, episode means)."""
    shipped = [kind for kind in DEMO_KINDS if demo_files.demo_path(task.name, kind=kind).is_file()]
    rows = {f"expert demonstrations ({kind})": expert_terms(task, kind) for kind in shipped}
    env = task.make_env()
    zero = rollout_terms(ZeroPolicy(env.action_space), task, episodes, seed=0)
    env.close()
    rows["zero action"] = {key: statistics.fmean(e[key] for e in zero) for key in zero[0]}
    return rows


def markdown(task: TaskSpec, rows: dict[str, dict[str, Any]], refs: Mapping[str, Mapping[str, float]],
             expert_return: float, command: str) -> str:
    """Per method, the means over seeds of each run's episode means; the references beside them,
    each with its normalised return (0: the random policy, 1: the deterministic expert)."""
    lines = [f"# What the final generators earn on {task.name}, term by term", "",
             f"Command: `{command}`. Deterministic policy from each run's last checkpoint, on the "
             "standard environment; per episode: the return, its length, the healthy bonus, the control "
             "cost, the rest (forward progress), the mean absolute action. Methods: mean over seeds of "
             f"each run's episode means. Normalised: `(R - {task.random_return}) / ({expert_return:.1f} - "
             f"{task.random_return})`, the random and the deterministic expert's returns, as in training.",
             "", "| source | runs | return | normalised | length | healthy | control | forward | "
             "mean abs action |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = ("return", "length", "healthy", "control", "forward", "mean_abs_action")

    def cells(values: Mapping[str, float]) -> str:
        norm = (values["return"] - task.random_return) / (expert_return - task.random_return)
        shown = [f"{values['return']:.0f}", f"{norm:.2f}"] + [
            f"{values[k]:.2f}" if k == "mean_abs_action" else f"{values[k]:.0f}" for k in keys[1:]]
        return " | ".join(shown)

    for name, values in refs.items():
        lines.append(f"| {name} | - | {cells(values)} |")
    for method, row in rows.items():
        means = [{k: statistics.fmean(e[k] for e in run) for k in keys} for run in row["episodes"]]
        lines.append(f"| {method} | {len(means)} | "
                     f"{cells({k: statistics.fmean(m[k] for m in means) for k in keys})} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", type=Path, help="an experiment directory (runs/gail/<experiment>)")
    p.add_argument("--methods", required=True, help="comma-separated method directories to read")
    p.add_argument("--episodes", type=int, default=5, help="deterministic episodes per run (default 5)")
    p.add_argument("--output", type=Path, required=True, help="writes OUTPUT.json and OUTPUT.md")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = p.parse_args(argv)
    report_paths(args.output, force=args.force)
    if args.episodes < 1:
        raise L2LError(f"--episodes {args.episodes}: give at least 1")
    runs = finished_runs(args.experiment, [m for m in args.methods.split(",") if m])
    if not any(runs.values()):
        raise L2LError(f"no finished run of {args.methods} under {args.experiment}")
    torch.set_num_threads(1)
    rows: dict[str, dict[str, Any]] = {}
    for method, paths in runs.items():
        if paths:
            done = [run_terms(p, args.episodes) for p in paths]
            rows[method] = {"seeds": [p.name for p in paths], "episodes": [e for _, e in done]}
            prepared = done[0][0]  # the experiment's task and the return training normalises by
            print(f"{method}: {len(paths)} runs", flush=True)
    task, expert_return = prepared.task, prepared.expert_return
    refs = references(task, args.episodes)
    command = "python scripts/gail_reward_terms.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {"task": task.name, "episodes": args.episodes, "expert_return": expert_return,
              "random_return": task.random_return, "references": refs, "methods": rows}
    write_report(args.output, record, markdown(task, rows, refs, expert_return, command))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except L2LError as e:
        sys.exit(f"error: {e}")
