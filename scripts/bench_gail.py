#!/usr/bin/env python
"""Benchmark: gail, gail-gp, l2l-gail and its controls on the MuJoCo locomotion tasks, 5 seeds x 1M steps.

The arms: ``gail`` (Adam), ``gail-gp``, ``l2l-gail``, and three controls that isolate what the
learned optimizer does: ``sign-sgd`` (signSGD, what a bounded learned step becomes when ``phi``
saturates its bound), ``l2l-frozen`` (``phi`` kept at the Adam clone: meta lr 0) and
``adam-matched`` (Adam's direction at the learned step's norm). For every task whose
demonstrations are shipped (hopper, halfcheetah, walker2d, ant by default),
trains every method for every seed under ``runs/gail/bench-<task>/<method>/seed<k>/``, then
writes ``results/gail/<task>.{json,md,png}`` with ``l2l gail compare``. The runs are a sweep
(:mod:`l2l_gail.sweep`): ``--jobs`` at a time on this machine (default: one per core) or on a
Ray cluster with ``--address``, seeds outermost so that partial results already compare the
methods. Long (CPU days for all of it): run it in the background. Finished runs are skipped
and unfinished ones resumed from their last checkpoint, so re-running the same command
continues where it stopped.

    nohup .venv/bin/python scripts/bench_gail.py > bench_gail.log 2>&1 &
    .venv/bin/python scripts/bench_gail.py --tasks inverted-pendulum --seeds 0,1 --timesteps 4096  # smoke

The runs' own env steps/s depend on what else the shared machine ran during each run.
``--throughput`` instead trains every configuration round-robin in one process (a few rounds
each, several repeats) and writes ``<task>-throughput.{json,md}`` with medians and ratios to
``gail``: the side-by-side speed comparison.

    .venv/bin/python scripts/bench_gail.py --tasks hopper --throughput

``--tune`` spends the ``gail`` arm's tuning budget: a grid of discriminator learning rate x
discriminator updates per round, as multiples of each task file's values, on the development
tasks (hopper and halfcheetah by default), and writes ``tuning.{json,md}``: every
configuration's finals, its IQM per task, and the choice -- the configuration with the highest
mean over tasks of the IQM of the final normalised return (the task files' values win ties).
The choice is then written into the task files by hand, with the tuning file as its source.

    nohup .venv/bin/python scripts/bench_gail.py --tune > tune.log 2>&1 &

``--v2 STAGE`` runs issue 13's L2L-GAIL v2 study in the order ``results/gail/v2-plan.md`` fixed
before any v2 number was seen, each stage in the benchmark's experiments (``bench-<task>``), so
the reference arms' runs are the benchmark's own:

    .venv/bin/python scripts/bench_gail.py --v2 budget   # B from the tuned gail runs on hopper, halfcheetah
    .venv/bin/python scripts/bench_gail.py --v2 dev      # the 6 candidates + gail, gail-gp, l2l-gail there
    .venv/bin/python scripts/bench_gail.py --v2 extras   # not candidates: the policy targets, phi transferred
    .venv/bin/python scripts/bench_gail.py --v2 select   # the plan's rule -> selected.json: commit it, then
    .venv/bin/python scripts/bench_gail.py --v2 heldout --seeds 0,1,2,3,4,5,6,7,8,9   # walker2d, ant

``--benchmark-output PATH.json`` additionally compares all tasks together (the aggregate over
tasks and P(X > Y) against ``gail``) and adds the ``tuning`` record of ``--tuning-file``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from l2l_gail.errors import L2LError, exit_status
from l2l_gail.gail import demos, stats
from l2l_gail.gail.compare import RESULTS_DIR, CompareOutputs, compare, output_paths
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.experiment import load_experiment, run_diagnostics
from l2l_gail.gail.expert import set_threads
from l2l_gail.gail.factory import Prepared, build, prepare
from l2l_gail.gail.loop import start_segment, train_round
from l2l_gail.gail.tasks import load_task
from l2l_gail.runs import DEFAULT_ROOT, atomic_write_text, write_json
from l2l_gail.sweep import Grid, Job, SweepResult, Variant, run_jobs
from l2l_gail.sweep.cli import report
from l2l_gail.sweep.jobs import Outcome

TASKS = ("hopper", "halfcheetah", "walker2d", "ant")
METHODS = ("gail", "gail-gp", "l2l-gail", "sign-sgd")
CONTROLS = ("l2l-frozen:method=l2l-gail,l2l_meta_lr=0",
            "adam-matched:method=l2l-gail,l2l_step_direction=adam")
"""The controls that are configurations of l2l-gail rather than methods, as ``--variant`` specs."""
TUNE_TASKS = ("hopper", "halfcheetah")
V2_STAGES = ("budget", "dev", "extras", "select", "heldout")
V2_DEV_TASKS = ("hopper", "halfcheetah")
V2_HELDOUT_TASKS = ("walker2d", "ant")
V2_REFERENCES = ("gail", "gail-gp", "l2l-gail")
"""The arms the development runs stand beside (the held-out stage keeps gail and gail-gp)."""
V2_CANDIDATES: dict[str, dict[str, str]] = {
    "l2l-dir-adam": {"l2l_step_norm": "adam"},
    "l2l-dir-ttur": {"l2l_step_norm": "ttur"},
    "l2l-kl": {"l2l_constraint": "kl"},
    "l2l-logit": {"l2l_constraint": "logit"},
    "l2l-next-round": {"l2l_heldout": "next-round"},
    "l2l-v2": {"l2l_step_norm": "adam", "l2l_heldout": "next-round"},
}
"""results/gail/v2-plan.md's candidates, configurations of ``l2l-gail``; a constrained one takes
``l2l_budget`` from the budget stage (the median output shift of the tuned gail runs)."""
V2_EXTRAS: dict[str, dict[str, str]] = {
    "l2l-policy": {"method": "l2l-gail", "l2l_target": "policy"},
    "l2l-both": {"method": "l2l-gail", "l2l_target": "both"},
}
"""Measured once on the development tasks, not candidates: the learned optimizer on PPO's step."""
V2_TRANSFER = "l2l-transfer"
"""Also measured once: l2l-gail started from the ``phi`` learned on the other development task."""
V2_TIE = 0.02
"""Candidates whose aggregate IQMs are within this of the best are told apart by their spread."""
TUNE_LR_MULTS = (1 / 3, 1.0, 3.0)
TUNE_UPDATE_MULTS = (0.5, 1.0, 2.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=None,
                        help="comma-separated tasks; those without shipped demonstrations are skipped "
                             f"(default: {','.join(TASKS)}; with --tune {','.join(TUNE_TASKS)})")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods (empty: only the --variant runs)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
                        help="an extra configuration run beside the methods, named LABEL, e.g. "
                             "'l2l-maxstep1:method=l2l-gail,l2l_max_step=1' (GAILConfig fields; repeatable)")
    parser.add_argument("--controls", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the controls that are l2l-gail configurations: "
                             + "; ".join(c.replace(":", " = ", 1) for c in CONTROLS) + " (default: on)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--timesteps", type=int, default=1_000_000, help="environment steps per run")
    parser.add_argument("--eval-every", type=int, default=None, help="evaluation interval (task file's)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="root of the run directories")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where <task>.json goes")
    parser.add_argument("--force", action="store_true", help="overwrite existing results")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="runs at a time on this machine (1: one by one, no Ray)")
    parser.add_argument("--address", default=None,
                        help="run on a Ray cluster instead: auto or ray://HOST:PORT (see `l2l sweep --help`)")
    parser.add_argument("--max-retries", type=int, default=2,
                        help="attempts after the first for a crashed run")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--throughput", action="store_true",
                        help="only measure env steps/s of every configuration round-robin (seed: the first "
                             "of --seeds) and write <task>-throughput.{json,md}")
    parser.add_argument("--tune", action="store_true",
                        help="spend gail's tuning budget instead: disc_lr x n_disc_updates_per_round "
                             f"multiples on --tasks (default here: {','.join(TUNE_TASKS)}), experiments "
                             "tune-<task>; writes --tuning-file and its table")
    parser.add_argument("--tune-lr-mults", default=",".join(f"{m:g}" for m in TUNE_LR_MULTS),
                        help="--tune: multiples of each task's disc_lr (default %(default)s)")
    parser.add_argument("--tune-update-mults", default=",".join(f"{m:g}" for m in TUNE_UPDATE_MULTS),
                        help="--tune: multiples of each task's n_disc_updates_per_round, rounded, at "
                             "least 1 (default %(default)s)")
    parser.add_argument("--tuning-file", type=Path, default=RESULTS_DIR / "tuning.json",
                        help="--tune's output, and the tuning record --benchmark-output includes "
                             "(default results/gail/tuning.json)")
    parser.add_argument("--benchmark-output", type=Path, default=None,
                        help="also compare all --tasks together into this JSON (e.g. "
                             "results/gail/benchmark.json), with the tuning record of --tuning-file")
    parser.add_argument("--v2", choices=V2_STAGES, default=None,
                        help="a stage of the L2L-GAIL v2 study (results/gail/v2-plan.md): budget (B from "
                             "the benchmark's gail runs on --tasks, default "
                             f"{','.join(V2_DEV_TASKS)}), dev (its candidates beside "
                             f"{', '.join(V2_REFERENCES)} there: v2-dev.json), extras (not candidates: "
                             "the policy targets and phi transferred between the dev tasks: v2-extras.json), "
                             "select (the plan's rule on the dev "
                             "results: selected.json), heldout (the selection, gail and gail-gp on --tasks, "
                             f"default {','.join(V2_HELDOUT_TASKS)}); files in --output-dir")
    parser.add_argument("--repeats", type=int, default=5, help="--throughput: round-robin repeats (median)")
    parser.add_argument("--rounds", type=int, default=8, help="--throughput: GAIL rounds per measurement")
    args = parser.parse_args(argv)
    if args.controls and not (args.tune or args.v2):
        args.variant = [*CONTROLS, *args.variant]
    return exit_status(lambda: run(args))


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``'LABEL:key=value,key=value'`` -> (LABEL, typed GAILConfig fields)."""
    label, _, body = spec.partition(":")
    hints = typing.get_type_hints(GAILConfig)
    fields: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in hints or key in ("task", "label", "ppo", "seed"):
            raise L2LError(f"bad --variant item {item!r} in {spec!r}: use KEY=VALUE with a GAILConfig "
                           "field such as method, l2l_max_step, l2l_meta_lr, l2l_objective, gp_coef")
        kind = next((t for t in typing.get_args(hints[key]) if t is not type(None)), hints[key])
        try:
            if kind is bool:
                if raw not in ("true", "false"):
                    raise ValueError(raw)
                fields[key] = raw == "true"
            else:
                fields[key] = kind(raw) if kind in (int, float) else raw
        except ValueError:
            expected = "true or false" if kind is bool else kind.__name__
            raise L2LError(f"bad --variant value {raw!r} for {key}: expected {expected}") from None
    if not label or "method" not in fields:
        raise L2LError(f"--variant {spec!r} needs a label and a method, e.g. 'l2l-x:method=l2l-gail,...'")
    return label, fields


def run(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.tune:
        return tune(args, seeds)
    if args.v2:
        return v2(args, seeds)
    methods = [m for m in args.methods.split(",") if m]
    if not methods and not args.variant:
        raise L2LError("nothing to run: give --methods or at least one --variant")
    shipped = demos.read_manifest()["tasks"]
    asked = (args.tasks or ",".join(TASKS)).split(",")
    tasks = [t for t in asked if t in shipped]
    for task in sorted(set(asked) - set(tasks)):
        print(f"{task}: no shipped demonstrations yet, skipped (`l2l expert collect --task {task}`)")
    if not tasks:
        raise L2LError("none of the tasks has shipped demonstrations; see `l2l expert show`")
    set_threads(args.threads)
    variants = [Variant(m, {"method": m}) for m in methods] + [
        Variant(*parse_variant(spec)) for spec in args.variant]
    # Every configuration and output is checked before the first (long) run starts.
    plans = []
    for task in tasks:
        output = args.output_dir / (f"{task}-throughput.json" if args.throughput else f"{task}.json")
        targets = (output, output.with_suffix(".md")) if args.throughput else output_paths(output)
        existing = [p for p in targets if p.exists()]
        if existing and not args.force:
            raise L2LError(f"{existing[0]} exists: pass --force to overwrite the {task} results")
        prepared = prepare_variants(args, task, variants, seeds[0], methods)
        plans.append((task, output, prepared))
    if args.throughput:
        for task, output, prepared in plans:
            write_throughput(output, task, throughput(prepared, args.repeats, args.rounds))
        return 0
    runs_dir = Path(args.runs_dir or DEFAULT_ROOT)
    result = run_bench(args, bench_jobs(args, tasks, variants, seeds))
    # a run whose training diverged is a result (reported, beside its method's finished runs);
    # any other unfinished run keeps its task from being compared
    unfinished = {job.run_dir.parents[1].name for job, o in result.outcomes.items() if missing(o)}
    stopped = stopped_runs(result)
    for task, output, _ in plans:
        if f"bench-{task}" in unfinished:
            print(f"{task}: not compared: some of its runs did not finish")
            continue
        out = compare(runs_dir / "gail" / f"bench-{task}", output, force=args.force,
                      methods=[v.label for v in variants])
        add_stopped(out, {label: [r for r in runs if r.startswith(f"{task}/")]
                          for label, runs in stopped.items()})
        print_outputs(out)
    if args.benchmark_output is not None and not unfinished and not result.interrupted:
        out = write_benchmark(args.benchmark_output, [runs_dir / "gail" / f"bench-{t}" for t in tasks],
                              args.tuning_file, force=args.force, methods=[v.label for v in variants])
        add_stopped(out, stopped)
    return 130 if result.interrupted else 0 if result.ok or not unfinished else 1


def add_stopped(out: CompareOutputs, stopped: dict[str, list[str]]) -> None:
    """Add the runs whose training diverged to a comparison's JSON (``stopped``) and table."""
    stopped = {label: runs for label, runs in stopped.items() if runs}
    if stopped:
        write_json(out.json, {**json.loads(out.json.read_text()), "stopped": stopped})
        atomic_write_text(out.markdown, out.markdown.read_text() + "\n" + stopped_markdown(
            stopped, "no final; the table compares the method's other runs"))


