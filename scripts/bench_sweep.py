#!/usr/bin/env python
"""Benchmark: the sweep runner's speed-up, N identical GAIL runs on W local Ray workers vs one by one.

Each repeat trains ``--runs`` identical short runs (``l2l gail train``, one task, method and seed,
in as many experiments) twice: one by one (``--jobs 1``: the same child processes, no Ray) and on
a fresh local Ray with ``--workers`` workers. Wall times run from the first submission to the
last result; Ray's start-up (``ray.init``) is timed separately, since a long sweep pays it once.
The two orders alternate between repeats so that a drift in the machine's load does not favour
one; the medians over ``--repeats`` go to ``results/sweep/speedup.{json,md}``. Measure on an
otherwise idle machine: other jobs take cores from the parallel runs, not from the sequential one.

    python scripts/bench_sweep.py                                    # 4 x ~60 s hopper runs, 3 repeats
    python scripts/bench_sweep.py --timesteps 4096 --repeats 1 --output /tmp/speedup.json   # smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from l2l_gail.errors import L2LError, exit_status
from l2l_gail.runs import atomic_write_text, write_json
from l2l_gail.sweep import Grid, Variant, run_jobs
from l2l_gail.sweep.engine import RayPool, SerialPool


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="hopper", help="GAIL task (default: hopper)")
    p.add_argument("--method", default="gail", help="GAIL method (default: gail)")
    p.add_argument("--timesteps", type=int, default=204_800,
                   help="environment steps of each run: 100 rounds of hopper's 8 x 256 (default 204800)")
    p.add_argument("--runs", type=int, default=4, help="identical runs (default 4)")
    p.add_argument("--workers", type=int, default=2, help="local Ray workers (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of both measurements (median; default 3)")
    p.add_argument("--output", type=Path, default=Path("results/sweep/speedup.json"))
    p.add_argument("--force", action="store_true", help="overwrite existing results")
    args = p.parse_args(argv)
    return exit_status(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    targets = (args.output, args.output.with_suffix(".md"))
    if any(t.exists() for t in targets) and not args.force:
        raise L2LError(f"{args.output} exists: pass --force to overwrite it")
    if min(args.runs, args.workers, args.repeats) < 1:
        raise L2LError("--runs, --workers and --repeats must be >= 1")
    keys = ("sequential_s", "parallel_s", "ray_startup_s", "run_alone_s")
    times: dict[str, list[float]] = {k: [] for k in keys}
    for repeat in range(args.repeats):
        for parallel in (False, True) if repeat % 2 == 0 else (True, False):
            with tempfile.TemporaryDirectory(prefix="l2l-bench-sweep-") as runs_dir:
                seconds, startup, alone = measure(args, Path(runs_dir), parallel)
            times["parallel_s" if parallel else "sequential_s"].append(seconds)
            if parallel:
                times["ray_startup_s"].append(startup)
            else:
                times["run_alone_s"] += alone
            print(f"repeat {repeat + 1}/{args.repeats}: {'parallel' if parallel else 'sequential'} "
                  f"{seconds:.1f} s" + (f" (+ {startup:.1f} s Ray start-up)" if parallel else ""), flush=True)
    write(args, times)
    return 0


def measure(args: argparse.Namespace, runs_dir: Path, parallel: bool) -> tuple[float, float, list[float]]:
    """Wall seconds of the runs, Ray's start-up seconds, and each run's own seconds."""
    variant = Variant(args.method, {"method": args.method})
    jobs = [job for i in range(args.runs)  # the same run, in experiments run0-<task>, run1-<task>, ...
            for job in Grid("gail", [args.task], [variant], [0], {"timesteps": args.timesteps},
                            experiment=f"run{i}-{{task}}").jobs(runs_dir)]
    pool = RayPool(args.workers) if parallel else SerialPool()
    try:
        result = run_jobs(jobs, pool=pool, max_retries=0, progress=False)
    finally:
        pool.close()
    if not result.ok:
        job = next(iter(result.failed), jobs[0])
        raise L2LError(f"run {job.name} did not finish: {result.outcomes[job].error} (log: {job.log_path})")
    return result.run_seconds, pool.startup_seconds, [o.seconds for o in result.outcomes.values()]


def write(args: argparse.Namespace, times: dict[str, list[float]]) -> None:
    """``speedup.json`` (the issue's keys first, then every measurement) and its table."""
    median = {k: statistics.median(v) for k, v in times.items()}
    speedup = median["sequential_s"] / median["parallel_s"]
    with_startup = median["sequential_s"] / (median["parallel_s"] + median["ray_startup_s"])
    result = {"workers": args.workers, "runs": args.runs, "sequential_s": median["sequential_s"],
              "parallel_s": median["parallel_s"], "ray_startup_s": median["ray_startup_s"],
              "speedup": speedup, "speedup_with_startup": with_startup, "run_alone_s": median["run_alone_s"],
              "task": args.task, "method": args.method, "timesteps": args.timesteps, "repeats": times,
              "cpus": os.cpu_count(), "command": " ".join(["python", *sys.argv])}
    write_json(args.output, result)
    lines = [f"{args.runs} identical `l2l gail train --task {args.task} --method {args.method} --timesteps "
             f"{args.timesteps}` runs (median {median['run_alone_s']:.0f} s each alone), one by one and on "
             f"{args.workers} local Ray workers; median of {args.repeats} repeats on {os.cpu_count()} CPUs.",
             "",
             "| | wall s (median) | all repeats |", "|---|---:|---|"]
    for key, label in (("sequential_s", "one by one"), ("parallel_s", f"{args.workers} workers"),
                       ("ray_startup_s", "Ray start-up (once per sweep)")):
        lines.append(f"| {label} | {median[key]:.1f} | {', '.join(f'{t:.1f}' for t in times[key])} |")
    lines += ["", f"Speed-up {speedup:.2f}x ({with_startup:.2f}x counting Ray's start-up); "
              f"the limit is {min(args.workers, args.runs):.0f}x."]
    atomic_write_text(args.output.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
