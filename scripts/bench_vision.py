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

``--frontier`` measures instead where each configuration of :mod:`l2l_gail.vision.frontier` lies
on the cost-robustness plane: PGD-k for k in 1, 2, 3, 5, 10 (k = 1 is FGSM-RS), TRADES, l2l-grad
and l2l-2step at attacker widths 0.041, 0.125 and 0.25, and l2l-grad with 2 and 4 attacker
updates per classifier update; 20,000 Fashion-MNIST images x 15 epochs, 3 seeds, then 2 more
seeds and full AutoAttack for the PGD-k front's points and the L2L point nearest it. Robust
accuracy is the per-example worst case of PGD-50 x 5 restarts (worst iterate) and APGD-CE +
APGD-T (:func:`l2l_gail.robust.evaluate.robust_evaluation`); cost is the FLOPs of a training
step and its round-robin time, against PGD-10. ``--options-study`` measures the official code's
details on l2l-grad once. Both share their run directories and skip what is finished:

    python scripts/bench_vision.py --frontier            # results/vision/frontier.{json,md,png}
    python scripts/bench_vision.py --options-study       # results/vision/official-options.{json,md}
    python scripts/bench_vision.py --frontier --train-size 512 --epochs 1 --seeds 0 --front-seeds 1 \
        --eval-n 32 --aa-n 8 --val-size 128 --curve-n 32 --timing-rounds 1 \
        --runs-dir /tmp/f/runs --output /tmp/f/frontier.json                           # smoke
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
from l2l_gail.errors import L2LError, exit_status
from l2l_gail.robust.attacks import FGSM, PGD, AutoAttack
from l2l_gail.robust.data import batches
from l2l_gail.robust.evaluate import evaluate, evaluate_per_example, robust_attacks, worst_case
from l2l_gail.robust.evaluate import summarise as summarise_correct
from l2l_gail.robust.models import build_model
from l2l_gail.runs import RunDir, atomic_write, atomic_write_text, write_json
from l2l_gail.sweep import Job, run_jobs
from l2l_gail.sweep.cli import report
from l2l_gail.vision import frontier as F
from l2l_gail.vision.train import BEST_MODEL, VisionConfig, load_classifier, train

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
    """:func:`time_steps` of the method table's methods."""
    return time_steps({m: method_config(m, args, 0, attacker_width) for m in methods})


