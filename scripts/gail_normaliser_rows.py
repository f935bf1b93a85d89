#!/usr/bin/env python
"""Diagnostic: which rows update the generator's running observation statistics (``--obs-norm``).

With ``--obs-norm`` the generator's policy normalises its observations with imitation's
``RunningNorm`` inside ``NormalizeFeaturesExtractor``, which updates its statistics on every
forward pass made in training mode. Stable-baselines3 leaves the policy in training mode after
PPO's update, and imitation's ``_make_disc_train_batches`` evaluates the policy's log-probability
of every discriminator batch (``_get_log_policy_act_prob``; GAIL's discriminator never reads it).
So every discriminator batch -- half of it expert rows -- also enters the generator's statistics,
and a method that builds more batches per round (the L2L trainer's held-out batches) feeds it a
larger share of expert observations than ``gail`` does.

This script counts, for each method, the rows that enter the statistics in one GAIL round after
two warm-up rounds: in all, in the discriminator's training (``train_disc``), and the expert
share (half of every discriminator batch). It writes ``<output>.json`` and ``<output>.md``.

    .venv/bin/python scripts/gail_normaliser_rows.py     # hopper: gail, l2l-gail, l2l-v2, two with the fix
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from l2l_gail.errors import L2LError
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.factory import build, prepare
from l2l_gail.gail.loop import start_segment, train_round
from l2l_gail.runs import report_paths, write_report

METHODS: dict[str, dict[str, Any]] = {
    "gail": {"method": "gail"},
    "l2l-gail": {"method": "l2l-gail"},
    "l2l-v2": {"method": "l2l-gail", "l2l_step_norm": "adam", "l2l_heldout": "next-round"},
    "gail --no-gen-norm-disc-batches": {"method": "gail", "gen_norm_disc_batches": False},
    "l2l-v2 --no-gen-norm-disc-batches": {"method": "l2l-gail", "l2l_step_norm": "adam",
                                          "l2l_heldout": "next-round", "gen_norm_disc_batches": False},
}
"""The configurations counted: the Adam reference, the learned updater as designed (a fresh
held-out batch per update) and issue 13's selection (held-out batches from the next round), then
the reference and the selection with the option that keeps discriminator batches out of the
statistics."""


def rows_per_round(task: str, options: dict[str, Any], seed: int = 0) -> dict[str, int]:
    """Rows entering the generator's ``RunningNorm`` in the third GAIL round of ``task``."""
    prepared = prepare(GAILConfig(task=task, timesteps=1_000_000, seed=seed, obs_norm=True, **options))
    with tempfile.TemporaryDirectory(prefix="l2l-norm-rows-") as log_dir:
        trainer = build(prepared, Path(log_dir))
        start_segment(trainer, seed, 0)
        train_round(trainer)
        train_round(trainer)
        norms = [m for m in trainer.gen_algo.policy.modules() if type(m).__name__ == "RunningNorm"]
        if len(norms) != 1:
            raise L2LError(f"expected one RunningNorm in the generator's policy, found {len(norms)}")
        count = norms[0].get_buffer("count")  # rows seen so far
        in_disc = 0
        train_disc = trainer.train_disc

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_disc
            before = int(count.item())
            out = train_disc(*args, **kwargs)
            in_disc += int(count.item()) - before
            return out

        trainer.train_disc = counted  # type: ignore[method-assign]
        start = int(count.item())
        train_round(trainer)
        total = int(count.item()) - start
    ppo_rows = prepared.config.ppo["n_epochs"] * trainer.gen_train_timesteps
    return {"total": total, "train_disc": in_disc, "ppo_update": ppo_rows,
            "other_disc_batches": total - in_disc - ppo_rows, "rollout_steps": trainer.gen_train_timesteps}


def markdown(task: str, rows: dict[str, dict[str, int]]) -> str:
    """The table of :func:`rows_per_round` for each method, with the expert share."""
    command = "python scripts/gail_normaliser_rows.py" + (f" --task {task}" if task != "hopper" else "")
    lines = [f"# Rows entering the generator's observation statistics per round ({task})", "",
             f"Command: `{command}`; one GAIL round after two warm-up rounds, seed 0, the task file's "
             "settings with `--obs-norm`.",
             "", "| method | rows per round | PPO's update | discriminator training | other discriminator "
             "batches (held-out) | expert share |", "|---|---:|---:|---:|---:|---:|"]
    for label, r in rows.items():
        expert = (r["train_disc"] + r["other_disc_batches"]) / 2
        lines.append(f"| {label} | {r['total']:,} | {r['ppo_update']:,} | {r['train_disc']:,} | "
                     f"{r['other_disc_batches']:,} | {expert / r['total']:.0%} |")
    lines += ["", "Every discriminator batch is half expert rows; PPO's update passes its rollout "
              "(generator rows) once per epoch. imitation's stated intent was statistics from fresh "
              "on-policy samples only (HumanCompatibleAI/imitation#256). `--no-gen-norm-disc-batches` "
              "skips the generator's pass over discriminator batches (GAIL never reads its "
              "log-probabilities), which leaves PPO's update as the only source.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="hopper", help="task with shipped demonstrations (default hopper)")
    p.add_argument("--output", type=Path, default=Path("results/gail/generator-normaliser"),
                   help="writes OUTPUT.json and OUTPUT.md (default results/gail/generator-normaliser)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = p.parse_args(argv)
    report_paths(args.output, force=args.force)
    torch.set_num_threads(1)
    rows = {label: rows_per_round(args.task, options) for label, options in METHODS.items()}
    write_report(args.output, {"task": args.task, "rows_per_round": rows}, markdown(args.task, rows))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except L2LError as e:
        sys.exit(f"error: {e}")
