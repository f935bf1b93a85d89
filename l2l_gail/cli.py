"""The ``l2l`` command line: ``l2l vision ...``, ``l2l meta ...``, ``l2l expert ...``, ``l2l gail ...``.

Each subcommand parses its options here and calls into its mode; every
:class:`~l2l_gail.errors.L2LError` becomes a one-line ``error: ...`` message and exit status 2.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def _mode(subparsers: argparse._SubParsersAction, name: str, help_: str,
          description: str) -> argparse._SubParsersAction:
    """Add the mode ``l2l <name>`` and return the action its commands are added to."""
    mode = subparsers.add_parser(name, help=help_, description=description, formatter_class=_Formatter)
    return mode.add_subparsers(dest="command", required=True, metavar="COMMAND")


def _add_run_options(parser: argparse.ArgumentParser, default_name: str | None = None) -> None:
    parser.add_argument("--name", default=default_name,
                        help="run name: results go to RUNS_DIR/<mode>/<name>/ (refused if it exists)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="root of all run directories (default: $L2L_RUNS or ./runs)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUNS_DIR/<mode>/<name>/ from its last checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


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


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, *,
                          skip: Sequence[str] = ()) -> None:
    """One ``--option`` per field of the configuration dataclass ``cls``, documented by the
    field's docstring, so the configuration and its ``--help`` cannot drift apart."""
    docs = field_docs(cls)
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
            parser.add_argument(flag, type=typ, default=f.default, dest=f.name, help=help_)


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build ``cls`` from the parsed options added by :func:`add_dataclass_options`."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides)
    return cls(**values)


# ----------------------------------------------------------------------------- vision
def _vision_train(args: argparse.Namespace) -> None:
    from l2l_gail.runs import RunDir
    from l2l_gail.vision.train import VisionConfig, train

    config = dataclass_from_args(VisionConfig, args)
    config.validate()
    name = args.name or f"{config.dataset}-{config.method}-seed{config.seed}"
    run = RunDir.for_mode("vision", name, dataclasses.asdict(config), root=args.runs_dir, resume=args.resume,
                          resume_ignore=("device",))
    print(f"run directory: {run.path}\ntensorboard --logdir {run.tb_dir}")
    m = train(config, run, resume=args.resume, progress=not args.no_progress)
    print(f"{config.method}: test clean acc {m['final_test_clean_acc']:.4f}, PGD-{config.eval_pgd_steps} "
          f"acc {m[f'final_test_pgd{config.eval_pgd_steps}_acc']:.4f} on {m['eval_subset']} test images; "
          f"median epoch {m['epoch_seconds_median']:.1f} s; model: {run.path / 'model.pt'}")


def _vision_eval(args: argparse.Namespace) -> None:
    import torch

    from l2l_gail.runs import write_json
    from l2l_gail.vision.attacks import build_attack
    from l2l_gail.vision.evaluate import evaluate
    from l2l_gail.vision.train import load_classifier, select_device

    if args.output is not None and args.output.exists():
        raise L2LError(f"{args.output} exists; choose another --output (results are never overwritten)")
    device = select_device(args.device)
    model, config, data = load_classifier(args.checkpoint, device, args.data_dir)
    eps = args.eps if args.eps is not None else config.resolved_eps()
    attacks = [build_attack(a, eps, pgd_step=args.pgd_step, restarts=args.restarts,
                            autoattack_version=args.autoattack_version, seed=args.seed)
               for a in args.attacks.split(",") if a.strip()]
    n = args.test_subset or len(data.test_y)
    torch.manual_seed(args.seed)  # the attacks' random starts
    result = evaluate(model, data.test_x[:n], data.test_y[:n], attacks, batch_size=args.batch_size,
                      device=device, progress=not args.no_progress)
    result.update(checkpoint=str(args.checkpoint), eps=eps, attacks=[a.name for a in attacks])
    for k in ["clean_acc", *(f"{a.name}_acc" for a in attacks), "worst_case_acc"]:
        print(f"{k:>20s}  {100 * result[k]:6.2f} %")
    if args.output is not None:
        write_json(args.output, result)
        print(f"written {args.output}")


