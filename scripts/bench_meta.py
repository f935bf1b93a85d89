#!/usr/bin/env python
"""Benchmark: does a meta-learned robust optimizer (Serban et al., arXiv 2008.05247) transfer robustness?

1. Meta-train the coordinatewise LSTM optimizer on the MNIST MLP (784-20-10) with FGSM batches,
   once per training eps (0.1 and 0.3), plus variants: ``cleangrad`` (the LSTM reads clean
   gradients, as it will at transfer time, and is rewarded for lowering the adversarial loss),
   ``lstm1x10`` (a 1 x 10 LSTM, 3-4x cheaper per step) and ``clean20`` (eps 0.3 with the final
   clean loss weighted like the 20 adversarial terms, against the collapse to constant outputs).
2. For each setting, train the same model three ways for the same epochs on the same batches:
   Adam on clean data (``adam_clean``), the frozen learned optimizer on clean data
   (``learned_clean``), PGD-10 adversarial training with Adam (``pgd_at``); evaluate clean,
   PGD-20 and AutoAttack accuracy, and time the training loop.

Settings: (a) same architecture and data (MNIST MLP; eps 0.1 and 0.3), (b) MLP -> small CNN,
(c) MNIST -> Fashion-MNIST, (d) low data (1,000 MNIST images; 5,000 Fashion-MNIST images, since
the offline MNIST source has 4,500 training images). The meta-training runs, then the cells
(one way, setting and seed each), are two sweeps (:mod:`l2l_gail.sweep`): ``--jobs`` at a time
on this machine or on a Ray cluster with ``--address``, each job this script with
``--run-optimizer NAME`` or ``--run-cell SETTING:WAY:SEED`` in its own process, writing under
``--runs-dir``. Finished cells are kept in ``<out>/cells.json`` and skipped on a re-run;
meta-training runs resume. Writes ``<out>/transfer.json`` and ``<out>/transfer.md``; the
per-step cost table is timed in this process.

    python scripts/bench_meta.py                 # the committed budget
    python scripts/bench_meta.py --quick --out /tmp/meta-quick

``--frontier`` runs the matched-accuracy frontier instead (issue 15): the LSTM rule and the MLP rule
are meta-trained with the library's defaults on the offline MNIST images, a sweep of ``l2l meta
train`` runs (``RUNS_DIR/meta/bench-frontier/<rule>/seed0/``); then every arm -- Adam at each of
``--adam-lrs`` and each learned optimizer -- trains fresh optimizees (the MLP; in setting b, the
small CNN the rules never saw in meta-training) on clean data, and PGD-10 adversarial training with
Adam at each of ``--pgd-at-lrs`` (eps ramped up over the first epoch: at full eps from the start it
collapses to a constant classifier) trains them as the reference of ``gap_closed``; one sweep job
per setting, arm and seed (this script with ``--run-curve SETTING:ARM:SEED``), evaluated at
``--checkpoints`` evenly spaced steps from step 0 to the end: clean, FGSM and PGD-20 accuracy on
``--test-size`` held-out test images. The offline MNIST source holds only 500 test images, so the
other 500 are carved from its training images, which then no run -- meta-training included -- ever
trains on (``l2l meta train --test-size``). The Adam and PGD-AT runs do not need meta-training
and run beside it. Finished curves are kept in ``<runs-dir>/frontier-curves.json`` and
skipped on a re-run. :mod:`l2l_gail.meta.frontier` defines the frontier and the margin; writes
``<out>/frontier.{json,md,png}``, the ``cost`` block copied from ``<out>/rule_cost.json``
(``scripts/bench_rule_cost.py``; or ``--cost-file``) when it exists.

    python scripts/bench_meta.py --frontier      # settings a, d, c, b; 5 seeds
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from l2l_gail.core import LearnedOptimizer, LSTMRule, LSTMRuleConfig
from l2l_gail.errors import L2LError, exit_status
from l2l_gail.meta import frontier
from l2l_gail.meta.apply import PGDTrainingWithWarmup, evaluate_model, fit, load_learned
from l2l_gail.meta.optimizees import BENCHMARK_WIDTHS, build_optimizee
from l2l_gail.meta.report import WAYS, markdown_table, setting_entry
from l2l_gail.meta.train import MetaConfig, config_dict, load_data, meta_train
from l2l_gail.robust.training import Method
from l2l_gail.runs import RunDir, atomic_write_text, write_json
from l2l_gail.sweep import Grid, Job, SweepResult, Variant, run_jobs
from l2l_gail.sweep.cli import report
from l2l_gail.sweep.engine import open_pool
from l2l_gail.sweep.grid import parse_seeds
from l2l_gail.vision.methods import build_method

SCRIPT = Path(__file__).resolve()

# name -> MetaConfig overrides (all on the offline MNIST MLP with FGSM batches)
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "mnist-mlp-fgsm-eps0.1": {"eps": 0.1},
    "mnist-mlp-fgsm-eps0.3": {"eps": 0.3},
    "mnist-mlp-fgsm-eps0.1-cleangrad": {"eps": 0.1, "gradient": "clean"},
    "mnist-mlp-fgsm-eps0.1-lstm1x10": {"eps": 0.1, "hidden_size": 10, "num_layers": 1},
    "mnist-mlp-fgsm-eps0.3-clean20": {"eps": 0.3, "clean_weight": 20.0},
}
# name, optimizer, dataset, model, width, train size (None: all), eps
SETTINGS: list[tuple[str, str, str, str, int | None, int | None, float]] = [
    ("a-same", "mnist-mlp-fgsm-eps0.1", "mnist-5k", "mlp", None, None, 0.1),
    ("a-same", "mnist-mlp-fgsm-eps0.3", "mnist-5k", "mlp", None, None, 0.3),
    ("b-arch", "mnist-mlp-fgsm-eps0.1", "mnist-5k", "small-cnn", 8, None, 0.1),
    ("c-data", "mnist-mlp-fgsm-eps0.1", "fashion-mnist", "mlp", None, 10_000, 0.1),
    ("d-low-data", "mnist-mlp-fgsm-eps0.1", "mnist-5k", "mlp", None, 1_000, 0.1),
    ("d-low-data", "mnist-mlp-fgsm-eps0.1", "fashion-mnist", "mlp", None, 5_000, 0.1),
    ("variant-cleangrad", "mnist-mlp-fgsm-eps0.1-cleangrad", "mnist-5k", "mlp", None, None, 0.1),
    ("variant-lstm1x10", "mnist-mlp-fgsm-eps0.1-lstm1x10", "mnist-5k", "mlp", None, None, 0.1),
    ("variant-lstm1x10", "mnist-mlp-fgsm-eps0.1-lstm1x10", "mnist-5k", "small-cnn", 8, None, 0.1),
    ("variant-clean20", "mnist-mlp-fgsm-eps0.3-clean20", "mnist-5k", "mlp", None, None, 0.3),
]
# the frontier's settings: name -> (description, dataset, training images (None: all), optimizee); eps 0.1
FRONTIER_SETTINGS: dict[str, tuple[str, str, int | None, str]] = {
    "a": ("MNIST MLP, eps 0.1", "mnist-5k", None, "mlp"),
    "d": ("MNIST, 1,000 training images, eps 0.1", "mnist-5k", 1_000, "mlp"),
    "c": ("MNIST -> Fashion-MNIST (10,000 training images), eps 0.1", "fashion-mnist", 10_000, "mlp"),
    "b": ("MLP -> small CNN (width 8), MNIST, eps 0.1", "mnist-5k", None, "small-cnn"),
}
FRONTIER_EPS = 0.1
ADAM20: dict[str, Any] = {"rule": "mlp", "rule-init": "adam", "clean-weight": 20}
"""The MLP rule started at its Adam clone, the unroll's final clean loss weighted 20."""
LEARNED: dict[str, tuple[dict[str, Any], int]] = {
    "lstm": ({"rule": "lstm"}, 0),
    "mlp": ({"rule": "mlp"}, 0),
    "lstm-sym": ({"rule": "lstm", "sign-symmetric": True}, 0),
    "mlp-sym": ({"rule": "mlp", "sign-symmetric": True}, 0),
    "lstm-meta1": ({"rule": "lstm"}, 1),
    "lstm-meta2": ({"rule": "lstm"}, 2),
    "mlp-meta1": ({"rule": "mlp"}, 1),
    "mlp-meta2": ({"rule": "mlp"}, 2),
    "lstm-metalr1e-3": ({"rule": "lstm", "meta-lr": 1e-3}, 0),
    "mlp-metalr1e-3": ({"rule": "mlp", "meta-lr": 1e-3}, 0),
    **{f"mlp-{name}{f'-meta{seed}' if seed else ''}": (options, seed)
       for name, options in (("adam20", ADAM20), ("compact20", {**ADAM20, "mlp-shape": "compact"}))
       for seed in (0, 1, 2)},
}
"""The frontier's learned optimizers: label -> (the `l2l meta train` options that make it, the
library's defaults otherwise; its meta-training seed). ``-sym``: odd in the gradient history, so a
drift that ignores the gradient -- one way meta-training collapses -- cannot be learned.
``-meta<k>``: the same rule meta-trained from another seed, which measures how much the outcome
of meta-training, collapse included, depends on it. ``-metalr1e-3``: meta-trained at Adam lr 1e-3
on phi, 1606.04474's code default (``--meta-lr`` sets the others'). ``-adam20``: ``phi`` starts as
the MLP rule's exact Adam clone and the unroll's final clean loss is weighted 20, as much as its 20
adversarial terms: the two changes that stopped meta-training from collapsing (README: "Meta-training
collapses"). ``-compact20``: the same with ``--mlp-shape compact``, the cheaper step."""
FRONTIER_META_DATA = "mnist-5k"
"""Every learned optimizer of the frontier is meta-trained here (settings c and d transfer it)."""
VARIANT_NOTES = {"cleangrad": " (LSTM reads clean gradients)", "lstm1x10": " (LSTM 1 x 10 units)",
                 "clean20": " (final clean loss weighted 20, as much as the 20 adversarial terms)"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/meta"), help="results directory")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench-meta"), help="meta-training runs")
    p.add_argument("--seeds", default=None,
                   help="seeds of the transfer runs, e.g. 0,1,2 or 0-4 (default: 0,1,2; --frontier: 0-4)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of every transfer run")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--adam-lr", type=float, default=1e-3, help="Adam learning rate (adam_clean, pgd_at)")
    p.add_argument("--eval-subset", type=int, default=500, help="test images evaluated")
    p.add_argument("--autoattack-version", default="fast", choices=("standard", "fast"))
    p.add_argument("--episodes", type=int, default=20, help="meta-training episodes (fresh optimizees)")
    p.add_argument("--episode-steps", type=int, default=200, help="learned steps per meta-training episode")
    p.add_argument("--eps-warmup", type=int, default=8, help="meta-training eps warm-up episodes")
    p.add_argument("--meta-lr", type=float, default=3e-3, help="Adam learning rate on phi")
    p.add_argument("--only", default=None, help="comma-separated setting names to run (default: all)")
    p.add_argument("--frontier", action="store_true",
                   help="run the matched-accuracy frontier (see above) instead of the transfer table")
    p.add_argument("--frontier-settings", default=",".join(FRONTIER_SETTINGS),
                   help=f"comma-separated frontier settings, of {', '.join(FRONTIER_SETTINGS)} "
                   "(default: all)")
    p.add_argument("--adam-lrs", default="3e-4,1e-3,3e-3,1e-2", help="--frontier: Adam's learning rates")
    p.add_argument("--pgd-at-lrs", default="1e-3,1e-2",
                   help="--frontier: learning rates of the PGD-10 adversarial training references (Adam)")
    p.add_argument("--rules", default=",".join(LEARNED),
                   help="--frontier: the learned optimizers meta-trained and compared, of "
                   f"{', '.join(LEARNED)} (default: all)")
    p.add_argument("--checkpoints", type=int, default=15,
                   help="--frontier: evaluations per training run, evenly spaced from step 0 to the last "
                   "step")
    p.add_argument("--cost-file", type=Path, default=None,
                   help="--frontier: the rule_cost.json whose cost block frontier.json quotes (default: "
                   "<out>/rule_cost.json)")
    p.add_argument("--test-size", type=int, default=1000,
                   help="--frontier: held-out test images evaluated (mnist-5k: its 500, then training images "
                   "set aside)")
    p.add_argument("--quick", action="store_true",
                   help="smoke budget: 1 seed, 1 epoch, 3 short meta-training episodes, 100 test images")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="jobs at a time on this machine (1: one by one, no Ray)")
    p.add_argument("--address", default=None,
                   help="run on a Ray cluster instead: auto or ray://HOST:PORT (see `l2l sweep --help`)")
    p.add_argument("--max-retries", type=int, default=2, help="attempts after the first for a crashed job")
    p.add_argument("--no-progress", action="store_true", help="hide the sweeps' progress bars")
    job = p.add_mutually_exclusive_group()
    job.add_argument("--run-optimizer", default=None, metavar="NAME",
                     help="meta-train this one optimizer in this process (what each sweep job runs)")
    job.add_argument("--run-cell", default=None, metavar="SETTING:WAY:SEED",
                     help="train and evaluate this one cell (SETTING indexes the settings) in this process")
    job.add_argument("--run-curve", default=None, metavar="SETTING:ARM:SEED",
                     help="--frontier: train and evaluate this one curve in this process")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.eval_subset = "0", 1, 100
        args.episodes, args.episode_steps, args.eps_warmup = 3, 40, 1
        args.checkpoints, args.test_size = 4, min(args.test_size, 200)
    if args.seeds is None:
        args.seeds = "0-4" if args.frontier else "0,1,2"
    return args


