"""The ``l2l`` command line: ``l2l vision ...``, ``l2l meta ...``, ``l2l expert ...``, ``l2l gail ...``.

Each subcommand parses its options here and calls into its mode; every
:class:`~l2l_gail.errors.L2LError` becomes a one-line ``error: ...`` message and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from l2l_gail.errors import L2LError

Handler = Callable[[argparse.Namespace], int | None]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the description's line breaks and append each option's default to its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def _sub(subparsers: argparse._SubParsersAction, name: str, help_: str, handler: Handler,
         description: str | None = None) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_, description=description or help_,
                                   formatter_class=_Formatter)
    parser.set_defaults(handler=handler)
    return parser


def _add_run_options(parser: argparse.ArgumentParser, default_name: str | None = None) -> None:
    parser.add_argument("--name", default=default_name,
                        help="run name: results go to RUNS_DIR/<mode>/<name>/ (refused if it exists)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="root of all run directories (default: $L2L_RUNS or ./runs)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUNS_DIR/<mode>/<name>/ from its last checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


# ----------------------------------------------------------------------------- expert
def _expert_train(args: argparse.Namespace) -> None:
    from l2l_gail.gail.expert import set_threads, train_expert
    from l2l_gail.gail.tasks import load_task
    from l2l_gail.runs import RunDir

    task = load_task(args.task)
    set_threads(args.threads)
    config = {"task": task.name, "env_id": task.env_id, "seed": args.seed, "expert": task.expert,
              "timesteps": args.timesteps or task.expert["timesteps"]}
    run = RunDir.for_mode("expert", args.name or task.name, config, root=args.runs_dir,
                          resume=args.resume, resume_ignore=("timesteps",))
    print(f"training {task.expert['algo'].upper()} expert for {task.env_id} in {run.path} "
          f"(tensorboard --logdir {run.tb_dir})")
    metrics = train_expert(task, run, seed=args.seed, timesteps=args.timesteps, resume=args.resume,
                           progress=not args.no_progress)
    print(f"best mean return {metrics['best_mean_return']} at {metrics['best_timesteps']} steps "
          f"(threshold {metrics['threshold']}); best policy: {metrics['best_model']}")


def _expert_random(args: argparse.Namespace) -> None:
    from l2l_gail.gail.expert import random_return
    from l2l_gail.gail.tasks import load_task

    task = load_task(args.task)
    mean, std = random_return(task, args.episodes, args.seed)
    print(f"{task.name} ({task.env_id}): random-policy return {mean:.2f} +- {std:.2f} "
          f"over {args.episodes} episodes")


def _expert_collect(args: argparse.Namespace) -> None:
    from l2l_gail.gail import demos
    from l2l_gail.gail.expert import set_threads
    from l2l_gail.gail.tasks import load_task

    task = load_task(args.task)
    data_dir = args.data_dir or demos.EXPERT_DATA_DIR
    if not args.force:
        demos.refuse_overwrite(task.name, data_dir)  # before any rollout
    policy = args.policy or demos.default_policy(task.name, args.runs_dir, data_dir)
    set_threads(args.threads)
    print(f"rolling out {policy} for {args.episodes} episodes of {task.env_id} (seed {args.seed})")
    path = demos.collect(task, policy, args.episodes, args.seed, data_dir=data_dir,
                         force=args.force)
    entry = demos.read_manifest(data_dir)["tasks"][task.name]
    print(f"wrote {path}: {entry['episodes']} episodes, {entry['transitions']} transitions, "
          f"return {entry['mean_return']:.1f} +- {entry['std_return']:.1f}")
    if entry["mean_return"] < entry["expert_threshold"]:
        print(f"note: below the task's expert threshold {entry['expert_threshold']:.0f}")


def _expert_show(args: argparse.Namespace) -> int:
    from l2l_gail.gail import demos

    data_dir = args.data_dir or demos.EXPERT_DATA_DIR
    table, statuses = demos.status_table(data_dir)
    print(table)
    failed = [s for s in statuses if not s.ok]
    for status in failed:
        print(f"{status.task}: {status.error}")
    return 1 if failed else 0


def _add_expert(subparsers: argparse._SubParsersAction) -> None:
    expert = subparsers.add_parser("expert", help="train experts and manage demonstrations",
                                   description="Train MuJoCo experts with stable-baselines3, roll "
                                   "them out into demonstrations, and list the shipped ones.")
    sub = expert.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = _sub(sub, "train", "train a task's expert (algorithm and budget from envs/<task>.yaml)",
                 _expert_train)
    train.add_argument("--task", required=True, help="task name (a file envs/<task>.yaml)")
    train.add_argument("--timesteps", type=int, default=None,
                       help="training budget in env steps "
                       "(default: the task file's expert.timesteps)")
    train.add_argument("--threads", type=int, default=1, help="torch threads")
    _add_run_options(train)
    rnd = _sub(sub, "random", "measure a uniform random policy's return (for normalised scores)",
               _expert_random)
    rnd.add_argument("--task", required=True, help="task name (a file envs/<task>.yaml)")
    rnd.add_argument("--episodes", type=int, default=100, help="episodes to average")
    rnd.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    data_help = "demonstrations directory (default: the repository's expert_data/)"
    col = _sub(sub, "collect", "roll out a task's expert into expert_data/<task>.npz and update "
               "MANIFEST.json", _expert_collect)
    col.add_argument("--task", required=True, help="task name (a file envs/<task>.yaml)")
    col.add_argument("--episodes", type=int, default=50, help="episodes to roll out")
    col.add_argument("--policy", type=Path, default=None,
                     help="expert policy zip (default: RUNS_DIR/expert/<task>/checkpoints/"
                     "best_model.zip, else model.zip there, else expert_data/policies/<task>.zip)")
    col.add_argument("--runs-dir", type=Path, default=None,
                     help="root of all run directories (default: $L2L_RUNS or ./runs)")
    col.add_argument("--data-dir", type=Path, default=None, help=data_help)
    col.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    col.add_argument("--threads", type=int, default=1, help="torch threads")
    col.add_argument("--force", action="store_true",
                     help="overwrite existing demonstrations of the task")
    show = _sub(sub, "show", "list the demonstrations and verify them against MANIFEST.json "
                "(exit status 1 if any fails)", _expert_show)
    show.add_argument("--data-dir", type=Path, default=None, help=data_help)


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2l", formatter_class=_Formatter,
        description="Learned inner optimizers for min-max training: learned attackers for "
        "adversarial training (vision), meta-learned robust optimizers (meta), and L2L-GAIL (gail).",
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    _add_expert(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except L2LError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