def prepare_variants(args: argparse.Namespace, task: str, variants: Sequence[Variant], seed: int,
                     methods: Sequence[str]) -> dict[str, Prepared]:
    """Each variant's configuration on ``task`` at the benchmark's budget, checked; the runs of
    ``methods`` are named by their method, the others by their label."""
    return {v.label: prepare(GAILConfig(
        task=task, timesteps=args.timesteps, eval_every=args.eval_every, seed=seed,
        label=None if v.label in methods else v.label, **v.options)) for v in variants}


def bench_jobs(args: argparse.Namespace, tasks: list[str], variants: list[Variant],
               seeds: list[int]) -> list[Job]:
    """The runs of ``variants`` x ``seeds`` on ``tasks`` in the benchmark's experiments
    (``bench-<task>``): one command line for every stage that shares them."""
    grid = Grid("gail", tasks, variants, seeds, {"timesteps": args.timesteps, "eval-every": args.eval_every,
                                                 "threads": args.threads}, experiment="bench-{task}")
    return grid.jobs(Path(args.runs_dir or DEFAULT_ROOT))


def run_bench(args: argparse.Namespace, jobs: Sequence[Job]) -> SweepResult:
    """Run ``jobs`` as a sweep with the script's options and report it."""
    result = run_jobs(jobs, workers=args.jobs, address=args.address, max_retries=args.max_retries,
                      progress=not args.no_progress)
    report(result)
    return result


