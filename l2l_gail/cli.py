"""The ``l2l`` command line: ``l2l vision ...``, ``l2l meta ...``, ``l2l expert ...``, ``l2l gail ...``.

Each subcommand parses its options here and calls into its mode; every
:class:`~l2l_gail.errors.L2LError` becomes a one-line ``error: ...`` message and exit status 2.

Start-up stays fast (``l2l --help`` must not wait for torch): this module imports no mode. Each
mode in :data:`MODES` adds its commands when it is the one asked for, and each handler imports
what it runs when called.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2l_gail import __version__
from l2l_gail.errors import L2LError

Handler = Callable[[argparse.Namespace], int | None]


class _Formatter(argparse.HelpFormatter):
    """Append each option's default to its help.

    Every default is shown, falsy ones included (``--seed 0``); a ``--flag/--no-flag`` pair shows
    the form that is on by default. Not shown: plain on/off flags (off unless given), ``None``
    and empty defaults (the help text says what happens then), and help that already names a
    default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required:
            return text
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"{text} (default: {action.option_strings[0 if action.default else 1]})"
        default = action.default
        if (action.nargs == 0 or default is None or default is argparse.SUPPRESS
                or (isinstance(default, list | dict | tuple) and not default)):
            return text
        return text + " (default: %(default)s)"

    # Wrap at spaces only: breaking after hyphens splits names such as --no-second-order.
    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Fill each paragraph (blank-line separated); keep indented paragraphs (examples) as
        written."""
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if paragraph.startswith(" "):
                paragraphs.append(textwrap.indent(paragraph, indent))
            else:
                paragraphs.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                                subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(paragraphs)


def _sub(subparsers: argparse._SubParsersAction, name: str, help_: str, handler: Handler,
         description: str | None = None) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_, description=description or help_,
                                   formatter_class=_Formatter)
    parser.set_defaults(handler=handler)
    return parser


def _commands(mode: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The action the commands of ``mode`` (``l2l <mode> COMMAND``) are added to."""
    return mode.add_subparsers(dest="command", required=True, metavar="COMMAND")


def _add_run_options(parser: argparse.ArgumentParser, default_name: str) -> None:
    """``--name`` (``default_name`` describes its default), ``--runs-dir``, ``--resume``, ``--seed``
    and ``--no-progress``: the options of every command that writes a run directory."""
    parser.add_argument("--name", default=None,
                        help="run name: results go to RUNS_DIR/<mode>/<name>/ (refused if it exists; "
                        f"default: {default_name})")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="root of all run directories (default: $L2L_RUNS or ./runs)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUNS_DIR/<mode>/<name>/ from its last checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


TASK_HELP = "task name: a file <task>.yaml in the task directory ($L2L_TASKS_DIR, else envs/)"
DATA_HELP = ("demonstrations directory (default: $L2L_EXPERT_DATA, else expert_data/ of the source "
             "checkout, else the copy installed with the package)")


