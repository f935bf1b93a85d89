"""``l2l sweep MODE ...``: a grid of ``l2l MODE train`` runs, in parallel on a local Ray or a cluster.

:func:`add` fills the ``sweep`` parser and :func:`run` is its handler; the ``l2l``
command line only hooks them in, so that its start-up imports nothing of this (nor Ray).
"""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path

from l2l_gail.cli_support import add_runs_dir
from l2l_gail.errors import L2LError
from l2l_gail.sweep.engine import SweepResult, run_jobs
from l2l_gail.sweep.grid import MODES, Grid, Variant, load_file, parse_key_values, parse_seeds, parse_variant

DESCRIPTION = textwrap.fill(
    "Run every `l2l MODE train` command of a grid -- tasks x methods (or labelled variants) x seeds -- as "
    "Ray tasks: --jobs at a time on a private local Ray (no network, nothing left running), or on a "
    "cluster with --address. Each run writes the run directory its train command writes, "
    "RUNS_DIR/MODE/<experiment>/<label>/seed<k>/, with its output in seed<k>.log beside it. Finished "
    "runs are skipped once their command has checked the configuration (an edited grid fails them) and "
    "started ones resumed from their last checkpoint, so the same command "
    "continues a sweep; a run that crashes is retried from its last checkpoint (one that ends with an "
    "`error:` line is not: it would fail alike); Ctrl-C stops every run at its last checkpoint.", 100) + (
    "\n\n  l2l sweep gail --tasks hopper,walker2d --methods gail,gail-gp,l2l-gail --seeds 0-4 \\\n"
    "      --experiment bench-{task} --set timesteps=1000000\n"
    "  l2l sweep --file sweep.yaml --address auto")


def add(parser: argparse.ArgumentParser) -> None:
    """The description and options of ``l2l sweep``; :func:`run` handles them."""
    parser.description = DESCRIPTION
    parser.add_argument("grid_mode", nargs="?", choices=tuple(MODES), metavar="MODE",
                        help=f"the mode whose train command runs: {', '.join(MODES)} (or `mode:` in --file)")
    parser.add_argument("--file", type=Path, default=None,
                        help="YAML grid file with keys mode, tasks, methods, variants, seeds, options, "
                        "experiment; the options below replace its keys (default: none: the grid is given by "
                        "options)")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated tasks: gail's --task, vision's and meta's --dataset "
                        "(default: --file's tasks)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods (gail, vision), each a variant labelled by its name "
                        "(default: --file's methods)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
                        help="a labelled configuration: options of the train command, e.g. "
                        "'l2l-max1:method=l2l-gail,l2l-max-step=1' (repeatable; default: --file's variants)")
    parser.add_argument("--seeds", default=None, help="seeds, e.g. 0,1,2 or 0-4 (default: 0)")
    parser.add_argument("--experiment", default=None,
                        help="experiment directory, {task} filled in (default: {task})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_options",
                        help="an option of the train command for every run, e.g. timesteps=1000000, "
                        "ppo=n_epochs=5, second-order=true (repeatable; default: --file's options)")
    add_runs_dir(parser)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="runs at a time on the local machine, one CPU each (1: no Ray)")
    parser.add_argument("--address", default=None,
                        help="run on a Ray cluster instead: auto (the one `ray start` runs here), "
                        "HOST:PORT of its head, or ray://HOST:PORT (Ray Client); the run directories must "
                        "be on a file system every node shares (default: a private local Ray of --jobs CPUs)")
    parser.add_argument("--max-retries", type=int, default=2,
                        help="attempts after the first for a run that crashed (resumed from its checkpoint)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs and their commands, run nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def grid_from_args(args: argparse.Namespace) -> Grid:
    """The grid of ``--file`` with the options given on the command line in place of its keys."""
    file = load_file(args.file) if args.file is not None else {}
    mode = args.grid_mode or file.get("mode")
    if mode is None:
        raise L2LError("name the mode (l2l sweep gail ...) or give `mode:` in --file")
    if args.grid_mode and file.get("mode", mode) != mode:
        raise L2LError(f"the command says {args.grid_mode} but {args.file} says mode: {file['mode']}")
    tasks = [t for t in args.tasks.split(",") if t] if args.tasks else file.get("tasks")
    if not tasks:
        raise L2LError("give --tasks (or tasks: in --file)")
    methods = [m for m in args.methods.split(",") if m] if args.methods else file.get("methods", [])
    variants = [parse_variant(s) for s in args.variant] if args.variant else file.get("variants", [])
    variants = [Variant(m, {"method": m}) for m in methods] + variants
    if mode not in ("gail", "vision") and not variants:
        variants = [Variant("default")]
    options = {**file.get("options", {}), **parse_key_values(args.set_options, "--set")}
    return Grid(mode, tasks, variants, parse_seeds(args.seeds) if args.seeds else file.get("seeds", [0]),
                options, args.experiment or file.get("experiment", "{task}"))


def run(args: argparse.Namespace) -> int:
    """Run the sweep; exit status 0 if every run finished, 1 if one failed, 130 if interrupted."""
    from l2l_gail.runs import DEFAULT_ROOT

    if args.jobs < 1 or args.max_retries < 0:
        raise L2LError("--jobs must be >= 1 and --max-retries >= 0")
    grid = grid_from_args(args)
    jobs = grid.jobs(Path(args.runs_dir or DEFAULT_ROOT))
    if args.dry_run:
        for job in jobs:
            state = "finished" if job.finished() else "resume" if "--resume" in job.argv() else "new"
            print(f"{state:8s}  {job.shell()}")
        return 0
    where = f"the Ray cluster at {args.address}" if args.address else f"{args.jobs} local worker(s)"
    print(f"sweep: {len(jobs)} runs of `l2l {grid.mode} train` on {where}", flush=True)
    result = run_jobs(jobs, workers=args.jobs, address=args.address, max_retries=args.max_retries,
                      progress=not args.no_progress)
    report(result)
    if grid.mode == "gail" and not result.interrupted:
        for experiment in dict.fromkeys(job.run_dir.parents[1] for job in jobs):
            print(f"compare: l2l gail compare {experiment}")
    return 130 if result.interrupted else 0 if result.ok else 1


def report(result: SweepResult) -> None:
    """One summary line, then every run that did not finish with its error and log."""
    seconds = f"{result.run_seconds:.0f} s" + (f" (+ {result.startup_seconds:.1f} s Ray start-up)"
                                                 if result.startup_seconds else "")
    print(f"sweep: {result.count('done')} done, {result.count('skipped')} finished before, "
          f"{result.count('failed')} failed, {result.count('interrupted')} interrupted; {seconds}")
    for job, outcome in result.outcomes.items():
        if outcome.status == "failed":
            print(f"failed: {job.name}: {outcome.error} (log: {job.log_path})")
    if result.interrupted:
        print("interrupted: the stopped runs keep their last checkpoint; the same command continues them")