def print_outputs(out: CompareOutputs) -> None:
    """The comparison's table, then where its files are."""
    print(out.markdown.read_text(), end="")
    print(f"results: {out.json}\ntable:   {out.markdown}\nplot:    {out.plot}")


def write_benchmark(output: Path, experiments: list[Path], tuning_file: Path, *, force: bool,
                    methods: Sequence[str] | None = None) -> CompareOutputs:
    """All tasks compared together (:func:`~l2l_gail.gail.compare.compare`; only ``methods`` when
    given: the experiments also hold the v2 study's runs), with the ``tuning`` record of
    ``tuning_file`` added to the JSON and the table (a note where it is missing)."""
    out = compare(experiments, output, force=force, methods=methods)
    tuning = json.loads(tuning_file.read_text()) if tuning_file.is_file() else None
    summary = {**out.summary, "tuning": tuning["tuning"] if tuning else None}
    write_json(out.json, summary)
    note = (tuning_markdown(tuning) if tuning else
            f"No tuning record ({tuning_file} is missing): run `scripts/bench_gail.py --tune` first.\n")
    atomic_write_text(out.markdown, out.markdown.read_text() + "\n" + note)
    print_outputs(out)
    return out


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise L2LError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise L2LError(f"{what} must be one or more positive numbers, got {text!r}")
    return values


