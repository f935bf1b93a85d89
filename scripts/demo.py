"""`make demo`: GAIL against L2L-GAIL on HalfCheetah, 3 seeds each, two runs at a time.

What it shows. Both methods imitate the shipped HalfCheetah demonstrations with the settings of
the earlier benchmark (``SETTINGS``): `gail` steps its discriminator with Adam, `l2l-gail` with the
learned optimizer trained online on held-out discriminator loss. The demo trains 3 seeds of each
for 700k environment steps, compares them with `l2l gail compare` (table, plot, discriminator
diagnostics in the experiment's directory) and prints a conclusion computed from those numbers:
which method ends higher and by how much, whether the seeds and the bootstrap intervals
separate, and what the two discriminators do.

Why this task and budget. On InvertedPendulum (the previous demo) both methods reach the expert
within 30k steps, so nothing separates them. On hopper the methods tie at 1M steps and their
curves cross before that. HalfCheetah is where the 1M-step benchmark found a clear difference
(results/gail/halfcheetah.md) and where, on its plot, the curves part well before 1M steps, so
that by 700k `gail` has visibly learned and a gap, if there is one, shows in a few seeds. It is
also the cheapest of the locomotion tasks to train (about twice hopper's and walker2d's env steps
per second in those benchmarks), which is what lets six runs of 700k steps fit in ten minutes on
two free cores (the measured time is in results/gail/halfcheetah-demo.md). `gail-gp` is left
out: it ends close to `gail` on this task, and a third method would not fit. A ten-minute demo
is not a benchmark (3 seeds, 70% of the benchmark's steps); the printed conclusion says so.

Reruns. The experiment name is fixed by the configuration (`demo-halfcheetah-700k`) and every run
is resumed rather than refused: an interrupted demo (Ctrl-C) continues from its last checkpoints,
and a finished one prints its comparison again in seconds. Retraining on the same machine would
only repeat the numbers (the runs are seeded, and a resumed run equals an uninterrupted one). To
train anew pass another `--experiment` or delete the directory. The runs are trained by `--jobs`
worker processes (default: 2, or fewer if fewer cores are available), one torch thread each.

    .venv/bin/python scripts/demo.py [--task halfcheetah] [--seeds 0,1,2] [--timesteps 700000] \
        [--jobs 2] [--experiment NAME] [--runs-dir runs]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

from l2l_gail.errors import L2LError
from l2l_gail.gail.compare import compare
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.expert import set_threads
from l2l_gail.gail.factory import Prepared, prepare
from l2l_gail.gail.train import run_path, train_seeds
from l2l_gail.runs import DEFAULT_ROOT, tensorboard_command

METHODS = ("gail", "l2l-gail")
PROGRESS_EVERY = 60.0  # seconds between progress lines
SETTINGS: dict[str, Any] = {
    "demo_episodes": 25, "demo_batch_size": 1024, "gen_replay_buffer_capacity": 16384,
    "n_disc_updates_per_round": 4, "disc_lr": 3e-4, "obs_norm": False, "fixed_horizon": False,
    "demos": "deterministic", "eval_envs": 1,
    "ppo": {"n_steps": 256, "batch_size": 256, "n_epochs": 5, "gamma": 0.995, "gae_lambda": 0.98,
            "learning_rate": 2.5e-4, "clip_range": 0.1, "ent_coef": 0.001, "vf_coef": 0.2,
            "max_grad_norm": 0.9, "net_arch": [64, 64]},
}
"""The GAIL settings the demo trains with, on every task: those of the earlier benchmark
(results/gail/halfcheetah.md), which the demo's measured time and numbers come from. The task files
now add observation normalisation, stochastic demonstrations and a one-rollout replay buffer
(chosen on hopper, scripts/grids/gail-harness-hopper.yaml); the demo keeps the configuration it
was measured with, so its numbers stay comparable and an earlier demo's runs still resume."""


def train_one(task: str, method: str, seed: int, timesteps: int, experiment: str,
              runs_dir: Path | None) -> None:
    """One (method, seed) run in a worker process: started, resumed or, if finished, skipped."""
    set_threads(1)
    prepared = prepare(GAILConfig(task=task, method=method, timesteps=timesteps, **SETTINGS))
    train_seeds(prepared, [seed], experiment, runs_dir=runs_dir, resume="auto", progress=False, echo=_echo)


def _echo(line: str) -> None:
    # train_seeds ends with a bare `tensorboard` command that a plain shell may not find; the
    # demo prints one that works instead.
    if not line.startswith("tensorboard "):
        print(line, flush=True)


