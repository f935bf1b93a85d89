#!/usr/bin/env python
"""Report: how each expert was trained (its evaluation curve) and what the shipped data holds.

Reads ``RUNS_DIR/expert/<task>/`` (written by ``l2l expert train``: ``config.yaml`` and
``checkpoints/history.json``, one entry per evaluation of 20 deterministic episodes) and
``expert_data/MANIFEST.json``, and writes ``results/experts/experts.{json,md}``: per task the
algorithm, the steps at which the evaluated return first reached the task's threshold, the best
evaluation, the wall time and env steps/s of the training (from the evaluations' timestamps, so
the first evaluation interval is not counted), and the 50-episode return of the shipped
demonstrations beside the published references of the issue. Tasks whose run directory is
absent (trained in an earlier session) keep their manifest numbers only.

    .venv/bin/python scripts/report_experts.py --runs-dir /work/l2l_runs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from l2l_gail.errors import L2LError
from l2l_gail.gail import demos, expert_data
from l2l_gail.gail.tasks import load_task, task_names
from l2l_gail.runs import DEFAULT_ROOT, atomic_write_text, write_json

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results" / "experts"
# Published experts the issue compares against (mean return).
REFERENCES = {
    "inverted-pendulum": "max 1000",
    "hopper": "D4RL expert 3234; SB3 zoo TD3 3606",
    "halfcheetah": "SB3 zoo SAC 9535; D4RL 12135",
    "walker2d": "SB3 zoo SAC 3863; D4RL 4592",
    "ant": "SB3 zoo SAC 4616; D4RL 3880",
}


def training_summary(run_dir: Path, threshold: float) -> dict[str, Any] | None:
    """Evaluation curve and speed of one expert run, or None if the run has no history."""
    history_file = run_dir / "checkpoints" / "history.json"
    if not history_file.is_file():
        return None
    try:
        history = json.loads(history_file.read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise L2LError(f"cannot read the expert run {run_dir}: {exc}") from exc
    if not history:
        return None
    reached = next((h["timesteps"] for h in history if h["mean_return"] >= threshold), None)
    best = max(history, key=lambda h: h["mean_return"])
    first, last = history[0], history[-1]
    seconds = last["unix_time"] - first["unix_time"]
    steps = last["timesteps"] - first["timesteps"]
    return {
        "algo": config["expert"]["algo"],
        "hyperparams": config["expert"]["hyperparams"],
        "seed": config.get("seed"),
        "steps_to_threshold": reached,
        "best_eval_return": best["mean_return"],
        "best_eval_timesteps": best["timesteps"],
        "last_timesteps": last["timesteps"],
        "wall_hours": (seconds / 3600) if seconds > 0 else None,
        "env_steps_per_s": (steps / seconds) if seconds > 0 else None,
        "curve": [(h["timesteps"], h["mean_return"]) for h in history],
    }


def report(runs_dir: Path, data_dir: Path = demos.EXPERT_DATA_DIR) -> dict[str, Any]:
    """One entry per task: its threshold, the shipped data's numbers and its training run's."""
    shipped = demos.read_manifest(data_dir)["tasks"]
    tasks: dict[str, Any] = {}
    for name in task_names():
        task = load_task(name)
        threshold = float(task.expert["threshold"])
        entry = shipped.get(name, {})
        tasks[name] = {
            "env_id": task.env_id, "threshold": threshold, "random_return": task.random_return,
            "reference": REFERENCES.get(name, ""),
            "shipped": {k: entry[k] for k in ("episodes", "mean_return", "std_return",
                                              "expert_algo", "expert_timesteps") if k in entry},
            "training": training_summary(runs_dir / "expert" / name, threshold),
        }
    return {"runs_dir": str(runs_dir), "tasks": tasks}


def markdown(result: dict[str, Any]) -> str:
    """The README table: shipped return against threshold and references, and training cost."""
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = ["| task | expert | shipped return (50 ep.) | threshold | reference | steps to threshold "
             "| best eval | wall h | env steps/s |", "|---|---|---|---:|---|---:|---:|---:|---:|"]
    for name, t in result["tasks"].items():
        s, tr = t["shipped"], t["training"] or {}
        expert = expert_data.expert_label(s) if "expert_algo" in s else "not shipped"
        ret = f"{s['mean_return']:.1f} +- {s['std_return']:.1f}" if "mean_return" in s else "-"
        lines.append(f"| {name} | {expert} | {ret} | {t['threshold']:.0f} | {t['reference']} "
                     f"| {num(tr.get('steps_to_threshold'), ',')} | {num(tr.get('best_eval_return'), '.0f')} "
                     f"| {num(tr.get('wall_hours'), '.2f')} | {num(tr.get('env_steps_per_s'), '.0f')} |")
    lines.append("")
    lines.append("Training columns are empty for experts trained in an earlier session (their run "
                 "directories are not kept); 'best eval' is the mean of 20 deterministic episodes.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="root of the run directories (default: $L2L_RUNS or ./runs)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR,
                        help="where experts.json and experts.md go")
    parser.add_argument("--force", action="store_true", help="overwrite existing results")
    args = parser.parse_args(argv)
    try:
        json_path, md_path = args.output_dir / "experts.json", args.output_dir / "experts.md"
        existing = [p for p in (json_path, md_path) if p.exists()]
        if existing and not args.force:
            raise L2LError(f"{existing[0]} exists: pass --force to overwrite it")
        result = report(Path(args.runs_dir or DEFAULT_ROOT))
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(json_path, result)
        atomic_write_text(md_path, markdown(result))
    except L2LError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(md_path.read_text(), end="")
    print(f"results: {json_path}\ntable:   {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