def tune_label(lr_mult: float, update_mult: float) -> str:
    """The run label of one tuning configuration, e.g. ``lr3x-upd0.5x``."""
    return f"lr{lr_mult:.3g}x-upd{update_mult:.3g}x"


def tune(args: argparse.Namespace, seeds: list[int]) -> int:
    """Train ``gail`` on the grid of multiples on every task and write the tuning record."""
    tasks = (args.tasks or ",".join(TUNE_TASKS)).split(",")
    lr_mults = _floats(args.tune_lr_mults, "--tune-lr-mults")
    update_mults = _floats(args.tune_update_mults, "--tune-update-mults")
    for path in (args.tuning_file, args.tuning_file.with_suffix(".md")):
        if path.exists() and not args.force:
            raise L2LError(f"{path} exists: pass --force to overwrite the tuning record")
    set_threads(args.threads)
    runs_dir = Path(args.runs_dir or DEFAULT_ROOT)
    options = {"timesteps": args.timesteps, "eval-every": args.eval_every, "threads": args.threads}
    jobs = []
    grid: dict[str, dict[str, dict[str, float]]] = {}
    for task in tasks:
        base = GAILConfig(task=task).resolved(load_task(task))
        grid[task] = {tune_label(lr, up): {
            "disc_lr": base.disc_lr * lr,
            "n_disc_updates_per_round": max(1, round(base.n_disc_updates_per_round * up))}
            for lr in lr_mults for up in update_mults}
        variants = [Variant(label, {"method": "gail", **v}) for label, v in grid[task].items()]
        jobs += Grid("gail", [task], variants, seeds, options, experiment="tune-{task}").jobs(runs_dir)
    result = run_bench(args, jobs)
    if not result.ok:
        print("tuning not summarised: some runs did not finish (the same command continues them)")
        return 130 if result.interrupted else 1
    finals = {}
    for task in tasks:
        runs, _ = load_experiment(runs_dir / "gail" / f"tune-{task}", list(grid[task]))
        finals[task] = {label: [r.metrics["final"] for r in results] for label, results in runs.items()}
    record = tuning_record(finals, grid, default=tune_label(1.0, 1.0), seeds=seeds,
                           timesteps=args.timesteps)
    write_json(args.tuning_file, record)
    atomic_write_text(args.tuning_file.with_suffix(".md"), tuning_markdown(record))
    print(tuning_markdown(record), end="")
    return 0