def _init_worker() -> None:
    # Ctrl-C goes to the parent alone, which stops the workers with SIGTERM; turning that into
    # SystemExit unwinds the run (an interrupted checkpoint write removes its temporary file) and
    # lets the worker's own exit handlers release what it holds (tqdm's named semaphore).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def latest_return(run_dir: Path) -> tuple[int, float] | None:
    """The newest ``eval/normalized_return`` (step, value) of a run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run_dir / "tb").is_dir():
        return None
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    if "eval/normalized_return" not in events.Tags()["scalars"]:
        return None
    last = events.Scalars("eval/normalized_return")[-1]
    return last.step, last.value


def progress_line(runs: dict[str, Path], started: float) -> str:
    """Runs finished so far and the newest evaluation of each run under way."""
    done = sum((run_dir / "metrics.json").is_file() for run_dir in runs.values())
    cells = [f"{name} {latest[1]:.2f} @ {latest[0] // 1000}k" for name, run_dir in runs.items()
             if not (run_dir / "metrics.json").is_file() and (latest := latest_return(run_dir)) is not None]
    return (f"[{(time.time() - started) / 60:4.1f} min] {done}/{len(runs)} runs done; normalised return "
            f"so far: {' | '.join(cells) or '-'}")


def _values(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in sorted(xs))


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _compared(x: float, y: float, fmt: str, more: str, less: str, same: str) -> tuple[str, str]:
    """``(more, "than")`` or ``(less, "than")`` for x against y, ``(same, "as")`` when they print
    the same at ``fmt``."""
    if format(x, fmt) == format(y, fmt):
        return same, "as"
    return (more, "than") if x > y else (less, "than")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when under it (shorter to read and to paste)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def conclusion(summary: dict[str, Any], full_budget: int, benchmark: Path) -> list[str]:
    """What the comparison says, in a few sentences computed from ``summary`` (compare's JSON)."""
    (methods,) = summary["tasks"].values()
    a, b = sorted(METHODS, key=lambda m: methods[m]["iqm"], reverse=True)
    hi, lo = methods[a], methods[b]
    finals = {m: methods[m]["finals"] for m in METHODS}
    counts = {methods[m]["n_runs"] for m in METHODS}
    seeds = (f"{_seeds(counts.pop())} each" if len(counts) == 1
             else f"{hi['n_runs']} and {_seeds(lo['n_runs'])}")
    gap = hi["iqm"] - lo["iqm"]
    lead = f"{a} ends higher" if f"{gap:.2f}" != "0.00" else f"{a} and {b} end level"
    lines = [f"{lead}: final normalised return {hi['iqm']:.2f} for {a} against {lo['iqm']:.2f} "
             f"for {b}, a difference of {gap:.2f} (IQM over {seeds}; a run's final is its mean over the "
             "last 20% of evaluations; 0 = random policy, 1 = expert)."]
    (hl, hh), (ll, lh) = hi["ci"], lo["ci"]
    intervals = f"95% bootstrap intervals [{hl:.2f}, {hh:.2f}] and [{ll:.2f}, {lh:.2f}]"
    if min(hi["n_runs"], lo["n_runs"]) < 2:
        lines.append("With a single seed of a method the spread over seeds is unknown, so this cannot tell "
                     "a difference between the methods from one between seeds.")
    elif min(finals[a]) > max(finals[b]) and hl > lh:
        lines.append(f"Every {a} seed ends above every {b} seed ({_values(finals[a])} vs "
                     f"{_values(finals[b])}) and the {intervals} do not overlap.")
    else:
        lines.append(f"The seeds do not separate ({a}: {_values(finals[a])}; {b}: {_values(finals[b])}; "
                     f"{intervals}): at this budget the difference is within the spread over seeds.")
    disc = {m: methods[m].get("discriminator_median", {}) for m in METHODS}
    if all({"logit_gen", "reward_mean"} <= d.keys() for d in disc.values()):
        g, l2l = disc["gail"], disc["l2l-gail"]
        # A more negative logit on generator samples is a surer "fake".
        sure, than = _compared(-l2l["logit_gen"], -g["logit_gen"], ".1f", "more", "less", "about as")
        pays, than2 = _compared(l2l["reward_mean"], g["reward_mean"], ".3f", "more", "less", "about as much")
        lines.append(f"Over the last 20% of rounds the learned optimizer's discriminator is {sure} sure that "
                     f"generator samples are fake {than} Adam's (mean logit {l2l['logit_gen']:.1f} vs "
                     f"{g['logit_gen']:.1f}) and pays the generator {pays} reward {than2} Adam's "
                     f"({l2l['reward_mean']:.3f} vs {g['reward_mean']:.3f}).")
    bench = f"; the benchmark is in {_shown(benchmark)}" if benchmark.is_file() else ""
    lines.append(f"A ten-minute demo is not a benchmark: {summary['budget_steps']:,} of the task file's "
                 f"{full_budget:,} steps and {seeds}{bench}.")
    return lines


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, as on Linux)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_minutes() -> float:
    """CPU time of this process and of its finished children (the workers), in minutes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime) / 60


def run_all(prepared: dict[str, Prepared], seeds: list[int], experiment: str, args: argparse.Namespace,
            started: float) -> None:
    """Train every (method, seed) on ``args.jobs`` processes, printing progress every minute."""
    jobs = [(m, s) for s in seeds for m in METHODS]  # interleaved: partial results compare both
    runs = {f"{m} s{s}": run_path(experiment, prepared[m].config.run_method, s, args.runs_dir)
            for m, s in jobs}
    pool = multiprocessing.get_context("spawn").Pool(args.jobs, initializer=_init_worker)
    try:
        pending = [pool.apply_async(train_one, (args.task, m, s, args.timesteps, experiment, args.runs_dir))
                   for m, s in jobs]
        last = time.time()
        while not all(r.ready() for r in pending):
            time.sleep(1.0)
            for r in pending:
                if r.ready():
                    r.get()  # a failed run stops the demo now, not after the others
            if time.time() - last >= PROGRESS_EVERY:
                print(progress_line(runs, started), flush=True)
                last = time.time()
    except BaseException:  # a failed run or Ctrl-C: the runs keep their last good checkpoints
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--task", default="halfcheetah", help="task (a file envs/<task>.yaml)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run per method each")
    parser.add_argument("--timesteps", type=int, default=700_000, help="environment steps per run")
    parser.add_argument("--jobs", type=int, default=min(2, available_cores()),
                        help="runs trained at the same time (one process and one torch thread each)")
    parser.add_argument("--experiment", default=None,
                        help="experiment name (default: demo-<task>-<timesteps/1000>k, e.g. "
                             "demo-halfcheetah-700k); an existing one is resumed")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="root of the run directories (default: $L2L_RUNS or ./runs)")
    args = parser.parse_args(argv)
    started = time.time()
    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # resumed runs purge events: expected
    try:
        seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        seeds = []
    try:
        if not seeds:
            raise L2LError(f"--seeds must be comma-separated integers such as 0,1,2, got {args.seeds!r}")
        if args.jobs < 1:
            raise L2LError(f"--jobs must be at least 1, got {args.jobs}")
        # Every configuration error surfaces here, before any worker starts.
        prepared = {m: prepare(GAILConfig(task=args.task, method=m, timesteps=args.timesteps, **SETTINGS))
                    for m in METHODS}
        budget = f"{args.timesteps // 1000}k" if args.timesteps % 1000 == 0 else str(args.timesteps)
        experiment = args.experiment or f"demo-{args.task}-{budget}"
        root = Path(args.runs_dir or DEFAULT_ROOT) / "gail" / experiment
        tensorboard = tensorboard_command(root)
        print(f"GAIL vs L2L-GAIL on {args.task}: {_seeds(len(seeds))} x {args.timesteps:,} steps per method, "
              f"{args.jobs} at a time, in {root}\nwatch the curves live: {tensorboard}", flush=True)
        run_all(prepared, seeds, experiment, args, started)
        # The demo's own comparison, recomputed from its runs: rewriting it loses nothing.
        out = compare(root, force=True, methods=METHODS)
    except L2LError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the runs keep their last checkpoints; run the same command again to "
              "continue them", file=sys.stderr)
        return 130
    print()
    print(out.markdown.read_text(), end="")
    full_budget = int(prepared["gail"].task.gail["timesteps"])
    benchmark = Path(__file__).resolve().parents[1] / "results" / "gail" / f"{args.task}.md"
    print("\nWhat the numbers say:")
    for line in conclusion(out.summary, full_budget, benchmark):
        print(f"- {line}")
    print(f"\nresults: {out.json}\ntable:   {out.markdown}\nplot:    {out.plot}\ncurves:  {tensorboard}")
    print(f"demo finished in {(time.time() - started) / 60:.1f} min wall, {cpu_minutes():.1f} CPU-min "
          f"(all processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