def meta_config(name: str, args: argparse.Namespace) -> MetaConfig:
    return MetaConfig(episodes=args.episodes, episode_steps=args.episode_steps, eps_warmup=args.eps_warmup,
                      meta_lr=args.meta_lr, **OPTIMIZERS[name])


def optimizer_path(name: str, args: argparse.Namespace) -> Path:
    """Where the benchmark keeps meta-trained optimizer ``name``: ``<out>/optimizers/<name>.pt``."""
    return args.out / "optimizers" / f"{name}.pt"


def train_optimizer(name: str, args: argparse.Namespace) -> None:
    """Meta-train (or resume) optimizer ``name`` in ``<runs-dir>/<name>/`` (one sweep job)."""
    config = meta_config(name, args)
    path = args.runs_dir / name
    resume = (path / "config.yaml").is_file()
    run = RunDir(path, config_dict(config), resume=resume, resume_ignore=("episodes",))
    print(f"[{time.strftime('%H:%M:%S')}] meta-train {name} -> {path}", flush=True)
    start = time.perf_counter()
    metrics = meta_train(config, run, resume=resume, progress=False)
    print(f"  {time.perf_counter() - start:.0f} s; last optimizee clean {metrics['final_clean_acc']:.3f} "
          f"fgsm {metrics['final_robust_acc']:.3f}", flush=True)