def time_steps(configs: dict[str, VisionConfig], rounds: int = TIMING["rounds"],
               ) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds per training step of each configuration, timed round-robin (``TIMING``), and
    the FLOPs of one such step (forward and backward passes, counted by ``torch.utils.flop_counter``).

    The epoch times of the training runs depend on whatever else the shared machine ran while
    each method trained; timing a few steps of every method in turn, several rounds, and taking
    medians exposes all methods to the same load -- the side-by-side ratio the issue asks for.
    The FLOP counts give the ratio that a perfectly efficient implementation would reach.
    """
    from l2l_gail.vision.train import build, load_data

    data = load_data(next(iter(configs.values())))
    x, y = next(batches(data.train_x, data.train_y, TIMING["batch_size"],
                        generator=torch.Generator().manual_seed(0)))
    setups = {}
    for m, config in configs.items():
        model, opt, _, method = build(config, data, torch.device("cpu"))
        setups[m] = (model, opt, method)

    def step(m: str) -> None:
        model, opt, method = setups[m]
        loss, _ = method.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step(model, x, y)

    flops: dict[str, int] = {}
    for m in configs:  # warm-up, counting the step's FLOPs
        with FlopCount() as counter:
            step(m)
        flops[m] = counter.total
    times: dict[str, list[float]] = {m: [] for m in configs}
    steps = TIMING["steps_per_round"]
    for _ in range(rounds):
        for m in configs:
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


# ----- the cost-robustness frontier (--frontier) and the official details (--options-study) -----

FRONTIER_RUNS = Path("runs/bench-vision-frontier")
FRONTIER_OUTPUT = Path("results/vision/frontier.json")
OPTIONS_OUTPUT = Path("results/vision/official-options.json")
BATCH_SIZE = 128  # VisionConfig's default, which every run and the timing use


def point_vision_config(point: str, seed: int, args: argparse.Namespace) -> VisionConfig:
    """The training configuration of frontier point ``point`` (:mod:`l2l_gail.vision.frontier`)."""
    extra = F.point_config(point)
    if args.dataset == "synthetic":
        extra["synthetic_shape"] = "1x28x28"
    return VisionConfig(dataset=args.dataset, data_dir=args.data_dir, train_subset=args.train_size,
                        eval_subset=args.curve_n, model="preact-resnet18", width=args.width,
                        epochs=args.epochs, eps=args.eps, val_size=args.val_size or None, seed=seed, **extra)


def point_path(point: str, seed: int, args: argparse.Namespace) -> Path:
    return args.runs_dir / point / f"seed{seed}"


def run_point(point: str, seed: int, args: argparse.Namespace, stages: str) -> None:
    """Train (or resume) one run, then each of ``stages`` whose file is missing: ``eval-<ckpt>``
    (PGD-50 x 5 and APGD-CE + APGD-T on the first --eval-n test images) and ``aa-<ckpt>`` (full
    AutoAttack on the first --aa-n of them), ``ckpt`` being ``last`` (model.pt) or ``best``."""
    config = point_vision_config(point, seed, args)
    path = point_path(point, seed, args)
    if not (path / "metrics.json").is_file():
        resume = (path / "config.yaml").is_file()
        run = RunDir(path, dataclasses.asdict(config), resume=resume, resume_ignore=("device",))
        print(f"[{time.strftime('%H:%M:%S')}] train {point} seed {seed} -> {path}", flush=True)
        train(config, run, resume=resume, progress=args.progress)
    for stage in stages.split(","):
        kind, _, ckpt = stage.partition("-")
        out = path / f"{stage}.json"
        if out.is_file():
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {stage} {point} seed {seed}", flush=True)
        model, cfg, data = load_classifier(path / ("model.pt" if ckpt == "last" else BEST_MODEL))
        eps = cfg.resolved_eps()
        if kind == "eval":
            attacks, sizes = robust_attacks(eps, pgd_step=args.pgd_step, seed=seed)
            n = args.eval_n
        else:
            attacks, sizes, n = [AutoAttack(eps, "standard", seed)], {}, args.aa_n
        torch.manual_seed(seed)
        start = time.perf_counter()
        correct, seconds = evaluate_per_example(model, data.test_x[:n], data.test_y[:n], attacks,
                                                subset_sizes=sizes)
        result: dict[str, Any] = {**summarise_correct(correct, seconds),
                                  "seconds": time.perf_counter() - start,
                                  "correct": {k: v.int().tolist() for k, v in correct.items()}}
        if kind == "aa":  # the worst case over every attack on these images
            base = json.loads((path / f"eval-{ckpt}.json").read_text())["correct"]
            flags = {k: torch.tensor(v[:n], dtype=torch.bool) for k, v in base.items()}
            result["worst_case_without_autoattack_acc"] = float(worst_case(flags).float().mean())
            flags["autoattack"] = correct["autoattack"]
            result["worst_case_all_acc"] = float(worst_case(flags).float().mean())
        write_json(out, result)


def point_job(point: str, seed: int, args: argparse.Namespace, stages: str) -> Job:
    """The sweep job of one run: this script with ``--run-point`` and every option the run uses."""
    options = {"--dataset": args.dataset, "--data-dir": args.data_dir, "--train-size": args.train_size,
               "--epochs": args.epochs, "--width": args.width, "--eps": args.eps, "--pgd-step": args.pgd_step,
               "--eval-n": args.eval_n, "--aa-n": args.aa_n, "--val-size": args.val_size,
               "--curve-n": args.curve_n, "--threads": args.threads, "--runs-dir": args.runs_dir.resolve(),
               "--run-point": f"{point}:{seed}", "--stage": stages}
    command = [str(SCRIPT)] + [str(a) for k, v in options.items() if v is not None for a in (k, v)]
    return Job(f"{point}/seed{seed}", tuple(command), point_path(point, seed, args).resolve(),
               done_file=f"{stages.split(',')[-1]}.json", resume_args=())


def timing_path(points: list[str], args: argparse.Namespace) -> Path:
    return args.runs_dir / "_timing" / (args.l2l_options.replace(",", "+") or "default")


def timing_job(points: list[str], args: argparse.Namespace) -> Job:
    """The round-robin step timing and FLOP count of every point, as one job (one process)."""
    options = {"--dataset": args.dataset, "--data-dir": args.data_dir, "--train-size": args.train_size,
               "--width": args.width, "--eps": args.eps, "--threads": args.threads,
               "--runs-dir": args.runs_dir.resolve(), "--l2l-options": args.l2l_options or None,
               "--timing-rounds": args.timing_rounds}
    command = [str(SCRIPT), "--run-timing"] + [str(a) for k, v in options.items() if v is not None
                                               for a in (k, v)]
    return Job("step-timing", tuple(command), timing_path(points, args).resolve(), done_file="timing.json",
               resume_args=())


def run_timing(args: argparse.Namespace) -> None:
    points = F.frontier_points(l2l_options(args))
    configs = {p: point_vision_config(p, 0, args) for p in points}
    rounds = args.timing_rounds
    seconds, flops = time_steps(configs, rounds=rounds)
    path = timing_path(points, args)
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "timing.json", {
        "batch_size": BATCH_SIZE, "rounds": rounds, "steps_per_round": TIMING["steps_per_round"],
        "torch_threads": args.threads, "seconds_per_step_median": seconds,
        "gflops_per_step": {p: f / 1e9 for p, f in flops.items()}})


def only(points: list[str], args: argparse.Namespace) -> list[str]:
    """``points`` cut to ``--points``, in their own order."""
    if args.points is None:
        return points
    wanted = [p for p in args.points.split(",") if p]
    if unknown := sorted(set(wanted) - set(points)):
        raise L2LError(f"--points: {', '.join(unknown)} not among this mode's points ({', '.join(points)})")
    return [p for p in points if p in wanted]


def l2l_options(args: argparse.Namespace) -> list[str]:
    opts = [o for o in args.l2l_options.split(",") if o]
    unknown = set(opts) - set(F.OPTION_SUFFIXES)
    if unknown:
        raise L2LError(f"--l2l-options: unknown {sorted(unknown)}; choose from "
                       f"{', '.join(F.OPTION_SUFFIXES)}")
    return opts


def finished_point(point: str, seeds: list[int], args: argparse.Namespace, ckpt: str) -> dict[str, Any]:
    """The numbers of the evaluated runs of ``point`` among ``seeds`` (lists in seed order)."""
    out: dict[str, Any] = {"seed_list": [], "clean": [], "robust": [], "autoattack_full": [],
                           "robust_on_autoattack_subset": [], "autoattack_full_seeds": [], "train_hours": [],
                           "best_epoch": [], "val_last": [], "val_peak": []}
    for seed in seeds:
        path = point_path(point, seed, args)
        ev = path / f"eval-{ckpt}.json"
        if not ev.is_file():
            continue
        e = json.loads(ev.read_text())
        metrics = json.loads((path / "metrics.json").read_text())
        out["seed_list"].append(seed)
        out["clean"].append(e["clean_acc"])
        out["robust"].append(e["worst_case_acc"])
        out["train_hours"].append(sum(h["epoch_seconds"] for h in metrics["history"]) / 3600)
        out["best_epoch"].append(metrics.get("best_epoch"))
        if val := [h["val_pgd_acc"] for h in metrics["history"] if "val_pgd_acc" in h]:
            out["val_last"].append(val[-1])
            out["val_peak"].append(max(val))
        if (aa := path / f"aa-{ckpt}.json").is_file():
            a = json.loads(aa.read_text())
            out["autoattack_full"].append(a["worst_case_all_acc"])
            out["robust_on_autoattack_subset"].append(a["worst_case_without_autoattack_acc"])
            out["autoattack_full_seeds"].append(seed)
    return out


def assemble(points: list[str], seeds: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """The frontier's JSON from every finished run of ``points`` and ``seeds``."""
    timing_file = timing_path(points, args) / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else None
    rows, measured = [], {}
    for point in points:
        done = finished_point(point, seeds, args, args.select)
        if not done["robust"]:
            continue
        cfg = F.point_config(point)
        row: dict[str, Any] = {
            "method": point, "attacker_width": cfg.get("attacker_width"),
            "att_iter": cfg.get("att_iter", 1) if F.is_l2l(point) else None,
            "gflops_per_step": None, "step_time_ratio_vs_pgd10": None, "flops_ratio_vs_pgd10": None,
            **{k: done[k] for k in ("clean", "robust", "autoattack_full", "robust_on_autoattack_subset")},
            "seeds": len(done["robust"]),
            "seed_list": done["seed_list"], "autoattack_full_seeds": done["autoattack_full_seeds"],
            "train_hours": done["train_hours"], "best_epoch": done["best_epoch"]}
        if timing is not None:
            gf, sec = timing["gflops_per_step"], timing["seconds_per_step_median"]
            row.update(gflops_per_step=gf[point], step_time_ratio_vs_pgd10=sec[point] / sec["pgd-10"],
                       flops_ratio_vs_pgd10=gf[point] / gf["pgd-10"], seconds_per_step=sec[point])
            measured[point] = F.Measured(gf[point], tuple(done["robust"]))
        rows.append(row)
    result: dict[str, Any] = {
        "dataset": args.dataset, "eps": args.eps, "train_size": args.train_size, "epochs": args.epochs,
        "model": f"preact-resnet18 (width {args.width})", "checkpoint": args.select,
        "l2l_options": l2l_options(args), "val_size": args.val_size,
        "evaluation": {"robust": f"per-example worst case of PGD-50 x 5 restarts (worst iterate) and "
                                 f"APGD-CE + APGD-T on the first {args.eval_n} test images",
                       "autoattack_full": f"the same worst case also over full standard AutoAttack, on the "
                                          f"first {args.aa_n} of them (second-pass points)",
                       "robust_on_autoattack_subset": f"robust on those first {args.aa_n} images, without "
                                                      "AutoAttack: the paired comparison"},
        "timing": {k: v for k, v in (timing or {}).items() if k not in ("seconds_per_step_median",
                                                                         "gflops_per_step")},
        "points": rows, "front": [], "l2l_on_or_above_front": None}
    pgd_complete = all(p in measured and len(measured[p].robust) >= len(args.first_seeds)
                       for p in points if p.startswith("pgd-"))
    if pgd_complete:
        result.update(F.frontier_summary(measured))
    return result


