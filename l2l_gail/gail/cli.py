"""``l2l gail train`` and ``l2l gail compare``: :func:`add` fills the ``gail`` parser.

Its handlers import what they run when called and :func:`add` imports only what the options
need, so ``l2l --help`` does not wait for torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l2l_gail.cli_support import (
    DATA_HELP,
    TASK_HELP,
    add_command,
    add_commands,
    add_dataclass_options,
    add_runs_dir,
    dataclass_from_args,
)
from l2l_gail.errors import L2LError


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


def _train(args: argparse.Namespace) -> None:
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


def _compare(args: argparse.Namespace) -> None:
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


def add(mode: argparse.ArgumentParser) -> None:
    """Add ``train`` and ``compare`` to the ``l2l gail`` parser ``mode``."""
    from l2l_gail.gail.compare import BASELINE
    from l2l_gail.gail.config import CHOICES, GAILConfig
    from l2l_gail.gail.stats import BOOTSTRAP_REPS

    sub = add_commands(mode)
    train = add_command(sub, "train", "train one method on one task for several seeds", _train,
                        "Train GAIL with a PPO generator on a task's shipped demonstrations. Methods: gail "
                        "(Adam discriminator), gail-gp (+ gradient penalty, Gulrajani et al. 2017 / "
                        "Kostrikov et al. 2019), l2l-gail (learned optimizer trained online on held-out "
                        "discriminator loss; its --l2l-* options give the controls and variants), sign-sgd "
                        "(signSGD, Bernstein et al. 2018). Hyper-parameters come from envs/<task>.yaml; the "
                        "options below override them. The generator is evaluated on the task's true reward "
                        "in its standard environment, whatever --fixed-horizon. Runs go to "
                        "RUNS_DIR/gail/<experiment>/<method>/seed<k>/.")
    train.add_argument("--task", required=True, help=TASK_HELP)
    train.add_argument("--method", required=True, metavar="{" + ",".join(CHOICES["method"]) + "}",
                       help="the discriminator update: Adam (gail), Adam with a gradient penalty "
                       "(gail-gp), a learned optimizer (l2l-gail) or lr x sign(grad) (sign-sgd)")
    train.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    train.add_argument("--experiment", default=None,
                       help="experiment name: runs go to RUNS_DIR/gail/<experiment>/ (default: the task)")
    add_dataclass_options(train, GAILConfig, skip=("task", "method", "seed", "l2l_target"),
                          choices=CHOICES)
    train.add_argument("--l2l-target", default="discriminator", choices=CHOICES["l2l_target"],
                       help="l2l-gail: what the learned optimizer steps")
    train.add_argument("--ppo", action="append", default=[], metavar="KEY=VALUE",
                       help="override one PPO hyper-parameter of the task file's gail.ppo, e.g. "
                       "learning_rate=1e-4 or net_arch=[64,64] (repeatable; default: none)")
    train.add_argument("--data-dir", type=Path, default=None, help=DATA_HELP)
    add_runs_dir(train)
    train.add_argument("--resume", action="store_true",
                       help="continue every seed's run from its last checkpoint")
    train.add_argument("--threads", type=int, default=1, help="torch threads")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cmp = add_command(sub, "compare",
                      "compare methods over seeds and tasks (statistics, stability, table, plots)", _compare,
                      "Per task and method: every seed's final (mean normalised return over the last 20% of "
                      "evaluations), their IQM with a 95% stratified bootstrap interval (rliable), P(X > "
                      "baseline) with its interval and a two-sided Mann-Whitney p-value, failed and "
                      "collapsed runs, drawdown, AUC, env steps/s and both players' diagnostics; with "
                      "several experiments (one task each) also the IQM and P(X > baseline) over all tasks. "
                      "Writes JSON, a markdown table, the curves and the performance profiles (PNG).")
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
