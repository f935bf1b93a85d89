#!/usr/bin/env python
"""Benchmark: gail, gail-gp and l2l-gail on the MuJoCo locomotion tasks, 5 seeds x 1M steps.

For every task whose demonstrations are shipped (hopper, and walker2d / halfcheetah once their
experts are collected), trains every method for every seed under
``runs/gail/bench-<task>/<method>/seed<k>/``, interleaved by seed so that partial results
already compare the methods, then writes ``results/gail/<task>.{json,md,png}`` with
``l2l gail compare``. Long (CPU days for all of it): run it in the background. Finished runs
are skipped and unfinished ones resumed from their last checkpoint, so re-running the same
command continues where it stopped; throughput (env steps/s) is measured within each run, so
the methods' speeds are compared on the same machine and session mix.

    nohup .venv/bin/python scripts/bench_gail.py > bench_gail.log 2>&1 &
    .venv/bin/python scripts/bench_gail.py --tasks inverted-pendulum --seeds 0,1 --timesteps 4096  # smoke
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from l2l_gail.errors import L2LError
from l2l_gail.gail import demos
from l2l_gail.gail.compare import RESULTS_DIR, compare, output_paths
from l2l_gail.gail.expert import set_threads
from l2l_gail.gail.train import GAILConfig, prepare, train_seeds
from l2l_gail.runs import DEFAULT_ROOT

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
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except L2LError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``'LABEL:key=value,key=value'`` -> (LABEL, typed GAILConfig fields)."""
    label, _, body = spec.partition(":")
    hints = typing.get_type_hints(GAILConfig)
    fields: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in hints or key in ("task", "label", "ppo"):
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
    # Every configuration and output is checked before the first (long) run starts.
    plans = []
    for task in tasks:
        output = args.output_dir / f"{task}.json"
        existing = [p for p in output_paths(output) if p.exists()]
        if existing and not args.force:
            raise L2LError(f"{existing[0]} exists: pass --force to overwrite the {task} results")
        prepared = {m: prepare(GAILConfig(task=task, method=m, timesteps=args.timesteps,
                                          eval_every=args.eval_every)) for m in methods}
        for spec in args.variant:
            label, fields = parse_variant(spec)
            prepared[label] = prepare(GAILConfig(task=task, timesteps=args.timesteps,
                                                 eval_every=args.eval_every, label=label, **fields))
        plans.append((task, output, prepared))
    for task, output, prepared in plans:
        experiment = f"bench-{task}"
        for seed in seeds:
            for method in prepared:
                train_seeds(prepared[method], [seed], experiment, runs_dir=args.runs_dir, resume="auto",
                            progress=not args.no_progress, echo=lambda line: print(line, flush=True))
        out = compare(Path(args.runs_dir or DEFAULT_ROOT) / "gail" / experiment, output, force=args.force)
        print(out.markdown.read_text(), end="")
        print(f"results: {out.json}\ntable:   {out.markdown}\nplot:    {out.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
