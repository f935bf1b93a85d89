#!/usr/bin/env python
"""Benchmark: gail, gail-gp and l2l-gail on the MuJoCo locomotion tasks, 5 seeds x 1M steps.

For every task whose demonstrations are shipped (hopper, walker2d, halfcheetah by default),
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
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import typing
from pathlib import Path
from typing import Any

from l2l_gail.errors import L2LError, exit_status
from l2l_gail.gail import demos
from l2l_gail.gail.compare import RESULTS_DIR, compare, output_paths
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.expert import set_threads
from l2l_gail.gail.factory import Prepared, build, prepare
from l2l_gail.gail.loop import start_segment, train_round
from l2l_gail.runs import DEFAULT_ROOT, atomic_write_text, write_json
from l2l_gail.sweep import Grid, Variant, run_jobs
from l2l_gail.sweep.cli import report

TASKS = ("hopper", "walker2d", "halfcheetah")
METHODS = ("gail", "gail-gp", "l2l-gail")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="comma-separated tasks; those without shipped demonstrations are skipped")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods (empty: only the --variant runs)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
                        help="an extra configuration run beside the methods, named LABEL, e.g. "
                             "'l2l-maxstep1:method=l2l-gail,l2l_max_step=1' (GAILConfig fields; repeatable)")
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
    parser.add_argument("--repeats", type=int, default=5, help="--throughput: round-robin repeats (median)")
    parser.add_argument("--rounds", type=int, default=8, help="--throughput: GAIL rounds per measurement")
    args = parser.parse_args(argv)
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
            fields[key] = kind(raw) if kind in (int, float) else raw
        except ValueError:
            raise L2LError(f"bad --variant value {raw!r} for {key}: expected {kind.__name__}") from None
    if not label or "method" not in fields:
        raise L2LError(f"--variant {spec!r} needs a label and a method, e.g. 'l2l-x:method=l2l-gail,...'")
    return label, fields


def run(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    if not methods and not args.variant:
        raise L2LError("nothing to run: give --methods or at least one --variant")
    shipped = demos.read_manifest()["tasks"]
    tasks = [t for t in args.tasks.split(",") if t in shipped]
    for task in sorted(set(args.tasks.split(",")) - set(tasks)):
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
        prepared = {v.label: prepare(GAILConfig(
            task=task, timesteps=args.timesteps, eval_every=args.eval_every, seed=seeds[0],
            label=None if v.label in methods else v.label, **v.options)) for v in variants}
        plans.append((task, output, prepared))
    if args.throughput:
        for task, output, prepared in plans:
            write_throughput(output, task, throughput(prepared, args.repeats, args.rounds))
        return 0
    grid = Grid("gail", tasks, variants, seeds, {"timesteps": args.timesteps, "eval-every": args.eval_every,
                                                 "threads": args.threads}, experiment="bench-{task}")
    runs_dir = Path(args.runs_dir or DEFAULT_ROOT)
    result = run_jobs(grid.jobs(runs_dir), workers=args.jobs, address=args.address,
                      max_retries=args.max_retries, progress=not args.no_progress)
    report(result)
    unfinished = {job.run_dir.parents[1].name for job, o in result.outcomes.items()
                  if o.status not in ("done", "skipped")}
    for task, output, _ in plans:
        if f"bench-{task}" in unfinished:
            print(f"{task}: not compared: some of its runs did not finish")
            continue
        out = compare(runs_dir / "gail" / f"bench-{task}", output, force=args.force)
        print(out.markdown.read_text(), end="")
        print(f"results: {out.json}\ntable:   {out.markdown}\nplot:    {out.plot}")
    return 130 if result.interrupted else 0 if result.ok else 1


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


if __name__ == "__main__":
    sys.exit(main())