def _add_vision(subparsers: argparse._SubParsersAction) -> None:
    from l2l_gail.vision.train import VisionConfig

    sub = _mode(subparsers, "vision", "adversarial training of image classifiers",
                "Adversarial training with a learned attacker "
                "(Jiang et al., arXiv 1811.01213) and its baselines.")
    train = _sub(sub, "train", "train a classifier with one method", _vision_train,
                 "Train a classifier. Methods: standard, fgsm-rs (Wong et al. 2020), pgd (Madry et "
                 "al. 2018), trades (Zhang et al. 2019), l2l-naive, l2l-grad, l2l-2step, l2l-kstep "
                 "(learned attacker, 1811.01213). Writes RUNS_DIR/vision/<name>/.")
    add_dataclass_options(train, VisionConfig, skip=("seed",))
    _add_run_options(train)
    ev = _sub(sub, "eval", "evaluate a trained classifier under attacks", _vision_eval,
              "Clean accuracy, accuracy under each attack and the per-example worst case, "
              "with the model in eval mode.")
    ev.add_argument("checkpoint", type=Path, help="a run directory or its model.pt")
    ev.add_argument("--attacks", default="fgsm,pgd20,cw,autoattack",
                    help="comma-separated: fgsm, pgd<K> (e.g. pgd20), cw (CW-L-inf, 30 steps), autoattack")
    ev.add_argument("--eps", type=float, default=None, help="L-inf radius (default: the training eps)")
    ev.add_argument("--pgd-step", type=float, default=None, help="PGD/CW step size (default 2.5*eps/steps)")
    ev.add_argument("--restarts", type=int, default=1, help="random restarts of PGD and CW")
    ev.add_argument("--autoattack-version", default="standard", choices=("standard", "fast"),
                    help="standard: APGD-CE, APGD-T, FAB-T, Square; fast: APGD-CE and APGD-T only")
    ev.add_argument("--test-subset", type=int, default=None, help="evaluate the first N test images")
    ev.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    ev.add_argument("--data-dir", default=None, help="data directory (default: the training run's)")
    ev.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    ev.add_argument("--output", type=Path, default=None, help="also write the results as JSON here")
    ev.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts")
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")


# ----------------------------------------------------------------------------- expert
def _expert_train(args: argparse.Namespace) -> None:
    from l2l_gail.gail.expert import set_threads, train_expert
    from l2l_gail.gail.tasks import load_task
    from l2l_gail.runs import RunDir

    task = load_task(args.task)
    set_threads(args.threads)
    config = {"task": task.name, "env_id": task.env_id, "seed": args.seed, "expert": task.expert,
              "timesteps": args.timesteps or task.expert["timesteps"],
              "target_return": args.target_return}
    run = RunDir.for_mode("expert", args.name or task.name, config, root=args.runs_dir,
                          resume=args.resume, resume_ignore=("timesteps", "target_return"))
    print(f"training {task.expert['algo'].upper()} expert for {task.env_id} in {run.path} "
          f"(tensorboard --logdir {run.tb_dir})")
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
    sub = _mode(subparsers, "expert", "train experts and manage demonstrations",
                "Train MuJoCo experts with stable-baselines3, roll "
                "them out into demonstrations, and list the shipped ones.")
    train = _sub(sub, "train", "train a task's expert (algorithm and budget from envs/<task>.yaml)",
                 _expert_train)
    train.add_argument("--task", required=True, help="task name (a file envs/<task>.yaml)")
    train.add_argument("--timesteps", type=int, default=None,
                       help="training budget in env steps "
                       "(default: the task file's expert.timesteps)")
    train.add_argument("--target-return", type=float, default=None,
                       help="stop once the evaluated mean return reaches this (default: the task "
                       "file's expert.threshold); with --resume, a higher target continues a run "
                       "that stopped at the threshold")
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
    import yaml

    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise L2LError(f"{flag} takes KEY=VALUE (e.g. {flag} learning_rate=1e-4), got {pair!r}")
        try:
            values[key.strip()] = yaml.safe_load(raw)
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

    methods = [m for m in args.methods.split(",") if m] if args.methods else None
    out = compare(args.experiment, args.output, force=args.force, methods=methods)
    print(out.markdown.read_text(), end="")
    for run_dir in out.unfinished:
        print(f"note: {run_dir} is unfinished and left out (continue it with --resume)")
    print(f"results: {out.json}\ntable:   {out.markdown}\nplot:    {out.plot}")


