#!/usr/bin/env python
"""Benchmark: every vision training method on Fashion-MNIST at eps = 0.1, side by side.

One classifier (PreActResNet-18 at reduced width) and a learned attacker sized so that its
forward FLOPs per image are ``--flops-ratio`` x the classifier's (0.35, the ratio the issue
takes from the paper's WideAttacker vs WRN-34-10), counted with ``torch.utils.flop_counter``.
Every method trains for the same epochs on the same subset; each model is then evaluated with
clean, FGSM, PGD-20 (restarts, step 0.01), CW-L-inf (30 steps, step 0.01) and AutoAttack
(pyautoattack). Every (method, seed) cell -- training, then evaluation -- is one job of a sweep
(:mod:`l2l_gail.sweep`): ``--jobs`` at a time on this machine or on a Ray cluster with
``--address``, each running this script with ``--run-cell METHOD:SEED`` in its own process.
Finished cells are skipped, unfinished ones resumed, so the script can be re-run across
sessions. Writes ``results/vision/fashion-mnist.{json,md}``.

    python scripts/bench_vision.py --seeds 0,1,2
    python scripts/bench_vision.py --dataset synthetic --methods standard --seeds 0 --train-size 64 \
        --epochs 1 --width 2 --eval-n 32 --aa-n 4 --aa-version fast --output /tmp/v.json   # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from l2l_gail.core.attacker import WideAttacker
from l2l_gail.robust.attacks import FGSM, PGD, AutoAttack
from l2l_gail.robust.data import batches
from l2l_gail.robust.evaluate import evaluate
from l2l_gail.robust.models import build_model
from l2l_gail.runs import RunDir, atomic_write_text, write_json
from l2l_gail.sweep import Job, run_jobs
from l2l_gail.sweep.cli import report
from l2l_gail.vision.train import VisionConfig, load_classifier, train

SCRIPT = Path(__file__).resolve()
METHODS = ["standard", "fgsm-rs", "pgd-10", "trades", "l2l-naive", "l2l-grad", "l2l-2step", "l2l-3step"]
TIMING = {"batch_size": 128, "rounds": 7, "steps_per_round": 5}  # --timing-only: round-robin settings


class FlopCount(TorchDispatchMode):
    """Sums the FLOPs of every matmul/convolution run inside it, forward and backward, with the
    per-op formulas of ``torch.utils.flop_counter``. (``FlopCounterMode`` itself also tracks
    modules through hooks that ``torch.autograd.grad`` w.r.t. an input tensor rejects, which every
    gradient-based attack does.)"""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)  # noqa: SLF001 - the key torch's own flop counter uses
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    model.eval()
    with FlopCount() as counter, torch.no_grad():
        model(x)
    return counter.total


def attacker_width_for(ratio: float, classifier_flops: int, channels: int, size: int) -> tuple[float, float]:
    """Bisect the attacker's width multiplier so its per-image forward FLOPs ~ ratio x classifier."""
    lo, hi = 0.01, 2.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if attacker_ratio(mid, classifier_flops, channels, size) < ratio:
            lo = mid
        else:
            hi = mid
    return lo, attacker_ratio(lo, classifier_flops, channels, size)


def attacker_ratio(width: float, classifier_flops: int, channels: int, size: int) -> float:
    """Per-image forward FLOPs of the attacker of ``width`` over the classifier's."""
    x = torch.zeros(1, 2 * channels, size, size)
    return forward_flops(WideAttacker(2 * channels, channels, 0.1, width), x) / classifier_flops


def method_config(method: str, args: argparse.Namespace, seed: int, attacker_width: float) -> VisionConfig:
    name, extra = method, dict[str, Any]()
    if method == "pgd-10":
        name, extra = "pgd", {"pgd_steps": 10}
    elif method == "l2l-3step":
        name, extra = "l2l-kstep", {"attacker_steps": 3}
    if args.dataset == "synthetic":
        extra["synthetic_shape"] = "1x28x28"
    return VisionConfig(dataset=args.dataset, data_dir=args.data_dir, train_subset=args.train_size,
                        eval_subset=args.eval_n, model="preact-resnet18", width=args.width, method=name,
                        epochs=args.epochs, eps=args.eps, attacker_width=attacker_width, seed=seed, **extra)


def run_path(method: str, seed: int, args: argparse.Namespace) -> Path:
    """The run directory of ``method`` and ``seed``."""
    return args.runs_dir / method / f"seed{seed}"