def frontier_main(args: argparse.Namespace) -> int:
    """--frontier, --options-study, and the jobs they run (--run-point, --run-timing)."""
    if args.run_timing:
        run_timing(args)
        return 0
    if args.run_point:
        point, _, seed = args.run_point.rpartition(":")
        run_point(point, int(seed), args, args.stage)
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s]
    args.first_seeds = seeds
    if not args.val_size and (args.options_study or args.select == "best"):
        raise L2LError("the best epoch needs a validation split: give --val-size >= 1")
    sweep_kw = {"workers": args.jobs, "address": args.address, "max_retries": args.max_retries,
                "progress": args.progress}
    if args.options_study:
        return options_study(args, seeds, sweep_kw)
    points = only(F.frontier_points(l2l_options(args)), args)
    stage = f"eval-{args.select}"
    jobs = [point_job(p, s, args, stage) for s in seeds for p in points]
    sweep = run_jobs([*jobs, timing_job(points, args)], **sweep_kw)
    report(sweep)
    extra = [int(s) for s in args.front_seeds.split(",") if s]
    result = assemble(points, seeds + extra, args)
    if not sweep.interrupted and result["front"]:
        # second pass: more seeds and full AutoAttack for the front and the L2L point nearest it
        second = [*result["front"], *([result["best_l2l"]] if result.get("best_l2l") else [])]
        print(f"second pass (seeds {', '.join(map(str, extra))} and full AutoAttack): {', '.join(second)}",
              flush=True)
        sweep = run_jobs([point_job(p, s, args, f"{stage},aa-{args.select}") for s in seeds + extra
                          for p in second], **sweep_kw)
        report(sweep)
        result = assemble(points, seeds + extra, args)
    if result["points"]:
        write_json(args.output, result)
        atomic_write_text(args.output.with_suffix(".md"), frontier_markdown(result))
        if result["front"]:
            plot_frontier(result, args.output.with_suffix(".png"))
        print(frontier_markdown(result))
    return 130 if sweep.interrupted else 0 if sweep.ok else 1