def tuning_record(finals: dict[str, dict[str, list[float]]], grid: dict[str, dict[str, dict[str, float]]],
                  *, default: str, seeds: list[int], timesteps: int) -> dict[str, Any]:
    """The ``tuning`` record: per configuration and task the finals and their IQM, the mean IQM
    over tasks, and the chosen configuration: the highest mean IQM; ``default`` (the task files'
    values) wins a tie, then the earlier configuration.

    ``finals[task][label]`` are the runs' final normalised returns, ``grid[task][label]`` the
    configuration's settings on that task.
    """
    tasks = list(finals)
    labels = list(finals[tasks[0]])
    scores = {label: {task: {"finals": finals[task][label], "iqm": stats.iqm([finals[task][label]]),
                             **grid[task][label]} for task in tasks} for label in labels}
    mean = {label: float(np.mean([scores[label][t]["iqm"] for t in tasks])) for label in labels}
    best = max(mean.values())
    chosen = default if mean.get(default) == best else next(m for m in labels if mean[m] == best)
    runs = len(labels) * len(tasks) * len(seeds)
    budget = (f"{len(labels)} configurations (disc_lr x n_disc_updates_per_round, multiples of each "
              f"task file's values) x {len(tasks)} tasks ({', '.join(tasks)}) x {len(seeds)} seeds "
              f"({', '.join(map(str, seeds))}) x {timesteps} env steps = {runs} runs; chosen by the "
              "mean over tasks of the IQM of the final normalised return")
    return {"tuning": {"gail": {"budget": budget,
                                "chosen": {"label": chosen, **{t: grid[t][chosen] for t in tasks}},
                                "mean_iqm": mean, "configurations": scores}}}


def tuning_markdown(record: dict[str, Any]) -> str:
    """The tuning record as a table, one row per configuration."""
    gail = record["tuning"]["gail"]
    tasks = list(next(iter(gail["configurations"].values())))
    lines = [f"Tuning of the `gail` arm: {gail['budget']}. Chosen: **{gail['chosen']['label']}**.", "",
             "| configuration | " + " | ".join(f"{t} IQM (finals)" for t in tasks) + " | mean IQM |",
             "|---|" + "---|" * len(tasks) + "---:|"]
    for label, per_task in gail["configurations"].items():
        cells = [f"{per_task[t]['iqm']:.3f} ({', '.join(f'{f:.2f}' for f in per_task[t]['finals'])})"
                 for t in tasks]
        mark = " (chosen)" if label == gail["chosen"]["label"] else ""
        lines.append(f"| {label}{mark} | " + " | ".join(cells) + f" | {gail['mean_iqm'][label]:.3f} |")
    return "\n".join(lines) + "\n"


def throughput(prepared: dict[str, Prepared], repeats: int, rounds: int) -> dict[str, list[float]]:
    """Env steps/s of each configuration, ``repeats`` measurements of ``rounds`` GAIL rounds each.

    All trainers live in one process and take turns, so every configuration sees the same
    machine load; one warm-up round each goes first.
    """
    rates: dict[str, list[float]] = {label: [] for label in prepared}
    with tempfile.TemporaryDirectory(prefix="l2l-throughput-") as log_dir:
        trainers = {label: build(p, Path(log_dir) / label) for label, p in prepared.items()}
        for label, trainer in trainers.items():
            start_segment(trainer, prepared[label].config.seed, 0)
            train_round(trainer)
        for repeat in range(repeats):
            for label, trainer in trainers.items():
                seconds = sum(train_round(trainer) for _ in range(rounds))
                rates[label].append(rounds * trainer.gen_train_timesteps / seconds)
            print(f"repeat {repeat + 1}/{repeats}: " + ", ".join(
                f"{label} {r[-1]:.0f}" for label, r in rates.items()) + " env steps/s", flush=True)
    return rates