def run_one(method: str, seed: int, args: argparse.Namespace, attacker_width: float) -> None:
    """Train (or resume) and evaluate one method and seed; finished parts are skipped."""
    config = method_config(method, args, seed, attacker_width)
    path = run_path(method, seed, args)
    resume = (path / "config.yaml").is_file()
    if not (path / "metrics.json").is_file():
        # options added after the first benchmark runs started; their defaults match those runs
        later = ("device", "download", "lr_schedule", "synthetic_shape", "extra")
        run = RunDir(path, dataclasses.asdict(config), resume=resume, resume_ignore=later)
        print(f"[{time.strftime('%H:%M:%S')}] train {method} seed {seed} -> {path}", flush=True)
        train(config, run, resume=resume, progress=args.progress)
    eval_path = path / "bench_eval.json"
    if not eval_path.is_file():
        print(f"[{time.strftime('%H:%M:%S')}] evaluate {method} seed {seed}", flush=True)
        model, cfg, data = load_classifier(path)
        eps = cfg.resolved_eps()
        torch.manual_seed(seed)
        x, y = data.test_x[: args.eval_n], data.test_y[: args.eval_n]
        main = evaluate(model, x, y, [FGSM(eps), PGD(eps, 20, args.pgd_step, restarts=args.restarts),
                                      PGD(eps, 30, args.pgd_step, restarts=args.restarts, loss="cw")])
        n_aa = args.aa_n
        aa = evaluate(model, x[:n_aa], y[:n_aa], [PGD(eps, 20, args.pgd_step, restarts=args.restarts),
                                                  AutoAttack(eps, args.aa_version, seed)])
        write_json(eval_path, {"main": main, "aa_subset": aa})


def cell_job(method: str, seed: int, args: argparse.Namespace, attacker_width: float) -> Job:
    """The sweep job of one cell: this script with ``--run-cell`` and every option the cell uses."""
    options = {"--dataset": args.dataset, "--data-dir": args.data_dir, "--train-size": args.train_size,
               "--epochs": args.epochs, "--width": args.width, "--eps": args.eps, "--pgd-step": args.pgd_step,
               "--restarts": args.restarts, "--eval-n": args.eval_n, "--aa-n": args.aa_n,
               "--aa-version": args.aa_version, "--threads": args.threads,
               "--runs-dir": args.runs_dir.resolve(), "--attacker-width": repr(attacker_width),
               "--run-cell": f"{method}:{seed}"}
    command = [str(SCRIPT)] + [str(a) for k, v in options.items() if v is not None for a in (k, v)]
    # run_one decides itself what is left to do (train, resume or only evaluate): no --resume
    return Job(f"{method}/seed{seed}", tuple(command), run_path(method, seed, args).resolve(),
               done_file="bench_eval.json", resume_args=())


def finished_run(method: str, seed: int, args: argparse.Namespace) -> dict | None:
    """A trained and evaluated run's numbers, or None if it is not finished."""
    path = run_path(method, seed, args)
    if not (path / "bench_eval.json").is_file():
        return None
    metrics = json.loads((path / "metrics.json").read_text())
    return {"seed": seed, "epoch_seconds_median": metrics["epoch_seconds_median"],
            **json.loads((path / "bench_eval.json").read_text())}