def _add_gail(subparsers: argparse._SubParsersAction) -> None:
    from l2l_gail.gail.config import L2L_TARGETS, METHODS, GAILConfig

    sub = _mode(subparsers, "gail", "GAIL with learned discriminator / policy updates",
                "GAIL (Ho & Ermon 2016) with an Adam, gradient-penalty "
                "or learned (L2L) discriminator update, and stability comparisons.")
    train = _sub(sub, "train", "train one method on one task for several seeds", _gail_train,
                 "Train GAIL with a PPO generator on a task's shipped demonstrations. Methods: gail "
                 "(Adam discriminator), gail-gp (+ gradient penalty, Gulrajani et al. 2017 / Kostrikov "
                 "et al. 2019), l2l-gail (learned optimizer trained online on held-out discriminator "
                 "loss). Hyper-parameters come from envs/<task>.yaml; the options below override them. "
                 "Runs go to RUNS_DIR/gail/<experiment>/<method>/seed<k>/.")
    train.add_argument("--task", required=True, help="task name (a file envs/<task>.yaml)")
    train.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    train.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    train.add_argument("--experiment", default=None,
                       help="experiment name: runs go to RUNS_DIR/gail/<experiment>/ (default: the task)")
    add_dataclass_options(train, GAILConfig, skip=("task", "method", "seed", "l2l_target"))
    train.add_argument("--l2l-target", default="discriminator", choices=L2L_TARGETS,
                       help="l2l-gail: what the learned optimizer steps")
    train.add_argument("--ppo", action="append", default=[], metavar="KEY=VALUE",
                       help="override one PPO hyper-parameter of the task file (repeatable)")
    train.add_argument("--data-dir", type=Path, default=None,
                       help="demonstrations directory (default: the repository's expert_data/)")
    train.add_argument("--runs-dir", type=Path, default=None,
                       help="root of all run directories (default: $L2L_RUNS or ./runs)")
    train.add_argument("--resume", action="store_true",
                       help="continue every seed's run from its last checkpoint")
    train.add_argument("--threads", type=int, default=1, help="torch threads")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cmp = _sub(sub, "compare", "compare the methods of an experiment (stability metrics, table, plot)",
               _gail_compare,
               "Per run: final, peak, max drawdown, collapse and AUC of the normalised return; per "
               "method: IQM and bootstrap 95% CI of final, its std, collapsed runs, median drawdown and "
               "env steps/s; the discriminator's accuracy, logits, update norm and reward over the last "
               "20% of rounds. Writes JSON, a markdown table and a PNG plot.")
    cmp.add_argument("experiment", type=Path, help="an experiment directory, RUNS_DIR/gail/<experiment>")
    cmp.add_argument("--output", type=Path, default=None,
                     help="results JSON (default: results/gail/<task>.json); .md and .png go beside it")
    cmp.add_argument("--force", action="store_true", help="overwrite existing results")
    cmp.add_argument("--methods", default=None,
                     help="comma-separated methods (run labels) to compare, in this order (default: all)")


# ----------------------------------------------------------------------------- meta
def _meta_train(args: argparse.Namespace) -> None:
    from l2l_gail.meta.train import MetaConfig, config_dict, meta_train
    from l2l_gail.runs import RunDir

    config = dataclass_from_args(MetaConfig, args, seed=args.seed)
    config.validate()
    name = args.name or f"{config.dataset}-{config.model}-{config.attack}-eps{config.eps:g}-seed{config.seed}"
    run = RunDir.for_mode("meta", name, config_dict(config), root=args.runs_dir, resume=args.resume,
                          resume_ignore=("episodes",))
    print(f"run directory: {run.path}\ntensorboard --logdir {run.tb_dir}")
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
    run = RunDir.for_mode("meta-apply", name, dataclasses.asdict(config), root=args.runs_dir)
    m = apply(config, run)
    scores = ", ".join(f"{k[:-4]} {m[k]:.4f}" for k in m if k.endswith("_acc"))
    print(f"trained {config.model} ({m['params']:,} parameters) on {m['train_size']} clean {config.dataset} "
          f"images in {m['train_seconds']:.1f} s; on {m['n']} test images at eps {config.eps:g}: {scores}; "
          f"results: {run.metrics_path}")


def _add_meta(subparsers: argparse._SubParsersAction) -> None:
    from l2l_gail.meta.apply import ApplyConfig
    from l2l_gail.meta.train import MetaConfig

    sub = _mode(subparsers, "meta", "meta-learned robust optimizer (2008.05247)",
                "An LSTM optimizer meta-trained on adversarial examples "
                "(Serban et al., arXiv 2008.05247), then used to train new models on "
                "clean data only.")
    train = _sub(sub, "train", "meta-train the learned optimizer on adversarial batches", _meta_train,
                 "Meta-train the coordinatewise LSTM optimizer: fresh optimizees, adversarial (FGSM or "
                 "PGD) batches, truncated BPTT. Writes RUNS_DIR/meta/<name>/ with optimizer.pt.")
    add_dataclass_options(train, MetaConfig, skip=("seed",))
    _add_run_options(train)
    app = _sub(sub, "apply", "train a new model on clean data with a learned optimizer, then attack it",
               _meta_apply, "Train a model on clean data only with the frozen learned optimizer (no "
               "adversarial example is generated), then evaluate clean, FGSM, PGD-20 and AutoAttack "
               "accuracy. Writes RUNS_DIR/meta-apply/<name>/ with model.pt and metrics.json.")
    app.add_argument("--optimizer", type=Path, required=True,
                     help="learned-optimizer file written by `l2l meta train`")
    add_dataclass_options(app, ApplyConfig, skip=("seed", "optimizer"))
    _add_run_options(app)


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2l", formatter_class=_Formatter,
        description="Learned inner optimizers for min-max training: learned attackers for "
        "adversarial training (vision), meta-learned robust optimizers (meta), and L2L-GAIL (gail).",
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    _add_vision(sub)
    _add_expert(sub)
    _add_meta(sub)
    _add_gail(sub)
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
