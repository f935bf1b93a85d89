"""``l2l meta train`` and ``l2l meta apply``: :func:`add` fills the ``meta`` parser.

Its handlers import what they run when called and :func:`add` imports only what the options
need, so ``l2l --help`` does not wait for torch.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from l2l_gail.cli_support import (
    add_command,
    add_commands,
    add_dataclass_options,
    add_run_options,
    dataclass_from_args,
    fill_eps,
)
from l2l_gail.errors import L2LError


def _train(args: argparse.Namespace) -> None:
    from l2l_gail.meta.train import MetaConfig, config_dict, meta_train
    from l2l_gail.runs import RunDir, tensorboard_command

    config = dataclass_from_args(MetaConfig, args, seed=args.seed)
    config.validate()
    name = args.name or (f"{config.dataset}-{config.model}-{config.attack}-eps{config.resolved_eps():g}-"
                         f"seed{config.seed}")
    fill_eps(config, "meta", name, args)
    run = RunDir.for_mode("meta", name, config_dict(config), root=args.runs_dir, resume=args.resume,
                          resume_ignore=("episodes",))
    print(f"run directory: {run.path}\n{tensorboard_command(run.tb_dir)}")
    m = run.finished_metrics() if args.resume else None
    if m is not None and m.get("episodes", 0) < config.episodes:
        m = None  # a larger --episodes continues a finished run
    if m is not None:
        print("finished before with this configuration: nothing to do")
    else:
        m = meta_train(config, run, resume=args.resume, progress=not args.no_progress)
    print(f"meta-loss {m['final_meta_loss']:.3f}; last optimizee: clean acc {m['final_clean_acc']:.3f}, "
          f"{config.attack} acc {m['final_robust_acc']:.3f}; learned optimizer: {m['optimizer']}")


def _apply(args: argparse.Namespace) -> None:
    from l2l_gail.meta.apply import ApplyConfig, apply
    from l2l_gail.runs import RunDir

    if args.resume:
        raise L2LError("`l2l meta apply` keeps no checkpoints (a transfer run is short): run it again "
                       "under a new --name")
    config = dataclass_from_args(ApplyConfig, args, seed=args.seed, optimizer=str(args.optimizer))
    config.validate()
    name = args.name or f"{config.dataset}-{config.model}-seed{config.seed}"
    fill_eps(config, "meta-apply", name, args)
    run = RunDir.for_mode("meta-apply", name, dataclasses.asdict(config), root=args.runs_dir)
    m = apply(config, run)
    scores = ", ".join(f"{k[:-4]} {m[k]:.4f}" for k in m if k.endswith("_acc"))
    print(f"trained {config.model} ({m['params']:,} parameters) on {m['train_size']} clean {config.dataset} "
          f"images in {m['train_seconds']:.1f} s; on {m['n']} test images at eps {config.eps:g}: {scores}; "
          f"results: {run.metrics_path}")


def add(mode: argparse.ArgumentParser) -> None:
    """Add ``train`` and ``apply`` to the ``l2l meta`` parser ``mode``."""
    from l2l_gail.meta.apply import ApplyConfig
    from l2l_gail.meta.optimizees import OPTIMIZEES
    from l2l_gail.meta.train import GRADIENT_SOURCES, MLP_SHAPES, RULE_INITS, TRAIN_ATTACKS, MetaConfig

    sub = add_commands(mode)
    train = add_command(sub, "train", "meta-train the learned optimizer on adversarial batches", _train,
                        "Meta-train the coordinatewise LSTM optimizer: fresh optimizees, adversarial (FGSM "
                        "or PGD) batches, truncated BPTT. Writes RUNS_DIR/meta/<name>/ with optimizer.pt.")
    add_dataclass_options(train, MetaConfig, skip=("seed",), choices={
        "model": OPTIMIZEES, "attack": TRAIN_ATTACKS, "gradient": GRADIENT_SOURCES, "rule_init": RULE_INITS,
        "mlp_shape": tuple(MLP_SHAPES)})
    add_run_options(train, "<dataset>-<model>-<attack>-eps<eps>-seed<seed>")
    app = add_command(sub, "apply",
                      "train a new model on clean data with a learned optimizer, then attack it", _apply,
                      "Train a model on clean data only with the frozen learned optimizer (no "
                      "adversarial example is generated), then evaluate clean, FGSM, PGD-20 and AutoAttack "
                      "accuracy. Writes RUNS_DIR/meta-apply/<name>/ with model.pt and metrics.json.")
    app.add_argument("--optimizer", type=Path, required=True,
                     help="learned-optimizer file written by `l2l meta train`")
    add_dataclass_options(app, ApplyConfig, skip=("seed", "optimizer"), choices={"model": OPTIMIZEES})
    add_run_options(app, "<dataset>-<model>-seed<seed>")