def options_study(args: argparse.Namespace, seeds: list[int], sweep_kw: dict[str, Any]) -> int:
    """Each official detail's effect on l2l-grad, measured once: last and best epoch of every run."""
    points = only(F.option_points(args.study_width), args)
    sweep = run_jobs([point_job(p, s, args, "eval-last,eval-best") for s in seeds for p in points],
                     **sweep_kw)
    report(sweep)
    rows = {}
    for p in points:
        last, best = (finished_point(p, seeds, args, c) for c in ("last", "best"))
        if last["robust"]:
            rows[p] = {"options": p.split("+")[1:], "seeds": len(last["robust"]),
                       "seed_list": last["seed_list"], "clean_last": last["clean"],
                       "robust_last": last["robust"],
                       "clean_best": best["clean"], "robust_best": best["robust"],
                       "best_epoch": last["best_epoch"], "val_last": last["val_last"],
                       "val_peak": last["val_peak"]}
    base = rows.get(points[0])
    for row in rows.values():
        row["robust_last_mean"] = statistics.fmean(row["robust_last"])
        if row["robust_best"]:
            row["best_minus_last"] = statistics.fmean(row["robust_best"]) - row["robust_last_mean"]
        if base is not None:
            row["effect_vs_none"] = row["robust_last_mean"] - statistics.fmean(base["robust_last"])
    result = {"dataset": args.dataset, "eps": args.eps, "train_size": args.train_size,
              "epochs": args.epochs, "model": f"preact-resnet18 (width {args.width})",
              "attacker_width": args.study_width, "val_size": args.val_size,
              "evaluation": f"per-example worst case of PGD-50 x 5 restarts (worst iterate) and "
                            f"APGD-CE + APGD-T on the first {args.eval_n} test images", "points": rows}
    complete = {p: r for p, r in rows.items() if len(r["val_last"]) == len(seeds)}
    if set(complete) == set(F.option_points(args.study_width)):  # the whole study: the plan's rule decides
        result["choice"] = F.choose_options({p: r["val_last"] for p, r in complete.items()},
                                            {p: r["val_peak"] for p, r in complete.items()})
    if rows:
        write_json(args.output, result)
        atomic_write_text(args.output.with_suffix(".md"), options_markdown(result))
        print(options_markdown(result))
    return 130 if sweep.interrupted else 0 if sweep.ok else 1


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.1f}" + (f" +- {100 * statistics.stdev(values):.1f}" if len(values) > 1 else "")