def write_throughput(output: Path, task: str, rates: dict[str, list[float]]) -> None:
    """``<task>-throughput.json`` (every measurement, medians, ratios to gail) and its table."""
    median = {label: statistics.median(r) for label, r in rates.items()}
    base = median.get("gail")
    ratio = {label: (m / base if base else None) for label, m in median.items()}
    repeats = len(next(iter(rates.values())))
    write_json(output, {"task": task, "repeats": repeats,
                        "env_steps_per_second": rates, "median": median, "ratio_to_gail": ratio})
    lines = [f"Task `{task}`: env steps/s, every configuration trained round-robin in one process "
             f"(median of {repeats} repeats).", "",
             "| method | env steps/s (median) | vs gail | all repeats |", "|---|---:|---:|---|"]
    for label, m in median.items():
        vs = f"{ratio[label]:.2f}x" if ratio[label] is not None else "-"
        lines.append(f"| {label} | {m:.0f} | {vs} | {', '.join(f'{r:.0f}' for r in rates[label])} |")
    atomic_write_text(output.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results: {output}\ntable:   {output.with_suffix('.md')}")


# ----------------------------------------------------------------------------- L2L-GAIL v2 (issue 13)
def v2(args: argparse.Namespace, seeds: list[int]) -> int:
    """One stage of the v2 study (module docstring); every output is refused if it exists."""
    out, runs_dir = Path(args.output_dir), Path(args.runs_dir or DEFAULT_ROOT)
    files = {"budget": out / "v2-budget.json", "dev": out / "v2-dev.json",
             "extras": out / "v2-extras.json", "select": out / "selected.json",
             "heldout": out / "heldout.json"}
    target = files[args.v2]
    for path in (target, *output_paths(target)[1:]) if args.v2 in ("dev", "extras", "heldout") else (target,):
        if path.exists() and not args.force:
            raise L2LError(f"{path} exists: pass --force to overwrite it")
    if args.v2 == "select":
        record = select_v2(_read(files["dev"], "--v2 dev"), list(V2_CANDIDATES),
                           _read(files["budget"], "--v2 budget"))
        write_json(target, record)
        print(f"selected {record['label']}: {record['reason']}\n{target}: commit it before the held-out runs")
        return 0
    if args.v2 == "budget":
        record = v2_budget(runs_dir, (args.tasks or ",".join(V2_DEV_TASKS)).split(","), seeds)
        write_json(target, record)
        print(f"B: KL {record['budget']['kl']:.4g}, logit {record['budget']['logit']:.4g} "
              f"(median of {len(record['runs'])} runs)\n{target}")
        return 0
    budget = _read(files["budget"], "--v2 budget")
    set_threads(args.threads)
    if args.v2 == "dev":
        tasks = (args.tasks or ",".join(V2_DEV_TASKS)).split(",")
        variants = [Variant(m, {"method": m}) for m in V2_REFERENCES] + [
            Variant(label, candidate_options(label, budget)) for label in V2_CANDIDATES]
        result = run_bench(args, bench_jobs(args, tasks, variants, seeds))
    elif args.v2 == "extras":  # beside gail and l2l-gail (v1), whose phi the transfer starts from
        tasks = (args.tasks or ",".join(V2_DEV_TASKS)).split(",")
        variants = [Variant(m, {"method": m}) for m in ("gail", "l2l-gail")] + [
            Variant(label, options) for label, options in V2_EXTRAS.items()]
        result = run_bench(args, bench_jobs(args, tasks, variants, seeds))
        if not result.interrupted and not stopped_runs(result).keys() & {"gail", "l2l-gail"}:
            transfer = run_bench(args, transfer_jobs(args, tasks, seeds))  # needs l2l-gail's phi
            result = SweepResult({**result.outcomes, **transfer.outcomes}, interrupted=transfer.interrupted)
            variants.append(Variant(V2_TRANSFER, {}))
    else:
        selected = _read(files["select"], "--v2 select")
        commit = committed_in(files["select"])
        tasks = (args.tasks or ",".join(V2_HELDOUT_TASKS)).split(",")
        variants = [Variant("gail", {"method": "gail"}), Variant("gail-gp", {"method": "gail-gp"}),
                    Variant(selected["label"], selected["options"])]
        result = run_bench(args, bench_jobs(args, tasks, variants, seeds))
    stopped = stopped_runs(result)
    must_finish = {"gail", "gail-gp", "l2l-gail"} & {v.label for v in variants}
    if result.interrupted or stopped.keys() & must_finish or any(map(missing, result.outcomes.values())):
        print("not compared: some runs did not finish (the same command continues them)")
        return 130 if result.interrupted else 1
    # v2-plan.md: a run whose training diverged has no final; its configuration is reported with
    # the error and counts as not stable
    keep = [v.label for v in variants if v.label not in stopped or args.v2 == "heldout"]
    outputs = compare([runs_dir / "gail" / f"bench-{t}" for t in tasks], target, force=args.force,
                      methods=keep)
    extra: dict[str, Any] = {"stopped": stopped}
    if args.v2 == "heldout":
        side_by_side = [v for v in variants if v.label in ("gail", selected["label"])]
        rates = {task: throughput(prepare_variants(args, task, side_by_side, seeds[0], ("gail",)),
                                  args.repeats, args.rounds) for task in tasks}
        extra.update(heldout_targets(outputs.summary, selected, commit, rates,
                                     stopped=len(stopped.get(selected["label"], []))))
    write_json(outputs.json, {**outputs.summary, **extra})
    notes = ([targets_markdown(extra)] if args.v2 == "heldout" else []) + (
        [stopped_markdown(stopped)] if stopped else [])
    if notes:
        atomic_write_text(outputs.markdown, outputs.markdown.read_text() + "\n" + "\n".join(notes))
    print_outputs(outputs)
    return 0


def stopped_runs(result: SweepResult) -> dict[str, list[str]]:
    """The runs of ``result`` whose training diverged, by label: ``<task>/seed<k>: <the error>``.
    The trainers stop a run whose loss, meta-loss or gradient is not finite with an error that
    says it diverged; any other failure is not a result (a wrong option, a full disk)."""
    stopped: dict[str, list[str]] = {}
    for job, outcome in result.outcomes.items():
        if diverged(outcome):
            task = job.run_dir.parents[1].name.removeprefix("bench-")
            stopped.setdefault(job.run_dir.parent.name, []).append(
                f"{task}/{job.run_dir.name}: {outcome.error or '(no message)'}")
    return stopped


def diverged(outcome: Outcome) -> bool:
    """Whether a run ended because its training diverged (the trainers' error says so)."""
    return outcome.status == "failed" and "diverged" in outcome.error


def missing(outcome: Outcome) -> bool:
    """Whether a run has no result yet: neither finished nor stopped because training diverged
    (the same command continues it, or its error is not a finding: a wrong option, a full disk)."""
    return outcome.status not in ("done", "skipped") and not diverged(outcome)


def stopped_markdown(stopped: dict[str, list[str]],
                     consequence: str = "no final; their configuration counts as not stable, "
                                        "results/gail/v2-plan.md") -> str:
    """The runs whose training diverged, as a list under a heading that says what follows."""
    lines = [f"Runs that stopped because training diverged ({consequence}):", ""]
    lines += [f"- `{label}` {run}" for label, runs in stopped.items() for run in runs]
    return "\n".join(lines) + "\n"


def transfer_jobs(args: argparse.Namespace, tasks: list[str], seeds: list[int]) -> list[Job]:
    """``l2l-transfer`` on each task and seed: l2l-gail started from the ``phi`` that the same
    seed's l2l-gail run learned on the next task of ``tasks`` (the last on the first)."""
    runs_dir = Path(args.runs_dir or DEFAULT_ROOT)
    jobs: list[Job] = []
    for i, task in enumerate(tasks):
        source = tasks[(i + 1) % len(tasks)]
        for seed in seeds:
            phi = runs_dir / "gail" / f"bench-{source}" / "l2l-gail" / f"seed{seed}" / "phi_discriminator.pt"
            variant = Variant(V2_TRANSFER, {"method": "l2l-gail", "l2l_init": str(phi.resolve())})
            jobs += bench_jobs(args, [task], [variant], [seed])
    return jobs


def committed_in(path: Path) -> str:
    """The commit that added ``path``: the held-out runs start only once the selection is in
    the history, so the result can name the commit that fixed it."""
    path = path.resolve()
    try:
        sha = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", path.name], check=True,
                             capture_output=True, text=True, cwd=path.parent).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        sha = []
    if not sha:
        raise L2LError(f"{path} is not committed: commit the selection before any held-out run")
    return sha[-1]


