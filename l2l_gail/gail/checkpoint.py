"""What a GAIL run writes to disk: its checkpoints (exact resume) and its final files.

A checkpoint (``checkpoints/step_<n>.pt``) is one dict of tensors and plain data, read back with
``weights_only=True``:

* ``trainer`` -- the trainer's :meth:`~l2l_gail.gail.methods.GAILTrainer.state_dict` and, under
  ``rng``, the global torch / numpy / python RNG states (numpy's as a list);
* ``history`` -- the evaluations so far, ``round`` -- the last finished round,
  ``train_seconds`` -- the wall-clock time spent in rounds so far;
* ``config`` -- the run's resolved configuration, as in its ``config.yaml``;
* ``tb_step`` -- added by :class:`~l2l_gail.runs.RunLoop`: the first TensorBoard step (in
  environment steps) the run has not logged at yet, where a resumed run's history continues.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from l2l_gail.gail.config import ResolvedGAILConfig
from l2l_gail.gail.expert import save_model
from l2l_gail.gail.methods import GAILTrainer
from l2l_gail.runs import RunDir, atomic_write, global_rng_state, set_global_rng_state

FINAL_FILES = {"policy": "policy.zip", "discriminator": "discriminator.pt",
               "phi_discriminator": "phi_discriminator.pt", "phi_policy": "phi_policy.pt"}


@dataclass
class Progress:
    """How far a run has come: what a checkpoint holds besides the trainer."""

    history: list[dict[str, float]]
    """One entry per evaluation: ``step``, ``return``, ``return_std``, ``normalized_return``,
    ``disc_acc_expert``, ``disc_acc_gen``."""
    next_round: int = 0
    """The first round still to train."""
    train_seconds: float = 0.0
    """Wall-clock seconds spent in rounds so far."""


def checkpoint(trainer: GAILTrainer, progress: Progress, config: ResolvedGAILConfig) -> dict[str, Any]:
    """The checkpoint of ``trainer`` after ``progress.next_round - 1`` rounds."""
    return {"trainer": {**trainer.state_dict(), "rng": global_rng_state()}, "history": progress.history,
            "round": progress.next_round - 1, "train_seconds": progress.train_seconds,
            "config": config.to_dict()}


def restore(trainer: GAILTrainer, state: Mapping[str, Any]) -> Progress:
    """Load :func:`checkpoint` into a trainer freshly built from the same configuration, and set
    the global RNGs; returns the run's progress."""
    trainer_state = dict(state["trainer"])
    rng = trainer_state.pop("rng")
    trainer.load_state_dict(trainer_state)
    set_global_rng_state(rng)
    return Progress(list(state["history"]), int(state["round"]) + 1, float(state["train_seconds"]))


def save_final(trainer: GAILTrainer, run: RunDir) -> None:
    """The trained policy (SB3 zip), the discriminator and any learned optimizer's ``phi``."""
    save_model(trainer.gen_algo, run.path / FINAL_FILES["policy"])
    disc = trainer.discriminator.state_dict()
    atomic_write(run.path / FINAL_FILES["discriminator"], lambda tmp: torch.save(disc, tmp))
    for target, learned in trainer.learned_rules().items():
        learned.save(run.path / FINAL_FILES[f"phi_{target}"])