def publish_optimizer(name: str, args: argparse.Namespace) -> None:
    """Copy a finished meta-training run's optimizer to :func:`optimizer_path`, with its numbers."""
    dest, run = optimizer_path(name, args), args.runs_dir / name
    if dest.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "optimizer.pt", dest)
    metrics = json.loads((run / "metrics.json").read_text())
    write_json(dest.with_suffix(".json"), {"config": config_dict(meta_config(name, args)),
                                           "meta_training": metrics})


def job_options(args: argparse.Namespace) -> list[str]:
    """The options a job's process needs to rebuild this benchmark's configuration."""
    options = {"--out": args.out.resolve(), "--runs-dir": args.runs_dir.resolve(), "--epochs": args.epochs,
               "--batch-size": args.batch_size, "--adam-lr": args.adam_lr, "--eval-subset": args.eval_subset,
               "--autoattack-version": args.autoattack_version, "--episodes": args.episodes,
               "--episode-steps": args.episode_steps, "--eps-warmup": args.eps_warmup,
               "--meta-lr": args.meta_lr, "--checkpoints": args.checkpoints, "--test-size": args.test_size}
    return [str(a) for item in options.items() for a in item]


def optimizer_job(name: str, args: argparse.Namespace) -> Job:
    return Job(f"meta-train {name}", (str(SCRIPT), *job_options(args), "--run-optimizer", name),
               (args.runs_dir / name).resolve(), resume_args=())