def _aa(row: dict[str, Any]) -> str:
    if not row["autoattack_full"]:
        return "-"
    return f"{_mean_std(row['autoattack_full'])} ({_mean_std(row['robust_on_autoattack_subset'])})"


def frontier_markdown(result: dict[str, Any]) -> str:
    lines = [f"Fashion-MNIST, eps {result['eps']}, {result['train_size']} training images x "
             f"{result['epochs']} epochs, {result['model']}, the {result['checkpoint']} epoch's classifier. "
             "Robust: "
             f"{result['evaluation']['robust']}; full AA: {result['evaluation']['autoattack_full']}. "
             "Cost: FLOPs of one training step (forward + backward, `torch.utils.flop_counter`, batch "
             f"{BATCH_SIZE}) and the round-robin step time, both against PGD-10. Mean +- std over seeds.", "",
             "| point | GFLOPs / step | FLOPs vs pgd-10 | time vs pgd-10 | clean | robust | full AA "
             "(robust on its images) | seeds | vs front (margin +- noise) |",
             "|---|---|---|---|---|---|---|---|---|"]
    versus = result.get("versus_front", {})

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in result["points"]:
        v = versus.get(r["method"])
        place = ("front" if r["method"] in result["front"] else
                 "-" if v is None else f"{100 * v['margin']:+.1f} +- {100 * v['margin_std']:.1f}")
        lines.append(f"| {r['method']} | {num(r['gflops_per_step'], '.1f')} | "
                     f"{num(r['flops_ratio_vs_pgd10'], '.2f')}x | "
                     f"{num(r['step_time_ratio_vs_pgd10'], '.2f')}x | {_mean_std(r['clean'])} | "
                     f"{_mean_std(r['robust'])} | {_aa(r)} | {r['seeds']} | {place} |")
    if result["front"]:
        lines += ["", f"PGD-k front: {', '.join(result['front'])}. A point is on or above the front when "
                  "its robust accuracy is not below the front's (interpolated at its FLOPs) by more than the "
                  "seeds' noise, above it when it beats it by more. L2L on or above the front: "
                  f"{'yes' if result['l2l_on_or_above_front'] else 'no'}; above: "
                  f"{'yes' if result['l2l_above_front'] else 'no'}."]
    return "\n".join(lines) + "\n"