def interleaved_step_seconds(methods: list[str], args: argparse.Namespace, attacker_width: float,
                             ) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds per training step of each method, timed round-robin (``TIMING``), and the
    FLOPs of one such step (forward and backward passes, counted by ``torch.utils.flop_counter``).

    The epoch times of the training runs depend on whatever else the shared machine ran while
    each method trained; timing a few steps of every method in turn, several rounds, and taking
    medians exposes all methods to the same load -- the side-by-side ratio the issue asks for.
    The FLOP counts give the ratio that a perfectly efficient implementation would reach.
    """
    from l2l_gail.vision.train import build, load_data

    data = load_data(method_config(methods[0], args, 0, attacker_width))
    x, y = next(batches(data.train_x, data.train_y, TIMING["batch_size"],
                        generator=torch.Generator().manual_seed(0)))
    setups = {}
    for m in methods:
        model, opt, _, method = build(method_config(m, args, 0, attacker_width), data, torch.device("cpu"))
        setups[m] = (model, opt, method)

    def step(m: str) -> None:
        model, opt, method = setups[m]
        loss, _ = method.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step(model, x, y)

    flops: dict[str, int] = {}
    for m in methods:  # warm-up, counting the step's FLOPs
        with FlopCount() as counter:
            step(m)
        flops[m] = counter.total
    times: dict[str, list[float]] = {m: [] for m in methods}
    steps = TIMING["steps_per_round"]
    for _ in range(TIMING["rounds"]):
        for m in methods:
            t0 = time.perf_counter()
            for _ in range(steps):
                step(m)
            times[m].append((time.perf_counter() - t0) / steps)
    return {m: statistics.median(v) for m, v in times.items()}, flops


def summarise(method: str, runs: list[dict]) -> dict:
    def mean(key: str, part: str = "main") -> float:
        return statistics.fmean(r[part][key] for r in runs)

    return {
        "epoch_seconds_median": statistics.median(r["epoch_seconds_median"] for r in runs),
        "clean_acc": mean("clean_acc"), "fgsm_acc": mean("fgsm_acc"), "pgd20_acc": mean("pgd20_acc"),
        "cw_acc": mean("cw_acc"), "autoattack_acc": mean("autoattack_acc", "aa_subset"),
        "pgd20_acc_on_autoattack_subset": mean("pgd20_acc", "aa_subset"),
        "pgd20_acc_std": statistics.pstdev(r["main"]["pgd20_acc"] for r in runs),
        "seeds": len(runs), "seed_list": [r["seed"] for r in runs],
    }


def markdown(result: dict) -> str:
    out = _accuracy_table(result) if result.get("methods") else ""
    timing = result.get("step_timing")
    if timing:
        sec, flops = timing["seconds_per_step_median"], timing.get("gflops_per_step", {})
        out += ("\nTraining step time, every method timed round-robin in one process (median of "
                f"{timing['rounds']} rounds x {timing['steps_per_round']} steps, "
                f"batch {timing['batch_size']}, {timing['torch_threads']} thread), and the FLOPs of "
                "one step (forward + backward, `torch.utils.flop_counter`):\n\n"
                "| method | s / step | time vs pgd-10 | GFLOPs / step | FLOPs vs pgd-10 |\n"
                "|---|---|---|---|---|\n")

        def ratio(table: dict, name: str) -> str:
            return f"{table[name] / table['pgd-10']:.2f}x" if name in table and "pgd-10" in table else "-"

        for name in METHODS:
            if name in sec:
                gf = f"{flops[name]:.1f}" if name in flops else "-"
                out += f"| {name} | {sec[name]:.3f} | {ratio(sec, name)} | {gf} | {ratio(flops, name)} |\n"
    return out


def _accuracy_table(result: dict) -> str:
    # epoch seconds are reported but not turned into ratios: each method trained while the shared
    # machine ran different other jobs; the round-robin step timing is the side-by-side ratio
    lines = ["| method | epoch s (median) | clean | FGSM | PGD-20 | CW | "
             f"AutoAttack (n={result['autoattack_n']}) | PGD-20 on AA subset | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in result["methods"].items():
        lines.append(f"| {name} | {m['epoch_seconds_median']:.1f} | {100 * m['clean_acc']:.1f} | "
                     f"{100 * m['fgsm_acc']:.1f} | {_pm(m, 'pgd20_acc')} | {100 * m['cw_acc']:.1f} | "
                     f"{100 * m['autoattack_acc']:.1f} | {100 * m['pgd20_acc_on_autoattack_subset']:.1f} | "
                     f"{m['seeds']} |")
    return "\n".join(lines) + "\n"


def _pm(m: dict, key: str) -> str:
    """``mean +- std`` over seeds in percent, the mean alone for one seed."""
    return f"{100 * m[key]:.1f}" + (f" +- {100 * m[key + '_std']:.1f}" if m["seeds"] > 1 else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "synthetic"),
                   help="synthetic: generated 1x28x28 images, for a smoke test without the data set")
    p.add_argument("--data-dir", default=None, help="data set directory (default: the data module's)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of methods")
    p.add_argument("--train-size", type=int, default=5000, help="training subset size (default 5000)")
    p.add_argument("--epochs", type=int, default=10, help="epochs for every method (default 10)")
    p.add_argument("--width", type=int, default=8, help="PreActResNet-18 base width (default 8)")
    p.add_argument("--eps", type=float, default=0.1, help="L-inf radius (default 0.1)")
    p.add_argument("--pgd-step", type=float, default=0.01, help="evaluation PGD/CW step (default 0.01)")
    p.add_argument("--restarts", type=int, default=2, help="PGD-20/CW restarts (default 2)")
    p.add_argument("--flops-ratio", type=float, default=0.35, help="attacker/classifier forward FLOPs")
    p.add_argument("--attacker-width", type=float, default=None,
                   help="the learned attacker's width multiplier (default: bisected for --flops-ratio)")
    p.add_argument("--eval-n", type=int, default=1000, help="test images for clean/FGSM/PGD/CW")
    p.add_argument("--aa-n", type=int, default=100,
                   help="first N test images for AutoAttack, slow on CPU (default 100); PGD-20 is "
                        "re-run on the same images for a paired comparison")
    p.add_argument("--aa-version", default="standard", choices=("standard", "fast"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/bench-vision"), help="run directories")
    p.add_argument("--output", type=Path, default=Path("results/vision/fashion-mnist.json"))
    p.add_argument("--progress", action="store_true",
                   help="show the sweep's progress (cells done / running / failed / queued, ETA)")
    p.add_argument("--tables-only", action="store_true",
                   help="only rewrite the markdown table from the existing JSON results")
    p.add_argument("--timing-only", action="store_true",
                   help="only time training steps of every method round-robin; writes "
                        "<output>-step-timing.{json,md}")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="cells at a time on this machine (1: one by one, no Ray)")
    p.add_argument("--address", default=None,
                   help="run on a Ray cluster instead: auto or ray://HOST:PORT (see `l2l sweep --help`)")
    p.add_argument("--max-retries", type=int, default=2, help="attempts after the first for a crashed cell")
    p.add_argument("--run-cell", default=None, metavar="METHOD:SEED",
                   help="train and evaluate this one cell in this process (what each sweep job runs)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tables_only:
        atomic_write_text(args.output.with_suffix(".md"), markdown(json.loads(args.output.read_text())))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        print(f"error: unknown methods {sorted(unknown)}; choose from {METHODS}", file=sys.stderr)
        return 2
    if args.run_cell:
        method, _, seed = args.run_cell.partition(":")
        run_one(method, int(seed), args, args.attacker_width)
        return 0
    cls = build_model("preact-resnet18", 1, 10, width=args.width)
    cls_flops = forward_flops(cls, torch.zeros(1, 1, 28, 28))
    if args.attacker_width is None:
        att_width, ratio = attacker_width_for(args.flops_ratio, cls_flops, 1, 28)
    else:
        att_width, ratio = args.attacker_width, attacker_ratio(args.attacker_width, cls_flops, 1, 28)
    print(f"classifier {cls_flops / 1e6:.1f} MFLOPs/image; "
          f"attacker width {att_width:.4f} -> ratio {ratio:.3f}")
    if args.timing_only:
        step_s, step_flops = interleaved_step_seconds(methods, args, att_width)
        result: dict[str, Any] = {"step_timing": {**TIMING,
                                  "model": f"preact-resnet18 (width {args.width})",
                                  "attacker_width": att_width, "attacker_to_classifier_flops": ratio,
                                  "torch_threads": args.threads, "seconds_per_step_median": step_s,
                                  "gflops_per_step": {m: f / 1e9 for m, f in step_flops.items()}}}
        out = args.output.with_name(args.output.stem + "-step-timing.json")
        write_json(out, result)
        atomic_write_text(out.with_suffix(".md"), markdown(result))
        print(markdown(result))
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    sweep = run_jobs([cell_job(m, s, args, att_width) for s in seeds for m in methods], workers=args.jobs,
                     address=args.address, max_retries=args.max_retries, progress=args.progress)
    report(sweep)
    # the table holds every finished run of these seeds, including methods not asked for this
    # time, so that adding seeds to a few methods never drops the others
    done = {m: [r for s in seeds if (r := finished_run(m, s, args))] for m in METHODS}
    result = {
        "dataset": args.dataset, "eps": args.eps, "train_size": args.train_size,
        "epochs": args.epochs, "model": f"preact-resnet18 (width {args.width})",
        "classifier_mflops": cls_flops / 1e6, "attacker_width": att_width,
        "attacker_to_classifier_flops": ratio, "eval_n": args.eval_n, "autoattack_n": args.aa_n,
        "autoattack_version": args.aa_version, "pgd_restarts": args.restarts,
        "torch_threads": args.threads,
        "methods": {m: summarise(m, runs) for m, runs in done.items() if runs},
    }
    if result["methods"]:
        write_json(args.output, result)
        atomic_write_text(args.output.with_suffix(".md"), markdown(result))
        print(markdown(result))
    return 130 if sweep.interrupted else 0 if sweep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