def cell_key(index: int, way: str, seed: int, args: argparse.Namespace) -> str:
    """``cells.json``'s key of a cell: everything its numbers depend on."""
    _, opt_name, dataset, model, width, train_size, eps = SETTINGS[index]
    tag = opt_name if way == "learned_clean" else "-"
    return f"{dataset}|{train_size}|{model}|{width}|{eps}|{args.epochs}|{way}|{tag}|{seed}"


def cell_job(index: int, way: str, seed: int, args: argparse.Namespace) -> Job:
    """A cell's job: it writes ``cell.json`` in ``<runs-dir>/cells/<key>/``; the sweep's caller
    gathers those into ``cells.json``."""
    key = cell_key(index, way, seed, args)
    return Job(f"{SETTINGS[index][0]} {key}", (str(SCRIPT), *job_options(args), "--run-cell",
                                               f"{index}:{way}:{seed}"),
               (args.runs_dir / "cells" / key.replace("|", "_")).resolve(), done_file="cell.json",
               resume_args=())


def run_cell(spec: str, args: argparse.Namespace) -> None:
    """``--run-cell SETTING:WAY:SEED``: train and evaluate the cell, write its ``cell.json``."""
    index, way, seed = spec.split(":")
    name, opt_name, dataset, model, width, train_size, eps = SETTINGS[int(index)]
    t0 = time.perf_counter()
    c = train_cell(way, optimizer_path(opt_name, args), dataset, model, width, train_size, eps, int(seed),
                   args)
    write_json(cell_job(int(index), way, int(seed), args).run_dir / "cell.json", c)
    print(f"[{time.strftime('%H:%M:%S')}] {name} {dataset} {model} eps {eps} {way} seed {seed}: clean "
          f"{c['clean_acc']:.3f} pgd20 {c['pgd20_acc']:.3f} aa {c['autoattack_acc']:.3f} train "
          f"{c['train_seconds']:.1f} s (cell {time.perf_counter() - t0:.0f} s)", flush=True)


