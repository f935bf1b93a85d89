#!/usr/bin/env python
"""Benchmark: TD3 env steps/s on this CPU for several batch sizes, measured side by side.

Why walker2d and ant train their experts with batch 100 (Fujimoto et al. 2018's original TD3
setting) rather than 256: on a CPU the TD3 update is compute-bound, so the batch size sets the
training speed. Every configuration is built on the task's own spec (envs/<task>.yaml) with only
the batch size changed, warmed up past ``learning_starts``, and then trained in chunks in turn
(round-robin, one torch thread), so all of them see the same machine load; the result is the
median steps/s over the repeats and its ratio to the first batch size. Writes
``results/experts/<task>-td3-batch.{json,md}``.

    .venv/bin/python scripts/bench_td3_batch.py --task walker2d --batch-sizes 256,100
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from l2l_gail.errors import L2LError, exit_status
from l2l_gail.gail.expert import build_expert, set_threads
from l2l_gail.gail.tasks import load_task
from l2l_gail.runs import atomic_write_text, write_json

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results" / "experts"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="walker2d", help="task name (a file envs/<task>.yaml)")
    parser.add_argument("--batch-sizes", default="256,100", help="comma-separated; ratios are to the first")
    parser.add_argument("--warmup", type=int, default=1000, help="random steps before updates start")
    parser.add_argument("--chunk", type=int, default=500, help="env steps per timed chunk")
    parser.add_argument("--repeats", type=int, default=5, help="round-robin repeats (median)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="where the results go")
    parser.add_argument("--force", action="store_true", help="overwrite existing results")
    args = parser.parse_args(argv)
    return exit_status(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    task = load_task(args.task)
    if task.expert["algo"] != "td3":
        raise L2LError(f"{task.path}: the expert is {task.expert['algo']}, not td3")
    out = args.output_dir / f"{task.name}-td3-batch.json"
    if (out.exists() or out.with_suffix(".md").exists()) and not args.force:
        raise L2LError(f"{out} exists: pass --force to overwrite it")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    set_threads(1)
    models = {}
    for batch in batches:
        hp = {**task.expert["hyperparams"], "batch_size": batch, "learning_starts": args.warmup}
        spec = dataclasses.replace(task, expert={**task.expert, "hyperparams": hp})
        models[batch] = build_expert(spec, task.make_env(), seed=0, tb_dir=None)
        models[batch].learn(args.warmup + args.chunk)  # past learning_starts: updates run
    rates: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(args.repeats):
        for batch, model in models.items():
            start = time.perf_counter()
            model.learn(args.chunk, reset_num_timesteps=False)
            rates[batch].append(args.chunk / (time.perf_counter() - start))
    base = statistics.median(rates[batches[0]])
    result = {"task": task.name, "env_id": task.env_id, "chunk": args.chunk, "repeats": args.repeats,
              "steps_per_s": {str(b): r for b, r in rates.items()},
              "median": {str(b): statistics.median(r) for b, r in rates.items()}}
    lines = [f"TD3 on {task.env_id}, one torch thread, {args.repeats} round-robin repeats of "
             f"{args.chunk} env steps; networks and other settings from envs/{task.name}.yaml.", "",
             "| batch size | env steps/s (median) | vs batch " f"{batches[0]} |", "|---:|---:|---:|"]
    for batch in batches:
        median = statistics.median(rates[batch])
        lines.append(f"| {batch} | {median:.0f} | {median / base:.2f}x |")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
