"""``l2l expert train|random|collect|show``: :func:`add` fills the ``expert`` parser.

Its handlers import what they run (stable-baselines3, gymnasium) when called, so ``l2l --help``
does not wait for them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from l2l_gail.cli_support import (
    DATA_HELP,
    TASK_HELP,
    add_command,
    add_commands,
    add_run_options,
    add_runs_dir,
)


def _train(args: argparse.Namespace) -> None:
    from l2l_gail.gail.expert import set_threads, train_expert
    from l2l_gail.gail.tasks import load_task
    from l2l_gail.runs import RunDir, tensorboard_command

    task = load_task(args.task)
    set_threads(args.threads)
    config = {"task": task.name, "env_id": task.env_id, "seed": args.seed, "expert": task.expert,
              "timesteps": args.timesteps or task.expert["timesteps"],
              "target_return": args.target_return}
    run = RunDir.for_mode("expert", args.name or task.name, config, root=args.runs_dir,
                          resume=args.resume, resume_ignore=("timesteps", "target_return"))
    print(f"training {task.expert['algo'].upper()} expert for {task.env_id} in {run.path} "
          f"({tensorboard_command(run.tb_dir)})")
    metrics = train_expert(task, run, seed=args.seed, timesteps=args.timesteps,
                           target_return=args.target_return, resume=args.resume,
                           progress=not args.no_progress)
    print(f"best mean return {metrics['best_mean_return']} at {metrics['best_timesteps']} steps "
          f"(threshold {metrics['threshold']}, stop at {metrics['target_return']}); "
          f"best policy: {metrics['best_model']}")


def _random(args: argparse.Namespace) -> None:
    from l2l_gail.gail.expert import random_return
    from l2l_gail.gail.tasks import load_task

    task = load_task(args.task)
    mean, std = random_return(task, args.episodes, args.seed)
    print(f"{task.name} ({task.env_id}): random-policy return {mean:.2f} +- {std:.2f} "
          f"over {args.episodes} episodes")


def _collect(args: argparse.Namespace) -> None:
    from l2l_gail.gail import demos, expert_data
    from l2l_gail.gail.expert import set_threads
    from l2l_gail.gail.tasks import DemoKind, load_task

    task = load_task(args.task)
    kind: DemoKind = "stochastic" if args.stochastic else "deterministic"
    data_dir = args.data_dir or demos.writable_data_dir()
    if not args.force:
        demos.refuse_overwrite(task.name, data_dir, kind)  # before any rollout
    policy = args.policy or expert_data.default_policy(task.name, args.runs_dir, data_dir)
    set_threads(args.threads)
    print(f"rolling out {policy} for {args.episodes} episodes of {task.env_id} (seed {args.seed}, "
          f"{kind} actions)")
    path = expert_data.collect(task, policy, args.episodes, args.seed, data_dir=data_dir,
                               force=args.force, stochastic=args.stochastic)
    entry = demos.manifest_entry(demos.read_manifest(data_dir), task.name, kind)
    print(f"wrote {path}: {entry['episodes']} episodes, {entry['transitions']} transitions, "
          f"return {entry['mean_return']:.1f} +- {entry['std_return']:.1f} ({entry['actions']})")
    if entry["mean_return"] < entry["expert_threshold"]:
        print(f"note: below the task's expert threshold {entry['expert_threshold']:.0f}")


def _show(args: argparse.Namespace) -> int:
    from l2l_gail.gail import demos, expert_data

    data_dir = demos.existing_data_dir(args.data_dir or demos.EXPERT_DATA_DIR)
    table, statuses = expert_data.status_table(data_dir)
    print(table)
    failed = [s for s in statuses if not s.ok]
    for status in failed:
        print(f"{status.task} ({status.kind}): {status.error}")
    return 1 if failed else 0


def add(mode: argparse.ArgumentParser) -> None:
    """Add ``train``, ``random``, ``collect`` and ``show`` to the ``l2l expert`` parser ``mode``."""
    sub = add_commands(mode)
    train = add_command(sub, "train", "train a task's expert (algorithm and budget from envs/<task>.yaml)",
                        _train)
    train.add_argument("--task", required=True, help=TASK_HELP)
    train.add_argument("--timesteps", type=int, default=None,
                       help="training budget in env steps "
                       "(default: the task file's expert.timesteps)")
    train.add_argument("--target-return", type=float, default=None,
                       help="stop once the evaluated mean return reaches this (default: the task "
                       "file's expert.threshold); with --resume, a higher target continues a run "
                       "that stopped at the threshold")
    train.add_argument("--threads", type=int, default=1, help="torch threads")
    add_run_options(train, "the task's name")
    rnd = add_command(sub, "random", "measure a uniform random policy's return (for normalised scores)",
                      _random)
    rnd.add_argument("--task", required=True, help=TASK_HELP)
    rnd.add_argument("--episodes", type=int, default=100, help="episodes to average")
    rnd.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    col = add_command(sub, "collect", "roll out a task's expert into expert_data/<task>.npz and update "
                      "MANIFEST.json", _collect,
                      "Roll out a task's expert into <data dir>/<task>.npz (with --stochastic: "
                      "<task>-stochastic.npz), copy the policy to <data dir>/policies/<task>.zip and update "
                      "<data dir>/MANIFEST.json. The data dir is --data-dir, else $L2L_EXPERT_DATA, else "
                      "expert_data/ of the source checkout; the copy a non-editable install puts in "
                      "site-packages is never written to.")
    col.add_argument("--task", required=True, help=TASK_HELP)
    col.add_argument("--episodes", type=int, default=50, help="episodes to roll out")
    col.add_argument("--policy", type=Path, default=None,
                     help="expert policy zip (default: RUNS_DIR/expert/<task>/checkpoints/"
                     "best_model.zip, else model.zip there, else <data dir>/policies/<task>.zip)")
    add_runs_dir(col)
    col.add_argument("--data-dir", type=Path, default=None,
                     help="demonstrations directory to write (default: $L2L_EXPERT_DATA, else "
                     "expert_data/ of the source checkout)")
    col.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    col.add_argument("--threads", type=int, default=1, help="torch threads")
    col.add_argument("--stochastic", action="store_true",
                     help="sample the actions from the expert instead of taking its mean action: a "
                     "PPO/SAC policy's own Gaussian, or for a TD3 actor the Gaussian exploration noise it "
                     "was trained with (expert.hyperparams.action_noise_std), clipped to the action "
                     "bounds; needs the task's deterministic demonstrations from the same policy")
    col.add_argument("--force", action="store_true",
                     help="overwrite existing demonstrations of the task (of this kind)")
    show = add_command(sub, "show", "list the demonstrations and verify them against MANIFEST.json "
                       "(exit status 1 if any fails)", _show)
    show.add_argument("--data-dir", type=Path, default=None, help=DATA_HELP)