def heldout_targets(summary: dict[str, Any], selected: dict[str, Any], commit: str,
                    rates: dict[str, dict[str, list[float]]], *, stopped: int = 0) -> dict[str, Any]:
    """Issue 13's targets on the held-out comparison ``summary`` for the selected configuration;
    ``rates[task]`` are env steps/s of ``gail`` and the selection measured side by side;
    ``stopped`` runs of the selection diverged and count as failed."""
    label, tasks = selected["label"], summary["tasks"]
    aggregate = summary["aggregate"]
    improvement = summary["prob_improvement"][f"{label}>gail"]
    ratio = {t: statistics.median(r[label]) / statistics.median(r["gail"]) for t, r in rates.items()}
    std = {t: tasks[t][label]["final_std"] / tasks[t]["gail"]["final_std"]
           if tasks[t]["gail"]["final_std"] > 0 else None for t in tasks}
    targets = {
        "aggregate_iqm_ge_gail": aggregate[label]["iqm"] >= aggregate["gail"]["iqm"],
        "aggregate_iqm_ge_gail_gp": aggregate[label]["iqm"] >= aggregate["gail-gp"]["iqm"],
        "prob_improvement": improvement["p"], "prob_improvement_ci": improvement["ci"],
        "std_ratio": std,
        "collapsed": sum(tasks[t][label]["collapsed"] for t in tasks),
        "failed": sum(tasks[t][label]["failed"] for t in tasks) + stopped,
        "throughput_ratio": min(ratio.values()), "throughput_ratio_by_task": ratio,
    }
    targets["met"] = {
        "aggregate_iqm": targets["aggregate_iqm_ge_gail"] and targets["aggregate_iqm_ge_gail_gp"],
        "prob_improvement": improvement["p"] >= 0.6,
        "std_ratio": all(r is not None and r <= 0.7 for r in std.values()),
        "stability": targets["collapsed"] == targets["failed"] == 0,
        "throughput": targets["throughput_ratio"] >= 0.85}
    return {"selected": {"label": label, "config": selected["options"], "commit": commit},
            "targets": targets}