def train_cell(way: str, optimizer: Path | None, dataset: str, model_name: str, width: int | None,
               train_size: int | None, eps: float, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Train one model one way on clean batches (pgd_at: PGD-10 batches) and evaluate it."""
    data = load_data(dataset, None, train_size, seed)
    torch.manual_seed(seed)
    model = build_optimizee(model_name, data.shape, data.num_classes, width)
    method = build_method("pgd" if way == "pgd_at" else "standard", eps=eps, channels=data.shape[0],
                          pgd_steps=10)
    if way == "learned_clean":
        assert optimizer is not None
        opt: torch.optim.Optimizer = LearnedOptimizer(model.parameters(), learned=load_learned(optimizer))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=args.adam_lr)
    torch.manual_seed(seed + 1)  # PGD-AT's random starts
    result = fit(model, data, opt, epochs=args.epochs, batch_size=args.batch_size, seed=seed, method=method)
    scores = evaluate_model(model, data, eps=eps, attacks="pgd20,autoattack", eval_subset=args.eval_subset,
                            autoattack_version=args.autoattack_version, seed=seed)
    return {"clean_acc": scores["clean_acc"], "pgd20_acc": scores["pgd20_acc"],
            "autoattack_acc": scores["autoattack_acc"], "train_seconds": result.train_seconds,
            "final_train_loss": result.final_loss, "train_size": len(data.train_y), "n_eval": scores["n"]}


def step_costs(repeats: int = 20) -> dict[str, dict[str, float]]:
    """Milliseconds per training step (batch 128, one thread) of each way, per model: the cost side
    of the issue's "learned_clean time <= 1.3 x adam_clean" target, measured without data loading."""
    x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
    out: dict[str, dict[str, float]] = {}
    for model_name, width in BENCHMARK_WIDTHS.items():
        row: dict[str, float] = {}
        for way in ("adam", "learned-2x20", "learned-1x10", "pgd10-at"):
            torch.manual_seed(0)
            model = build_optimizee(model_name, (1, 28, 28), 10, width)
            if way.startswith("learned"):
                h, n = (20, 2) if way == "learned-2x20" else (10, 1)
                learned = LSTMRule(LSTMRuleConfig(hidden_size=h, num_layers=n))
                # a fresh phi costs what a trained one does
                opt: torch.optim.Optimizer = LearnedOptimizer(model.parameters(), learned=learned,
                                                              allow_untrained=True)
            else:
                opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            method = build_method("pgd" if way == "pgd10-at" else "standard", eps=0.1, channels=1,
                                  pgd_steps=10)
            for i in range(repeats + 3):
                if i == 3:  # warm-up steps excluded
                    start = time.perf_counter()
                loss, _ = method.loss(model, x, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            row[way] = 1000 * (time.perf_counter() - start) / repeats
        row["params"] = sum(q.numel() for q in model.parameters())
        out[model_name if width is None else f"{model_name}-w{width}"] = row
    return out


# ----------------------------------------------------------------------------- the frontier (--frontier)
def lr_label(lr: float) -> str:
    """``3e-4`` for 0.0003: an Adam arm is named ``adam-<lr_label>``."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def parse_lrs(text: str, option: str) -> list[float]:
    """Comma-separated positive learning rates, or a one-line error naming ``option``."""
    try:
        lrs = [float(x) for x in text.split(",") if x]
    except ValueError:
        raise L2LError(f"{option} must be comma-separated numbers, got {text!r}") from None
    if not lrs or min(lrs) <= 0:
        raise L2LError(f"{option} needs at least one positive learning rate, got {text!r}")
    return lrs


def frontier_plan(args: argparse.Namespace) -> tuple[list[str], list[str], list[str], list[str], list[int]]:
    """The settings, Adam arms, rules, PGD-AT references and seeds of ``--frontier``, checked."""
    settings = [x for x in args.frontier_settings.split(",") if x]
    rules = [x for x in args.rules.split(",") if x]
    for what, names, known in (("setting", settings, FRONTIER_SETTINGS), ("rule", rules, LEARNED)):
        bad = [n for n in names if n not in known]
        if bad or not names:
            raise L2LError(f"unknown frontier {what} {','.join(bad) or '(none)'}; choose from "
                           f"{', '.join(known)}")
    if args.checkpoints < 2 or args.test_size < 1:
        raise L2LError("--checkpoints must be >= 2 (step 0 and the end) and --test-size >= 1")
    adam = [f"adam-{lr_label(lr)}" for lr in parse_lrs(args.adam_lrs, "--adam-lrs")]
    pgd_at = [f"pgd-at-{lr_label(lr)}" for lr in parse_lrs(args.pgd_at_lrs, "--pgd-at-lrs")]
    return settings, adam, rules, pgd_at, parse_seeds(args.seeds)


def meta_grid(rule: str, args: argparse.Namespace) -> Grid:
    """The meta-training run of learned optimizer ``rule`` (:data:`LEARNED`): one ``l2l meta
    train``, with this benchmark's budget and the test images of the frontier held out."""
    options = {"eps": FRONTIER_EPS, "episodes": args.episodes, "episode-steps": args.episode_steps,
               "eps-warmup": args.eps_warmup, "meta-lr": args.meta_lr, "test-size": args.test_size}
    variant, seed = LEARNED[rule]
    return Grid("meta", [FRONTIER_META_DATA], [Variant(rule, variant)], [seed], options,
                experiment="bench-frontier")


def frontier_optimizer(rule: str, args: argparse.Namespace) -> Path:
    """Where the frontier keeps the meta-trained ``rule``: ``<out>/frontier-optimizers/<rule>.pt``."""
    return args.out / "frontier-optimizers" / f"{rule}.pt"


def publish_frontier_optimizer(rule: str, job: Job, args: argparse.Namespace) -> None:
    """Copy a finished meta-training run's optimizer to :func:`frontier_optimizer`, with its numbers."""
    dest = frontier_optimizer(rule, args)
    if dest.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(job.run_dir / "optimizer.pt", dest)
    metrics = json.loads((job.run_dir / "metrics.json").read_text())
    write_json(dest.with_suffix(".json"), {"command": job.shell(), "meta_training": metrics})


def curve_key(setting: str, arm: str, seed: int, args: argparse.Namespace) -> str:
    """``frontier-curves.json``'s key of a curve: everything its numbers depend on."""
    _, dataset, train_size, optimizee = FRONTIER_SETTINGS[setting]
    meta = "-"
    if arm in LEARNED:
        meta_lr = LEARNED[arm][0].get("meta-lr", args.meta_lr)
        meta = (f"{FRONTIER_META_DATA}:{args.episodes}x{args.episode_steps}:warmup{args.eps_warmup}:"
                f"lr{meta_lr:g}")
    elif arm.startswith("pgd-at-"):
        meta = "pgd10:eps-warmup-1-epoch"
    return (f"{setting}|{dataset}|{train_size}|{optimizee}|{FRONTIER_EPS}|{args.epochs}|{args.batch_size}|"
            f"{args.test_size}|{args.checkpoints}|{arm}|{meta}|{seed}")


def curve_job(setting: str, arm: str, seed: int, args: argparse.Namespace) -> Job:
    """A curve's job: it writes ``curve.json`` in ``<runs-dir>/frontier/<key>/``."""
    key = curve_key(setting, arm, seed, args)
    return Job(f"frontier {setting} {arm} seed{seed}",
               (str(SCRIPT), *job_options(args), "--run-curve", f"{setting}:{arm}:{seed}"),
               (args.runs_dir / "frontier" / key.replace("|", "_")).resolve(), done_file="curve.json",
               resume_args=())


def checkpoint_steps(total: int, count: int) -> list[int]:
    """``count`` evenly spaced steps from 0 to ``total`` (fewer if ``total`` is smaller)."""
    return sorted({round(i * total / (count - 1)) for i in range(count)})


def run_curve(spec: str, args: argparse.Namespace) -> None:
    """``--run-curve SETTING:ARM:SEED``: train the setting's fresh optimizee with the arm's optimizer
    on clean data (a ``pgd-at-<lr>`` arm: on PGD-10 batches, eps ramped up over the first epoch),
    evaluating it at :func:`checkpoint_steps`; writes the checkpoints to the job's ``curve.json``."""
    setting, arm, seed_text = spec.split(":")
    seed = int(seed_text)
    _, dataset, train_size, optimizee = FRONTIER_SETTINGS[setting]
    data = load_data(dataset, None, train_size, seed, test_size=args.test_size)
    torch.manual_seed(seed)  # the same initial network for every arm of a seed
    model = build_optimizee(optimizee, data.shape, data.num_classes, width=BENCHMARK_WIDTHS[optimizee])
    adversarial = arm.startswith("pgd-at-")
    if arm in LEARNED:
        opt: torch.optim.Optimizer = LearnedOptimizer(model.parameters(),
                                                      learned=load_learned(frontier_optimizer(arm, args)))
    else:
        lr = float(arm.removeprefix("pgd-at-").removeprefix("adam-"))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    per_epoch = -(-len(data.train_y) // args.batch_size)
    method = PGDTrainingWithWarmup(FRONTIER_EPS, per_epoch) if adversarial else Method()
    total = args.epochs * per_epoch
    steps = set(checkpoint_steps(total, args.checkpoints))
    curve: list[dict[str, float]] = []

    def evaluate(step: int) -> None:
        if step in steps:
            scores = evaluate_model(model, data, eps=FRONTIER_EPS, attacks="fgsm,pgd20",
                                    eval_subset=args.test_size, seed=seed)
            curve.append({"step": step, "clean": scores["clean_acc"], "pgd20": scores["pgd20_acc"],
                          "fgsm": scores["fgsm_acc"], "seed": seed})

    t0 = time.perf_counter()
    evaluate(0)
    # PGD-AT's random starts (evaluate_model reseeds at each checkpoint, the same for every arm)
    torch.manual_seed(seed + 1)
    result = fit(model, data, opt, epochs=args.epochs, batch_size=args.batch_size, seed=seed, method=method,
                 on_step=evaluate)
    job = curve_job(setting, arm, seed, args)
    write_json(job.run_dir / "curve.json", {"curve": curve, "train_seconds": result.train_seconds,
                                            "optimizee": optimizee,
                                            "train_size": len(data.train_y), "test_size": len(data.test_y)})
    last = curve[-1]
    print(f"[{time.strftime('%H:%M:%S')}] {job.name}: {len(curve)} checkpoints; step {last['step']}: clean "
          f"{last['clean']:.3f} pgd20 {last['pgd20']:.3f} fgsm {last['fgsm']:.3f} (train "
          f"{result.train_seconds:.1f} s, all {time.perf_counter() - t0:.0f} s)", flush=True)


def run_frontier(args: argparse.Namespace) -> int:
    """``--frontier``: meta-train the rules and run the Adam curves (one sweep), then the learned
    curves (a second); gather every finished curve, and write ``frontier.{json,md,png}``."""
    settings, adam_arms, rules, references, seeds = frontier_plan(args)
    meta_jobs = {rule: meta_grid(rule, args).jobs(args.runs_dir)[0] for rule in rules}
    cache_path = args.runs_dir / "frontier-curves.json"
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    arms = (*adam_arms, *rules, *references)
    todo: dict[str, dict[str, Job]] = {"other": {}, "learned": {}}  # the curves not in the cache
    for seed in seeds:
        for st in settings:
            for arm in arms:
                key = curve_key(st, arm, seed, args)
                if key not in cache:
                    todo["learned" if arm in rules else "other"][key] = curve_job(st, arm, seed, args)
    # meta-training first (the longest jobs), the other curves beside it; the learned ones need the rules
    first = [job for rule, job in meta_jobs.items() if not frontier_optimizer(rule, args).is_file()]
    first += todo["other"].values()

    def publish() -> bool:
        if not all(frontier_optimizer(r, args).is_file() or meta_jobs[r].finished() for r in rules):
            return False
        for rule, job in meta_jobs.items():
            publish_frontier_optimizer(rule, job, args)
        return True

    result = two_sweeps(first, list(todo["learned"].values()), publish, args)
    gather({**todo["other"], **todo["learned"]}, cache, cache_path)
    if not result.ok:
        return 130 if result.interrupted else 1
    entries = []
    for st in settings:
        description, dataset, _, optimizee = FRONTIER_SETTINGS[st]
        runs = {arm: [cache[curve_key(st, arm, seed, args)] for seed in seeds] for arm in arms}
        curves = {arm: [{k: round(v, 6) for k, v in c.items()} for run in arm_runs for c in run["curve"]]
                  for arm, arm_runs in runs.items()}
        margins = frontier.setting_margins(curves, adam_arms, [*rules, *references])
        pgd, first_run = margins["pgd20"], runs[adam_arms[0]][0]
        entries.append({
            "name": st, "description": description, "dataset": dataset, "model": optimizee,
            "eps": FRONTIER_EPS,
            "train_size": first_run["train_size"], "test_size": first_run["test_size"],
            "checkpoint_steps": [c["step"] for c in first_run["curve"]],
            "curves": curves,
            "above_frontier": {r: pgd[r]["paired"]["mean"] for r in rules},
            "above_frontier_spread": {r: pgd[r]["paired"]["spread"] for r in rules},
            "transfers_robustness": {r: pgd[r]["paired"]["transfers_robustness"] for r in rules},
            "reference_above_frontier": {r: pgd[r]["paired"]["mean"] for r in references},
            "gap_closed": {r: frontier.gap_closed(pgd[r]["paired"]["mean"],
                                                  (pgd[ref]["paired"]["mean"] for ref in references))
                           for r in rules},
            "margins": margins,
            "train_seconds": {arm: statistics.fmean(run["train_seconds"] for run in arm_runs)
                              for arm, arm_runs in runs.items()}})
    write_frontier(entries, adam_arms, rules, references, args)
    return 0


def write_frontier(entries: list[dict[str, Any]], adam_arms: list[str], rules: list[str],
                   references: list[str], args: argparse.Namespace) -> None:
    """``frontier.json`` (issue 15's keys, then the details), ``frontier.md`` and ``frontier.png``."""
    cost_path = args.cost_file or args.out / "rule_cost.json"
    cost_file = json.loads(cost_path.read_text()) if cost_path.is_file() else {}
    cost = cost_file.get("cost")
    command = " ".join(["python", *sys.argv])
    budget = {"command": command, "seeds": args.seeds, "epochs": args.epochs, "batch_size": args.batch_size,
              "adam_lrs": args.adam_lrs, "pgd_at_lrs": args.pgd_at_lrs, "rules": rules,
              "checkpoints": args.checkpoints,
              "test_size": args.test_size, "eps": FRONTIER_EPS, "threads": 1,
              "meta_training": {"data": FRONTIER_META_DATA, "episodes": args.episodes,
                                "episode_steps": args.episode_steps, "eps_warmup": args.eps_warmup,
                                "meta_lr": args.meta_lr, "optimizers": {
                                    r: str(frontier_optimizer(r, args)) for r in rules}},
              "evaluation": f"clean, FGSM and PGD-20 (1 restart, step 2.5*eps/20) accuracy on "
              f"{args.test_size} held-out test images",
              "pgd_at": "PGD-10 (step 2.5*eps/10, random start) batches, eps ramped up linearly over the "
              "first epoch, Adam",
              "frontier": "per seed: upper concave envelope of the seed's Adam points (all learning rates "
              "and checkpoints); margin = mean over the learned checkpoints after step 0 inside Adam's "
              "clean-accuracy range; above_frontier = mean over seeds, spread = std over seeds "
              "(l2l_gail.meta.frontier)"}
    # compact: some 7,000 checkpoints; frontier.md is the readable view
    result = {"settings": entries, "cost": cost, "budget": budget,
              "cost_source": {"file": str(cost_path), "budget": cost_file.get("budget"),
                              "load_average": cost_file.get("load_average")} if cost else None}
    atomic_write_text(args.out / "frontier.json", json.dumps(result, separators=(",", ":")) + "\n")
    header = (f"# Matched-accuracy frontier (issue 15)\n\nCommand: `{command}`; seeds {args.seeds}, "
              f"{args.epochs} epochs at batch {args.batch_size}, Adam at {args.adam_lrs}, PGD-10 adversarial "
              f"training with Adam at {args.pgd_at_lrs} (the reference of gap closed), {args.checkpoints} "
              f"checkpoints per run; {budget['evaluation']}. Margins in percentage points of PGD-20 (FGSM) "
              "accuracy over Adam's frontier at matched clean accuracy, " + budget["frontier"] + ".")
    text = frontier.markdown(entries, rules, references, header)
    if cost:
        clock = (cost_file.get("budget") or {}).get("clock", "wall")
        text += (f"\n## Cost (ms of {clock} time per training step, from `{cost_path}`)\n\n| model | Adam | "
                 "LSTM rule | MLP rule |\n|---|---:|---:|---:|\n" + "".join(
                     f"| {m} | {c['adam_ms']:.2f} | {c['lstm_ms']:.2f} | {c['mlp_rule_ms']:.2f} |\n"
                     for m, c in cost.items()))
    atomic_write_text(args.out / "frontier.md", text)
    frontier.plot(entries, adam_arms, rules, references, args.out / "frontier.png")
    print(text)


def two_sweeps(first: list[Job], second: list[Job], publish: Callable[[], bool],
               args: argparse.Namespace) -> SweepResult:
    """Run ``first``, then, if it succeeded and ``publish()`` -- which puts in place what
    ``second`` needs, the learned optimizers -- returns true, ``second``: one Ray for both sweeps,
    started only if a job is left to run."""
    pending = [job for job in [*first, *second] if not job.finished()]
    pool = open_pool(args.jobs, args.address) if pending else None
    try:
        sweep = functools.partial(run_jobs, pool=pool, max_retries=args.max_retries,
                                  progress=not args.no_progress)
        result = sweep(first)
        report(result)
        if result.ok and publish():
            result = sweep(second)
            report(result)
    finally:
        if pool is not None:
            pool.close()
    return result


def gather(jobs: Mapping[str, Job], cache: dict[str, Any], path: Path) -> None:
    """Add every finished job's result to ``cache`` and save it to ``path`` -- also after a
    failed or interrupted sweep, so that nothing finished is redone."""
    for key, job in jobs.items():
        if job.finished():
            cache[key] = json.loads((job.run_dir / job.done_file).read_text())
    write_json(path, cache)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.run_optimizer:
        train_optimizer(args.run_optimizer, args)
        return 0
    if args.run_cell:
        run_cell(args.run_cell, args)
        return 0
    if args.run_curve:
        return exit_status(lambda: run_curve(args.run_curve, args))
    if args.frontier:
        return exit_status(lambda: run_frontier(args))
    seeds = parse_seeds(args.seeds)
    only = set(args.only.split(",")) if args.only else None
    indices = [i for i, s in enumerate(SETTINGS) if only is None or s[0] in only]
    names = list(dict.fromkeys(SETTINGS[i][1] for i in indices))
    optimizers = [optimizer_job(n, args) for n in names if not optimizer_path(n, args).is_file()]
    cells_path = args.out / "cells.json"
    cells: dict[str, Any] = json.loads(cells_path.read_text()) if cells_path.is_file() else {}
    todo = {cell_key(i, w, s, args): cell_job(i, w, s, args) for i in indices for w in WAYS for s in seeds}
    todo = {key: job for key, job in todo.items() if key not in cells}

    def publish() -> bool:
        for name in names:
            publish_optimizer(name, args)
        return True

    result = two_sweeps(optimizers, list(todo.values()), publish, args)
    gather(todo, cells, cells_path)
    if not result.ok:
        return 130 if result.interrupted else 1
    entries = []
    for i in indices:
        name, opt_name, dataset, model, width, _, eps = SETTINGS[i]
        ways = {w: [cells[cell_key(i, w, s, args)] for s in seeds] for w in WAYS}
        trained_on = f"mnist-5k mlp fgsm eps {OPTIMIZERS[opt_name]['eps']:g}" + "".join(
            note for key, note in VARIANT_NOTES.items() if opt_name.endswith(key))
        setting = {"name": name, "meta_trained_on": trained_on, "optimizer": opt_name, "dataset": dataset,
                   "model": model if width is None else f"{model}-w{width}",
                   "train_size": ways["adam_clean"][0]["train_size"], "eps": eps}
        entries.append(setting_entry(setting, ways))
    runner = ("jobs", "address", "max_retries", "no_progress", "run_optimizer", "run_cell")
    budget = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in runner}
    budget.update(threads=1, pgd_at="PGD-10, step 2.5*eps/10, random start, Adam",
                  evaluation=f"PGD-20 (1 restart, step 2.5*eps/20) and AutoAttack {args.autoattack_version} "
                  f"on the first {args.eval_subset} test images", command=" ".join(["python", *sys.argv]))
    costs = step_costs(3 if args.quick else 20)
    write_json(args.out / "transfer.json", {"budget": budget, "settings": entries, "step_cost_ms": costs})
    header = (f"# Robust meta-optimizer transfer (2008.05247)\n\nCommand: `{budget['command']}`; seeds "
              f"{args.seeds}, {args.epochs} epochs, meta-training {args.episodes} episodes x "
              f"{args.episode_steps} steps (eps warm-up {args.eps_warmup}, meta lr {args.meta_lr:g}); "
              f"{budget['evaluation']}. Mean ± std over seeds.\n\n")
    cost_table = ["", "Milliseconds per training step (batch 128, one thread, on the shared machine):", "",
                  "| model | params | adam | learned 2x20 | learned 1x10 | PGD-10 AT |",
                  "|---|---|---|---|---|---|"]
    cost_table += [f"| {m} | {int(c['params']):,} | {c['adam']:.2f} | {c['learned-2x20']:.2f} | "
                   f"{c['learned-1x10']:.2f} | {c['pgd10-at']:.2f} |" for m, c in costs.items()]
    table = markdown_table(entries) + "\n".join(cost_table) + "\n"
    atomic_write_text(args.out / "transfer.md", header + table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

