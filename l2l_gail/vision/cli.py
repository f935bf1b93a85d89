"""``l2l vision train`` and ``l2l vision eval``: :func:`add` fills the ``vision`` parser.

Its handlers import what they run when called and :func:`add` imports only what the options
need (data sets, models, methods and the configuration), so ``l2l --help`` does not wait for torch.
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
    from l2l_gail.runs import RunDir, tensorboard_command
    from l2l_gail.vision.train import VisionConfig, train

    config = dataclass_from_args(VisionConfig, args)
    config.validate()
    name = args.name or f"{config.dataset}-{config.method}-seed{config.seed}"
    fill_eps(config, "vision", name, args)
    run = RunDir.for_mode("vision", name, dataclasses.asdict(config), root=args.runs_dir, resume=args.resume,
                          resume_ignore=("device",))
    print(f"run directory: {run.path}\n{tensorboard_command(run.tb_dir)}")
    m = run.finished_metrics() if args.resume else None
    if m is not None:
        print("finished before with this configuration: nothing to do")
    else:
        m = train(config, run, resume=args.resume, progress=not args.no_progress)
    print(f"{config.method}: test clean acc {m['final_test_clean_acc']:.4f}, PGD-{config.eval_pgd_steps} "
          f"acc {m[f'final_test_pgd{config.eval_pgd_steps}_acc']:.4f} on {m['eval_subset']} test images; "
          f"median epoch {m['epoch_seconds_median']:.1f} s; model: {run.path / 'model.pt'}")
    if "best_epoch" in m:
        print(f"best epoch by validation PGD-{config.eval_pgd_steps} ({config.val_size} training images "
              f"held out): {m['best_epoch'] + 1} of {config.epochs}, validation {m['best_val_pgd_acc']:.4f}, "
              f"test clean {m['best_test_clean_acc']:.4f}, PGD-{config.eval_pgd_steps} "
              f"{m[f'best_test_pgd{config.eval_pgd_steps}_acc']:.4f}; model: {run.path / m['best_model']}")


def _eval(args: argparse.Namespace) -> None:
    from l2l_gail.runs import write_json
    from l2l_gail.vision.train import EvalConfig, evaluate_checkpoint, select_device

    if args.output is not None and args.output.exists():
        raise L2LError(f"{args.output} exists; choose another --output (results are never overwritten)")
    config = dataclass_from_args(EvalConfig, args)
    result = evaluate_checkpoint(args.checkpoint, config, data_dir=args.data_dir,
                                 device=select_device(args.device), progress=not args.no_progress)
    for name in ["clean", *result["attacks"], "worst_case"]:
        n = result.get(f"{name}_n", result["n"])
        print(f"{name + '_acc':>20s}  {100 * result[name + '_acc']:6.2f} %  ({n} images)")
    if args.output is not None:
        write_json(args.output, result)
        print(f"written {args.output}")


def add(mode: argparse.ArgumentParser) -> None:
    """Add ``train`` and ``eval`` to the ``l2l vision`` parser ``mode``."""
    from l2l_gail.robust.data import DATASETS
    from l2l_gail.robust.models import MODELS
    from l2l_gail.vision.methods import ATTACKER_INITS, METHODS
    from l2l_gail.vision.train import EvalConfig, VisionConfig

    sub = add_commands(mode)
    train = add_command(sub, "train", "train a classifier with one method", _train,
                        "Train a classifier. Methods: standard, fgsm-rs (Wong et al. 2020), pgd (Madry et "
                        "al. 2018), trades (Zhang et al. 2019), l2l-naive, l2l-grad, l2l-2step, l2l-kstep "
                        "(learned attacker, 1811.01213). Writes RUNS_DIR/vision/<name>/.")
    add_dataclass_options(train, VisionConfig, skip=("seed",),
                          choices={"dataset": DATASETS, "model": MODELS, "method": METHODS,
                                   "attacker_init": ATTACKER_INITS})
    add_run_options(train, "<dataset>-<method>-seed<seed>")
    ev = add_command(sub, "eval", "evaluate a trained classifier under attacks", _eval,
                     "Clean accuracy, accuracy under each attack and the per-example worst case, "
                     "with the model in eval mode.")
    ev.add_argument("checkpoint", type=Path,
                    help="a run directory or its model.pt (the last epoch), or model-best.pt (the epoch "
                         "of best validation PGD accuracy, runs trained with --val-size)")
    add_dataclass_options(ev, EvalConfig, choices={"autoattack_version": ("standard", "fast")})
    ev.add_argument("--data-dir", default=None, help="data directory (default: the training run's)")
    ev.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    ev.add_argument("--output", type=Path, default=None,
                    help="also write the results as JSON here (default: print them only)")
    ev.add_argument("--no-progress", action="store_true", help="hide progress bars")