def targets_markdown(record: dict[str, Any]) -> str:
    """The held-out targets as a table: each one's number and whether it is met."""
    t, met = record["targets"], record["targets"]["met"]
    std = ", ".join(f"{task} {r:.2f}" if r is not None else f"{task} -" for task, r in t["std_ratio"].items())
    speed = ", ".join(f"{task} {r:.2f}" for task, r in t["throughput_ratio_by_task"].items())
    ci = t["prob_improvement_ci"]
    rows = [("aggregate IQM >= gail's and gail-gp's", f"{t['aggregate_iqm_ge_gail']} / "
             f"{t['aggregate_iqm_ge_gail_gp']}", met["aggregate_iqm"]),
            ("P(X > gail) >= 0.6", f"{t['prob_improvement']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]",
             met["prob_improvement"]),
            ("final std <= 0.7x gail's on each task", std, met["std_ratio"]),
            ("0 collapsed, 0 failed", f"{t['collapsed']} collapsed, {t['failed']} failed", met["stability"]),
            ("env steps/s >= 0.85x gail's (side by side)", speed, met["throughput"])]
    selected = record["selected"]
    lines = [f"Targets of `{selected['label']}` (selected in commit {selected['commit'][:12]}):", "",
             "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in rows]
    return "\n".join(lines) + "\n"


def _read(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise L2LError(f"{path} is missing: run `scripts/bench_gail.py {stage}` first")
    return dict(json.loads(path.read_text()))


def candidate_options(label: str, budget: dict[str, Any]) -> dict[str, Any]:
    """The ``l2l gail train`` options of a v2 candidate, its constraint's budget filled in."""
    options: dict[str, Any] = {"method": "l2l-gail", **V2_CANDIDATES[label]}
    if "l2l_constraint" in options:
        options["l2l_budget"] = budget["budget"][options["l2l_constraint"]]
    return options


def v2_budget(runs_dir: Path, tasks: list[str], seeds: list[int]) -> dict[str, Any]:
    """The constraint budgets ``B``: the median over the benchmark's ``gail`` runs on ``tasks``
    of how far one Adam update moves the discriminator's outputs on generator samples over the
    last 20% of rounds (``disc/gen_kl_shift`` and ``disc/gen_logit_shift``). No L2L run enters."""
    shifts: dict[str, dict[str, float]] = {}
    for task in tasks:
        runs, _ = load_experiment(runs_dir / "gail" / f"bench-{task}", ["gail"])
        found = {r.seed: r for r in runs["gail"]}
        missing = sorted(set(seeds) - set(found))
        if missing:
            raise L2LError(f"B needs the tuned gail runs of {task}; seeds {', '.join(map(str, missing))} "
                           f"are not finished: run `scripts/bench_gail.py --tasks {task} --methods gail` "
                           "first")
        for seed in seeds:
            diagnostics = run_diagnostics(found[seed].path)["discriminator"]
            if not {"gen_kl_shift", "gen_logit_shift"} <= set(diagnostics):
                raise L2LError(f"{found[seed].path} logged no disc/gen_kl_shift: it predates the "
                               "diagnostic; re-run it in a new experiment")
            shifts[f"{task}/seed{seed}"] = {"kl": diagnostics["gen_kl_shift"],
                                            "logit": diagnostics["gen_logit_shift"]}
    return {"budget": {k: statistics.median(s[k] for s in shifts.values()) for k in ("kl", "logit")},
            "runs": shifts, "tasks": tasks, "seeds": seeds,
            "source": "median over the gail runs of the per-run mean over the last 20% of rounds"}


def select_v2(dev: dict[str, Any], candidates: list[str], budget: dict[str, Any]) -> dict[str, Any]:
    """results/gail/v2-plan.md's rule on the development comparison: of the candidates with no
    failed and no collapsed run on any task, the highest aggregate IQM; within ``V2_TIE`` of it,
    the smallest mean across-seed std of the final return; if none is stable, the highest IQM of
    all, and ``stability_met`` is false."""
    stopped = dev.get("stopped", {})
    candidates = [c for c in candidates if c not in stopped]  # no final: not stable, no IQM
    if not candidates:
        raise L2LError("every candidate has a run whose training diverged: nothing to select")
    rows = {}
    for label in candidates:
        per_task = [dev["tasks"][task][label] for task in dev["tasks"]]
        rows[label] = {"iqm": dev["aggregate"][label]["iqm"],
                       "failed": sum(t["failed"] for t in per_task),
                       "collapsed": sum(t["collapsed"] for t in per_task),
                       "mean_final_std": float(np.mean([t["final_std"] for t in per_task]))}
    stable = [c for c in candidates if rows[c]["failed"] == rows[c]["collapsed"] == 0]
    pool = stable or candidates
    best = max(rows[c]["iqm"] for c in pool)
    near = [c for c in pool if best - rows[c]["iqm"] <= V2_TIE]
    label = min(near, key=lambda c: rows[c]["mean_final_std"])
    tie = f", the smallest spread of the {len(near)} within {V2_TIE} of the best" if len(near) > 1 else ""
    reason = (f"aggregate IQM {rows[label]['iqm']:.3f}{tie}"
              + (f"; {len(stable)} of {len(candidates)} candidates had no failed or collapsed run"
                 if stable else "; no candidate was free of failed and collapsed runs: the stability "
                 "condition is not met")
              + (f"; left out, a run diverged: {', '.join(stopped)}" if stopped else ""))
    return {"label": label, "options": candidate_options(label, budget), "stability_met": bool(stable),
            "reason": reason, "candidates": rows, "stopped": stopped, "tasks": list(dev["tasks"]),
            "rule": "results/gail/v2-plan.md, selection rule"}


if __name__ == "__main__":
    sys.exit(main())