def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each dataclass field (CleanRL/tyro style), read from the source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = (),
                          choices: Mapping[str, Sequence[str]] | None = None) -> None:
    """One ``--option`` per field of the configuration dataclass ``cls``, documented by the
    field's docstring, so the configuration and its ``--help`` cannot drift apart.

    ``choices`` maps a field to the names it accepts, shown in ``--help`` as ``{a,b,c}``; the
    configuration's own ``validate`` still checks them, so API and command line give one error.
    """
    docs = field_docs(cls)
    choices = choices or {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.default is dataclasses.MISSING:
            continue
        typ = hints[f.name]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
            typ = args[0]
        flag = "--" + f.name.replace("_", "-")
        help_ = docs.get(f.name, f.name.replace("_", " ")).replace("%", "%%")
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        elif typ in (int, float, str):
            metavar = "{" + ",".join(choices[f.name]) + "}" if f.name in choices else None
            parser.add_argument(flag, type=typ, default=f.default, dest=f.name, help=help_, metavar=metavar)


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build ``cls`` from the parsed options added by :func:`add_dataclass_options`."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides)
    return cls(**values)


def _fill_eps(config: Any, mode: str, name: str, args: argparse.Namespace) -> None:
    """Set an unset ``config.eps`` and print, in one line, the eps the run uses and why.

    A new run takes the data set's standard radius, recorded in its config.yaml. ``--resume``
    takes the radius the run recorded, so a default changed since the run started cannot change
    it halfway (a run that recorded none resolves it as it always did, from the data set).
    """
    import yaml

    from l2l_gail.robust.data import describe_eps
    from l2l_gail.runs import DEFAULT_ROOT

    why = "--eps"
    if config.eps is None:
        recorded = Path(args.runs_dir or DEFAULT_ROOT) / mode / name / "config.yaml"
        try:
            stored = yaml.safe_load(recorded.read_text()) if args.resume and recorded.is_file() else {}
        except yaml.YAMLError:
            stored = {}  # RunDir refuses the damaged file with its own message
        stored = stored if isinstance(stored, dict) else {}
        if stored.get("eps") is not None:
            config.eps, why = stored["eps"], f"recorded in {recorded}"
        else:
            why = f"the standard for {config.dataset}; set --eps to change it"
            if "eps" not in stored:  # an old run's "eps: null" stays unset, so that it still resumes
                config.eps = config.resolved_eps()
    print(f"eps {describe_eps(config.resolved_eps())} ({why})")


# ----------------------------------------------------------------------------- vision
def _vision_train(args: argparse.Namespace) -> None:
    from l2l_gail.runs import RunDir, tensorboard_command
    from l2l_gail.vision.train import VisionConfig, train

    config = dataclass_from_args(VisionConfig, args)
    config.validate()
    name = args.name or f"{config.dataset}-{config.method}-seed{config.seed}"
    _fill_eps(config, "vision", name, args)
    run = RunDir.for_mode("vision", name, dataclasses.asdict(config), root=args.runs_dir, resume=args.resume,
                          resume_ignore=("device",))
    print(f"run directory: {run.path}\n{tensorboard_command(run.tb_dir)}")
    m = train(config, run, resume=args.resume, progress=not args.no_progress)
    print(f"{config.method}: test clean acc {m['final_test_clean_acc']:.4f}, PGD-{config.eval_pgd_steps} "
          f"acc {m[f'final_test_pgd{config.eval_pgd_steps}_acc']:.4f} on {m['eval_subset']} test images; "
          f"median epoch {m['epoch_seconds_median']:.1f} s; model: {run.path / 'model.pt'}")


def _vision_eval(args: argparse.Namespace) -> None:
    from l2l_gail.runs import write_json
    from l2l_gail.vision.train import EvalConfig, evaluate_checkpoint, select_device

    if args.output is not None and args.output.exists():
        raise L2LError(f"{args.output} exists; choose another --output (results are never overwritten)")
    config = dataclass_from_args(EvalConfig, args)
    result = evaluate_checkpoint(args.checkpoint, config, data_dir=args.data_dir,
                                 device=select_device(args.device), progress=not args.no_progress)
    for k in ["clean_acc", *(f"{a}_acc" for a in result["attacks"]), "worst_case_acc"]:
        print(f"{k:>20s}  {100 * result[k]:6.2f} %")
    if args.output is not None:
        write_json(args.output, result)
        print(f"written {args.output}")


def _add_vision(mode: argparse.ArgumentParser) -> None:
    from l2l_gail.robust.data import DATASETS
    from l2l_gail.robust.models import MODELS
    from l2l_gail.vision.methods import METHODS
    from l2l_gail.vision.train import EvalConfig, VisionConfig

    sub = _commands(mode)
    train = _sub(sub, "train", "train a classifier with one method", _vision_train,
                 "Train a classifier. Methods: standard, fgsm-rs (Wong et al. 2020), pgd (Madry et "
                 "al. 2018), trades (Zhang et al. 2019), l2l-naive, l2l-grad, l2l-2step, l2l-kstep "
                 "(learned attacker, 1811.01213). Writes RUNS_DIR/vision/<name>/.")
    add_dataclass_options(train, VisionConfig, skip=("seed",),
                          choices={"dataset": DATASETS, "model": MODELS, "method": METHODS})
    _add_run_options(train, "<dataset>-<method>-seed<seed>")
    ev = _sub(sub, "eval", "evaluate a trained classifier under attacks", _vision_eval,
              "Clean accuracy, accuracy under each attack and the per-example worst case, "
              "with the model in eval mode.")
    ev.add_argument("checkpoint", type=Path, help="a run directory or its model.pt")
    add_dataclass_options(ev, EvalConfig, choices={"autoattack_version": ("standard", "fast")})
    ev.add_argument("--data-dir", default=None, help="data directory (default: the training run's)")
    ev.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    ev.add_argument("--output", type=Path, default=None,
                    help="also write the results as JSON here (default: print them only)")
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")


# ----------------------------------------------------------------------------- expert
def _expert_train(args: argparse.Namespace) -> None:
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


def _expert_random(args: argparse.Namespace) -> None:
    from l2l_gail.gail.expert import random_return
    from l2l_gail.gail.tasks import load_task

    task = load_task(args.task)
    mean, std = random_return(task, args.episodes, args.seed)
    print(f"{task.name} ({task.env_id}): random-policy return {mean:.2f} +- {std:.2f} "
          f"over {args.episodes} episodes")


def _expert_collect(args: argparse.Namespace) -> None:
    from l2l_gail.gail import demos, expert_data
    from l2l_gail.gail.expert import set_threads
    from l2l_gail.gail.tasks import load_task

    task = load_task(args.task)
    data_dir = args.data_dir or demos.writable_data_dir()
    if not args.force:
        demos.refuse_overwrite(task.name, data_dir)  # before any rollout
    policy = args.policy or expert_data.default_policy(task.name, args.runs_dir, data_dir)
    set_threads(args.threads)
    print(f"rolling out {policy} for {args.episodes} episodes of {task.env_id} (seed {args.seed})")
    path = expert_data.collect(task, policy, args.episodes, args.seed, data_dir=data_dir,
                              force=args.force)
    entry = demos.read_manifest(data_dir)["tasks"][task.name]
    print(f"wrote {path}: {entry['episodes']} episodes, {entry['transitions']} transitions, "
          f"return {entry['mean_return']:.1f} +- {entry['std_return']:.1f}")
    if entry["mean_return"] < entry["expert_threshold"]:
        print(f"note: below the task's expert threshold {entry['expert_threshold']:.0f}")


def _expert_show(args: argparse.Namespace) -> int:
    from l2l_gail.gail import demos, expert_data

    data_dir = demos.existing_data_dir(args.data_dir or demos.EXPERT_DATA_DIR)
    table, statuses = expert_data.status_table(data_dir)
    print(table)
    failed = [s for s in statuses if not s.ok]
    for status in failed:
        print(f"{status.task}: {status.error}")
    return 1 if failed else 0


def _add_expert(mode: argparse.ArgumentParser) -> None:
    sub = _commands(mode)
    train = _sub(sub, "train", "train a task's expert (algorithm and budget from envs/<task>.yaml)",
                 _expert_train)
    train.add_argument("--task", required=True, help=TASK_HELP)
    train.add_argument("--timesteps", type=int, default=None,
                       help="training budget in env steps "
                       "(default: the task file's expert.timesteps)")
    train.add_argument("--target-return", type=float, default=None,
                       help="stop once the evaluated mean return reaches this (default: the task "
                       "file's expert.threshold); with --resume, a higher target continues a run "
                       "that stopped at the threshold")
    train.add_argument("--threads", type=int, default=1, help="torch threads")
    _add_run_options(train, "the task's name")
    rnd = _sub(sub, "random", "measure a uniform random policy's return (for normalised scores)",
               _expert_random)
    rnd.add_argument("--task", required=True, help=TASK_HELP)
    rnd.add_argument("--episodes", type=int, default=100, help="episodes to average")
    rnd.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    col = _sub(sub, "collect", "roll out a task's expert into expert_data/<task>.npz and update "
               "MANIFEST.json", _expert_collect,
               "Roll out a task's expert into <data dir>/<task>.npz, copy the policy to "
               "<data dir>/policies/<task>.zip and update <data dir>/MANIFEST.json. The data dir is "
               "--data-dir, else $L2L_EXPERT_DATA, else expert_data/ of the source checkout; the "
               "copy a non-editable install puts in site-packages is never written to.")
    col.add_argument("--task", required=True, help=TASK_HELP)
    col.add_argument("--episodes", type=int, default=50, help="episodes to roll out")
    col.add_argument("--policy", type=Path, default=None,
                     help="expert policy zip (default: RUNS_DIR/expert/<task>/checkpoints/"
                     "best_model.zip, else model.zip there, else <data dir>/policies/<task>.zip)")
    col.add_argument("--runs-dir", type=Path, default=None,
                     help="root of all run directories (default: $L2L_RUNS or ./runs)")
    col.add_argument("--data-dir", type=Path, default=None,
                     help="demonstrations directory to write (default: $L2L_EXPERT_DATA, else "
                     "expert_data/ of the source checkout)")
    col.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    col.add_argument("--threads", type=int, default=1, help="torch threads")
    col.add_argument("--force", action="store_true",
                     help="overwrite existing demonstrations of the task")
    show = _sub(sub, "show", "list the demonstrations and verify them against MANIFEST.json "
                "(exit status 1 if any fails)", _expert_show)
    show.add_argument("--data-dir", type=Path, default=None, help=DATA_HELP)


# ----------------------------------------------------------------------------- gail
def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise L2LError(f"--seeds must be comma-separated integers such as 0,1,2, got {text!r}") from exc
    if not seeds or len(set(seeds)) != len(seeds):
        raise L2LError(f"--seeds must list distinct integers such as 0,1,2, got {text!r}")
    return seeds


def _parse_key_values(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a mapping; each value is read as YAML (``[64, 64]``, ``true``,
    ``null``), then numeric strings such as ``1e-4`` (a string to YAML 1.1) become numbers."""
    import yaml

    from l2l_gail.gail.tasks import coerce_value

    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise L2LError(f"{flag} takes KEY=VALUE (e.g. {flag} learning_rate=1e-4), got {pair!r}")
        try:
            values[key.strip()] = coerce_value(yaml.safe_load(raw))
        except yaml.YAMLError as exc:
            raise L2LError(f"{flag} {pair!r}: the value is not valid YAML") from exc
    return values


def _gail_train(args: argparse.Namespace) -> None:
    from l2l_gail.gail.config import GAILConfig
    from l2l_gail.gail.expert import set_threads
    from l2l_gail.gail.factory import prepare
    from l2l_gail.gail.train import train_seeds

    seeds = _parse_seeds(args.seeds)
    set_threads(args.threads)
    config = dataclass_from_args(GAILConfig, args, task=args.task, method=args.method, seed=seeds[0],
                                 ppo=_parse_key_values(args.ppo, "--ppo"))
    prepared = prepare(config, args.data_dir)
    experiment = args.experiment or prepared.task.name
    train_seeds(prepared, seeds, experiment, runs_dir=args.runs_dir,
                resume="yes" if args.resume else "no", progress=not args.no_progress, echo=print)


def _gail_compare(args: argparse.Namespace) -> None:
    from l2l_gail.gail.compare import compare
    from l2l_gail.gail.experiment import unfinished_note

    methods = [m for m in args.methods.split(",") if m] if args.methods else None
    out = compare(args.experiments, args.output, force=args.force, methods=methods, baseline=args.baseline,
                  reps=args.bootstrap_reps)
    print(out.markdown.read_text(), end="")
    for experiment, unfinished in out.unfinished.items():
        if unfinished:
            print(f"note: left out: {unfinished_note(experiment, unfinished)}")
    print(f"results: {out.json}\ntable:   {out.markdown}\nplot:    {out.plot}\nprofile: {out.profile}")


def _add_gail(mode: argparse.ArgumentParser) -> None:
    from l2l_gail.gail.compare import BASELINE
    from l2l_gail.gail.config import L2L_TARGETS, META_OBJECTIVES, METHODS, GAILConfig
    from l2l_gail.gail.stats import BOOTSTRAP_REPS

    sub = _commands(mode)
    train = _sub(sub, "train", "train one method on one task for several seeds", _gail_train,
                 "Train GAIL with a PPO generator on a task's shipped demonstrations. Methods: gail "
                 "(Adam discriminator), gail-gp (+ gradient penalty, Gulrajani et al. 2017 / Kostrikov "
                 "et al. 2019), l2l-gail (learned optimizer trained online on held-out discriminator "
                 "loss). Hyper-parameters come from envs/<task>.yaml; the options below override them. "
                 "Runs go to RUNS_DIR/gail/<experiment>/<method>/seed<k>/.")
    train.add_argument("--task", required=True, help=TASK_HELP)
    train.add_argument("--method", required=True, metavar="{" + ",".join(METHODS) + "}",
                       help="the discriminator update: Adam (gail), Adam with a gradient penalty "
                       "(gail-gp) or a learned optimizer (l2l-gail)")
    train.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    train.add_argument("--experiment", default=None,
                       help="experiment name: runs go to RUNS_DIR/gail/<experiment>/ (default: the task)")
    add_dataclass_options(train, GAILConfig, skip=("task", "method", "seed", "l2l_target"),
                          choices={"l2l_objective": META_OBJECTIVES})
    train.add_argument("--l2l-target", default="discriminator", choices=L2L_TARGETS,
                       help="l2l-gail: what the learned optimizer steps")
    train.add_argument("--ppo", action="append", default=[], metavar="KEY=VALUE",
                       help="override one PPO hyper-parameter of the task file's gail.ppo, e.g. "
                       "learning_rate=1e-4 or net_arch=[64,64] (repeatable; default: none)")
    train.add_argument("--data-dir", type=Path, default=None, help=DATA_HELP)
    train.add_argument("--runs-dir", type=Path, default=None,
                       help="root of all run directories (default: $L2L_RUNS or ./runs)")
    train.add_argument("--resume", action="store_true",
                       help="continue every seed's run from its last checkpoint")
    train.add_argument("--threads", type=int, default=1, help="torch threads")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cmp = _sub(sub, "compare", "compare methods over seeds and tasks (statistics, stability, table, plots)",
               _gail_compare,
               "Per task and method: every seed's final (mean normalised return over the last 20% of "
               "evaluations), their IQM with a 95% stratified bootstrap interval (rliable), P(X > baseline) "
               "with its interval and a two-sided Mann-Whitney p-value, failed and collapsed runs, drawdown, "
               "AUC, env steps/s and the discriminator's diagnostics; with several experiments (one task "
               "each) also the IQM and P(X > baseline) over all tasks. Writes JSON, a markdown table, the "
               "curves and the performance profiles (PNG).")
    cmp.add_argument("experiments", type=Path, nargs="+", metavar="EXPERIMENT",
                     help="experiment directories RUNS_DIR/gail/<experiment>, one task each")
    cmp.add_argument("--output", type=Path, default=None,
                     help="results JSON (default with one experiment: EXPERIMENT/compare.json; required with "
                     "several); the .md, .png and -profile.png go beside it")
    cmp.add_argument("--force", action="store_true", help="overwrite existing results")
    cmp.add_argument("--methods", default=None,
                     help="comma-separated methods (run labels) to compare, in this order (default: all)")
    cmp.add_argument("--baseline", default=BASELINE,
                     help=f"the method every other one is compared with (default: {BASELINE})")
    cmp.add_argument("--bootstrap-reps", type=int, default=BOOTSTRAP_REPS,
                     help=f"bootstrap resamples per interval (default: {BOOTSTRAP_REPS}, as rliable)")


# ----------------------------------------------------------------------------- meta
def _meta_train(args: argparse.Namespace) -> None:
    from l2l_gail.meta.train import MetaConfig, config_dict, meta_train
    from l2l_gail.runs import RunDir, tensorboard_command

    config = dataclass_from_args(MetaConfig, args, seed=args.seed)
    config.validate()
    name = args.name or (f"{config.dataset}-{config.model}-{config.attack}-eps{config.resolved_eps():g}-"
                         f"seed{config.seed}")
    _fill_eps(config, "meta", name, args)
    run = RunDir.for_mode("meta", name, config_dict(config), root=args.runs_dir, resume=args.resume,
                          resume_ignore=("episodes",))
    print(f"run directory: {run.path}\n{tensorboard_command(run.tb_dir)}")
    m = meta_train(config, run, resume=args.resume, progress=not args.no_progress)
    print(f"meta-loss {m['final_meta_loss']:.3f}; last optimizee: clean acc {m['final_clean_acc']:.3f}, "
          f"{config.attack} acc {m['final_robust_acc']:.3f}; learned optimizer: {m['optimizer']}")


def _meta_apply(args: argparse.Namespace) -> None:
    from l2l_gail.meta.apply import ApplyConfig, apply
    from l2l_gail.runs import RunDir

    if args.resume:
        raise L2LError("`l2l meta apply` keeps no checkpoints (a transfer run is short): run it again "
                       "under a new --name")
    config = dataclass_from_args(ApplyConfig, args, seed=args.seed, optimizer=str(args.optimizer))
    config.validate()
    name = args.name or f"{config.dataset}-{config.model}-seed{config.seed}"
    _fill_eps(config, "meta-apply", name, args)
    run = RunDir.for_mode("meta-apply", name, dataclasses.asdict(config), root=args.runs_dir)
    m = apply(config, run)
    scores = ", ".join(f"{k[:-4]} {m[k]:.4f}" for k in m if k.endswith("_acc"))
    print(f"trained {config.model} ({m['params']:,} parameters) on {m['train_size']} clean {config.dataset} "
          f"images in {m['train_seconds']:.1f} s; on {m['n']} test images at eps {config.eps:g}: {scores}; "
          f"results: {run.metrics_path}")


def _add_meta(mode: argparse.ArgumentParser) -> None:
    from l2l_gail.meta.apply import ApplyConfig
    from l2l_gail.meta.optimizees import OPTIMIZEES
    from l2l_gail.meta.train import GRADIENT_SOURCES, TRAIN_ATTACKS, MetaConfig

    sub = _commands(mode)
    train = _sub(sub, "train", "meta-train the learned optimizer on adversarial batches", _meta_train,
                 "Meta-train the coordinatewise LSTM optimizer: fresh optimizees, adversarial (FGSM or "
                 "PGD) batches, truncated BPTT. Writes RUNS_DIR/meta/<name>/ with optimizer.pt.")
    add_dataclass_options(train, MetaConfig, skip=("seed",), choices={
        "model": OPTIMIZEES, "attack": TRAIN_ATTACKS, "gradient": GRADIENT_SOURCES})
    _add_run_options(train, "<dataset>-<model>-<attack>-eps<eps>-seed<seed>")
    app = _sub(sub, "apply", "train a new model on clean data with a learned optimizer, then attack it",
               _meta_apply, "Train a model on clean data only with the frozen learned optimizer (no "
               "adversarial example is generated), then evaluate clean, FGSM, PGD-20 and AutoAttack "
               "accuracy. Writes RUNS_DIR/meta-apply/<name>/ with model.pt and metrics.json.")
    app.add_argument("--optimizer", type=Path, required=True,
                     help="learned-optimizer file written by `l2l meta train`")
    add_dataclass_options(app, ApplyConfig, skip=("seed", "optimizer"), choices={"model": OPTIMIZEES})
    _add_run_options(app, "<dataset>-<model>-seed<seed>")


# ----------------------------------------------------------------------------- sweep
SWEEP_HELP = "run a grid of train commands (tasks x methods x seeds) in parallel, locally or on a Ray cluster"


def _add_sweep(mode: argparse.ArgumentParser) -> None:
    from l2l_gail.sweep.cli import DESCRIPTION, add_arguments

    mode.description = DESCRIPTION
    add_arguments(mode)


# ----------------------------------------------------------------------------- main
@dataclass(frozen=True)
class Mode:
    """A mode ``l2l <name>``: its help line and description, and the function that adds its
    commands and options (and imports what they need) to the mode's parser."""

    help: str
    description: str
    add: Callable[[argparse.ArgumentParser], None]


MODES: dict[str, Mode] = {
    "vision": Mode("adversarial training of image classifiers",
                   "Adversarial training with a learned attacker (Jiang et al., arXiv 1811.01213) and "
                   "its baselines.", _add_vision),
    "expert": Mode("train experts and manage demonstrations",
                   "Train MuJoCo experts with stable-baselines3, roll them out into demonstrations, "
                   "and list the shipped ones.", _add_expert),
    "meta": Mode("meta-learned robust optimizer (2008.05247)",
                 "An LSTM optimizer meta-trained on adversarial examples (Serban et al., arXiv "
                 "2008.05247), then used to train new models on clean data only.", _add_meta),
    "gail": Mode("GAIL with learned discriminator / policy updates",
                 "GAIL (Ho & Ermon 2016) with an Adam, gradient-penalty or learned (L2L) "
                 "discriminator update, and stability comparisons.", _add_gail),
    "sweep": Mode(SWEEP_HELP, "Grids of `l2l MODE train` runs on Ray.", _add_sweep),
}


def build_parser(modes: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``l2l`` parser with the commands of ``modes`` (default: every mode).

    The other modes appear in ``l2l --help`` but have no commands: adding a mode's commands
    imports the mode (torch and more), which :func:`main` does only for the mode it runs.
    """
    parser = argparse.ArgumentParser(
        prog="l2l", formatter_class=_Formatter,
        description="Learned inner optimizers for min-max training: learned attackers for "
        "adversarial training (vision), meta-learned robust optimizers (meta), and L2L-GAIL (gail).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    for name, mode in MODES.items():
        mode_parser = sub.add_parser(name, help=mode.help, description=mode.description,
                                     formatter_class=_Formatter)
        if modes is None or name in modes:
            mode.add(mode_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The mode is the first word that is not an option (`l2l` itself takes only options).
    parser = build_parser([a for a in argv if not a.startswith("-")][:1])
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