def options_markdown(result: dict[str, Any]) -> str:
    lines = [f"The official code's details, each measured once on l2l-grad (attacker width "
             f"{result['attacker_width']}), {result['train_size']} training images x {result['epochs']} "
             f"epochs; robust: {result['evaluation']}. Best: the epoch of best PGD-10 on "
             f"{result['val_size']} held-out training images. Mean +- std over seeds.", "",
             "| options | val PGD-10 (last) | val peak - last | clean (last) | robust (last) | effect vs "
             "none | robust (best epoch) | best - last | best epochs | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["points"].values():
        effect = f"{100 * r['effect_vs_none']:+.1f}" if "effect_vs_none" in r else "-"
        gap = f"{100 * r['best_minus_last']:+.1f}" if "best_minus_last" in r else "-"
        drop = [peak - last for peak, last in zip(r["val_peak"], r["val_last"], strict=True)]
        epochs = ", ".join(str(e + 1) for e in r["best_epoch"] if e is not None) or "-"
        lines.append(f"| {', '.join(r['options']) or 'none'} | {_mean_std(r['val_last'])} | "
                     f"{_mean_std(drop)} | {_mean_std(r['clean_last'])} | {_mean_std(r['robust_last'])} | "
                     f"{effect} | {_mean_std(r['robust_best'])} | {gap} | {epochs} | {r['seeds']} |")
    if choice := result.get("choice"):
        lines += ["", f"Choice by the rule of `results/vision/options-plan.md` (validation numbers only): "
                  f"L2L points train with {', '.join(choice['l2l_options']) or 'no official detail'}; every "
                  f"point is judged by its {choice['select']} epoch (the chosen configuration's validation "
                  f"accuracy ends {100 * choice['peak_minus_last']:.1f} points below its peak on average)."]
    return "\n".join(lines) + "\n"


def plot_frontier(result: dict[str, Any], path: Path) -> None:
    """Robust accuracy against GFLOPs per step, one marker per point (error bars: std over seeds),
    the PGD-k front as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["points"] if r["gflops_per_step"] is not None]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    by_name = {r["method"]: r for r in rows}
    front = [by_name[n] for n in result["front"]]
    ax.plot([r["gflops_per_step"] for r in front], [100 * statistics.fmean(r["robust"]) for r in front],
            "-", color="0.6", zorder=1, label="PGD-k front")
    for r in rows:
        kind = "pgd" if r["method"].startswith("pgd-") else "l2l" if F.is_l2l(r["method"]) else "other"
        std = 100 * statistics.stdev(r["robust"]) if len(r["robust"]) > 1 else 0.0
        ax.errorbar(r["gflops_per_step"], 100 * statistics.fmean(r["robust"]), yerr=std, capsize=3,
                    fmt={"pgd": "o", "l2l": "s", "other": "^"}[kind],
                    color={"pgd": "tab:blue", "l2l": "tab:red", "other": "tab:green"}[kind], zorder=2)
        ax.annotate(r["method"], (r["gflops_per_step"], 100 * statistics.fmean(r["robust"])), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")  # the points span 20x in cost
    ax.set_xlabel(f"GFLOPs per training step (batch {BATCH_SIZE}, log scale)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(f"Fashion-MNIST, eps {result['eps']}: {result['train_size']} images x "
                 f"{result['epochs']} epochs")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "synthetic"),
                   help="synthetic: generated 1x28x28 images, for a smoke test without the data set")
    p.add_argument("--data-dir", default=None, help="data set directory (default: the data module's)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--frontier", action="store_true",
                   help="the cost-robustness frontier instead of the method table: every point of "
                        "l2l_gail.vision.frontier (PGD-k, TRADES, learned attackers) trained with --seeds, "
                        "evaluated with PGD-50 x 5 restarts (worst iterate) and APGD-CE + APGD-T on --eval-n "
                        "images, their step FLOPs and round-robin step time measured; then a second pass "
                        "gives the PGD-k front's points and the best L2L point --front-seeds more seeds and "
                        "full AutoAttack on the first --aa-n images. Writes <output>.{json,md,png}")
    p.add_argument("--options-study", action="store_true",
                   help="measure the official code's details once: l2l-grad at --study-width alone, with the "
                        "train-mode input gradient, with the official attacker init and with both, --seeds "
                        "each, every run's last and best-validation epoch evaluated as --frontier does. "
                        "Writes <output>.{json,md} (default results/vision/official-options)")
    p.add_argument("--l2l-options", default="",
                   help="--frontier: official details every L2L point trains with, comma-separated: tmg "
                        "(train-mode input gradient), oinit (official attacker init); default none")
    p.add_argument("--select", default="last", choices=("last", "best"),
                   help="--frontier: the checkpoint each point is judged by: the last epoch, or the epoch of "
                        "best PGD-10 accuracy on the --val-size validation split (default last)")
    p.add_argument("--val-size", type=int, default=1000,
                   help="--frontier/--options-study: training images held out (beyond --train-size) for "
                        "best-epoch selection (default 1000)")
    p.add_argument("--front-seeds", default="3,4",
                   help="--frontier: the second pass's extra seeds for the front's points (default 3,4)")
    p.add_argument("--points", default=None,
                   help="--frontier/--options-study: only these of its points, comma-separated (e.g. to run "
                        "the PGD-k reference first; default all)")
    p.add_argument("--study-width", type=float, default=0.041,
                   help="--options-study: the attacker width (default 0.041)")
    p.add_argument("--curve-n", type=int, default=200,
                   help="--frontier/--options-study: test images of the per-epoch PGD-10 curve (default 200)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of methods")
    p.add_argument("--train-size", type=int, default=None,
                   help="training subset size (default 5000; --frontier/--options-study 20000)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs for every method (default 10; --frontier/--options-study 15)")
    p.add_argument("--width", type=int, default=8, help="PreActResNet-18 base width (default 8)")
    p.add_argument("--eps", type=float, default=0.1, help="L-inf radius (default 0.1)")
    p.add_argument("--pgd-step", type=float, default=None,
                   help="evaluation PGD/CW step (default 0.01; --frontier: 2.5 eps / 50)")
    p.add_argument("--restarts", type=int, default=2, help="PGD-20/CW restarts (default 2)")
    p.add_argument("--flops-ratio", type=float, default=0.35, help="attacker/classifier forward FLOPs")
    p.add_argument("--attacker-width", type=float, default=None,
                   help="the learned attacker's width multiplier (default: bisected for --flops-ratio)")
    p.add_argument("--eval-n", type=int, default=None,
                   help="test images for clean/FGSM/PGD/CW (default 1000); --frontier: for PGD-50 x 5 and "
                        "APGD-CE + APGD-T (default 500)")
    p.add_argument("--aa-n", type=int, default=None,
                   help="first N test images for AutoAttack, slow on CPU (default 100); PGD-20 is "
                        "re-run on the same images for a paired comparison. --frontier: full AutoAttack "
                        "on the first N of the --eval-n images of the second pass's points (default 200)")
    p.add_argument("--aa-version", default="standard", choices=("standard", "fast"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="run directories (default runs/bench-vision; --frontier/--options-study: "
                        "runs/bench-vision-frontier, shared, so the study reuses the frontier's runs)")
    p.add_argument("--output", type=Path, default=None,
                   help="default results/vision/fashion-mnist.json; --frontier results/vision/frontier.json; "
                        "--options-study results/vision/official-options.json")
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
    p.add_argument("--run-point", default=None, metavar="POINT:SEED",
                   help="--frontier/--options-study: train and evaluate this one run in this process (what "
                        "each sweep job runs); with --stage")
    p.add_argument("--stage", default="eval", help=argparse.SUPPRESS)
    p.add_argument("--run-timing", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--timing-rounds", type=int, default=TIMING["rounds"],
                   help=f"round-robin timing rounds (default {TIMING['rounds']})")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    frontier = args.frontier or args.options_study or args.run_point or args.run_timing
    for key, old, new in (("train_size", 5000, 20000), ("epochs", 10, 15), ("eval_n", 1000, 500),
                          ("aa_n", 100, 200), ("runs_dir", Path("runs/bench-vision"), FRONTIER_RUNS)):
        if getattr(args, key) is None:
            setattr(args, key, new if frontier else old)
    if args.pgd_step is None and not frontier:
        args.pgd_step = 0.01
    if args.output is None:
        args.output = (OPTIONS_OUTPUT if args.options_study else FRONTIER_OUTPUT if frontier
                       else Path("results/vision/fashion-mnist.json"))
    if frontier:
        return exit_status(lambda: frontier_main(args))
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
