"""Transfer: train a new model on clean data with a frozen learned optimizer, then attack it.

Serban et al. (arXiv 2008.05247) claim that an optimizer meta-trained on adversarial examples
makes models it trains on *clean* data robust -- with no adversarial example generated at
transfer time, so training should cost about what clean training costs. :func:`fit` is the one
training loop used for the learned optimizer and for its references (Adam on clean data, PGD
adversarial training with Adam), so the three differ only in the optimizer and in the method
that builds each batch's loss; :func:`evaluate_model` runs the toolkit's evaluation (clean,
FGSM, PGD-20, AutoAttack and the per-example worst case).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from l2l_gail.core import LearnedOptimizer, UpdateRule
from l2l_gail.errors import L2LError
from l2l_gail.meta.optimizees import (
    DEFAULT_MAX_PARAMS,
    OPTIMIZEES,
    build_optimizee,
    check_activation,
    check_servable,
)
from l2l_gail.meta.train import load_data
from l2l_gail.robust.attacks import PGD, build_attack
from l2l_gail.robust.data import ImageData, batches, check_dataset, resolve_eps
from l2l_gail.robust.evaluate import evaluate
from l2l_gail.robust.options import check_numbers
from l2l_gail.robust.training import AdversarialTraining, Method, train_epoch
from l2l_gail.runs import RunDir, atomic_write


@dataclass
class ApplyConfig:
    """A transfer run: which optimizer trains which model on which clean data, and how it is attacked."""

    optimizer: str = ""
    """learned-optimizer file written by `l2l meta train` (RUNS_DIR/meta/<name>/optimizer.pt)"""
    dataset: str = "mnist-5k"
    """mnist-5k (offline), mnist (idx files in --data-dir), fashion-mnist or synthetic"""
    data_dir: str | None = None
    """directory with the data set's idx files (default: none; fashion-mnist is then read from
    /usr/share/datasets/fashion-mnist; mnist-5k and synthetic need no files)"""
    train_size: int | None = None
    """train on a fixed random subset of this many training images (the low-data regime; default:
    all of them)"""
    test_size: int | None = None
    """hold out this many test images; when the data set has fewer (mnist-5k has 500), the rest
    are moved out of its training images, as `l2l meta train --test-size` does (default: the data
    set's own test split)"""
    model: str = "mlp"
    """mlp (784-20-10) or a vision model: small-cnn, preact-resnet18, wide-resnet"""
    width: int | None = None
    """MLP hidden units or the vision model's width (default: 20 for the MLP, the vision model's own
    default otherwise)"""
    activation: str = "relu"
    """hidden activation of the mlp: relu with Xavier init (2008.05247's code) or sigmoid with
    PyTorch's default init (this library's before issue 15)"""
    epochs: int = 5
    """passes of the learned optimizer over the clean training set"""
    batch_size: int = 128
    """training images per learned-optimizer step"""
    eps: float | None = None
    """L-inf radius of the evaluation attacks, in pixel units (default: the data set's standard: 0.3 for
    mnist and mnist-5k, 0.1 for fashion-mnist, 8/255 for cifar10, cifar100 and synthetic)"""
    attacks: str = "fgsm,pgd20,autoattack"
    """comma-separated evaluation attacks: fgsm, pgd<K>, cw, autoattack (empty: clean accuracy only)"""
    autoattack_version: str = "standard"
    """standard (APGD-CE, APGD-T, FAB-T, Square) or fast (APGD-CE, APGD-T; far cheaper on a CPU)"""
    eval_subset: int = 1000
    """evaluate on the first N test images"""
    max_params: int = DEFAULT_MAX_PARAMS
    """largest model (trainable parameters) the learned optimizer is allowed to serve"""
    seed: int = 0

    def resolved_eps(self) -> float:
        """``eps``, or the data set's standard radius when it is unset."""
        return resolve_eps(self.eps, self.dataset)

    def validate(self) -> None:
        """Raise :class:`L2LError` on the first invalid option (before any file is read)."""
        check_dataset(self.dataset)
        self.resolved_eps()
        if not self.optimizer:
            raise L2LError("--optimizer is required: a file written by `l2l meta train`")
        if self.model not in OPTIMIZEES:
            raise L2LError(f"unknown model {self.model!r}; choose one of {', '.join(OPTIMIZEES)}")
        check_activation(self.activation)
        check_numbers(self, at_least_one=("train_size", "test_size", "width", "epochs", "batch_size",
                                          "eval_subset", "max_params"))
        if self.autoattack_version not in ("standard", "fast"):
            raise L2LError(f"--autoattack-version must be standard or fast, got {self.autoattack_version!r}")


class PGDTrainingWithWarmup(AdversarialTraining):
    """PGD adversarial training (Madry et al. 2018) whose eps grows linearly from 0 to ``eps`` over
    the first ``warmup_steps`` optimizer steps (Gowal et al. 2018's ramp, as ``l2l meta train``'s
    ``--eps-warmup``): adversarial training from full eps at the first step can collapse to a
    constant classifier, and did on the frontier benchmark's MNIST MLP (``results/meta/README.md``).

    The step count advances in ``after_step``, i.e. once per optimizer step of :func:`fit`.
    """

    def __init__(self, eps: float, warmup_steps: int, pgd_steps: int = 10) -> None:
        if warmup_steps < 0:
            raise L2LError(f"the eps warm-up must be >= 0 steps, got {warmup_steps}")
        super().__init__("pgd-warmup", PGD(eps, pgd_steps))
        self.eps, self.warmup_steps, self.pgd_steps, self.steps_done = eps, warmup_steps, pgd_steps, 0

    def current_eps(self) -> float:
        """The radius of the next batch's attack."""
        if self.steps_done >= self.warmup_steps:
            return self.eps
        return self.eps * self.steps_done / self.warmup_steps

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps = self.current_eps()
        if eps == 0:
            return x
        if eps != self.attack.eps:
            self.attack = PGD(eps, self.pgd_steps)
        return super().adversarial(model, x, y)

    def after_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.steps_done += 1
        return {}


@dataclass
class FitResult:
    """What :func:`fit` measured: wall time of the training loop alone, and the last epoch's loss."""

    train_seconds: float
    final_loss: float


def fit(model: nn.Module, data: ImageData, optimizer: torch.optim.Optimizer, *, epochs: int,
        batch_size: int, seed: int, method: Method | None = None,
        on_step: Callable[[int], None] | None = None) -> FitResult:
    """Train ``model`` on ``data`` for ``epochs``; each batch's loss is ``method.loss`` (default: clean).

    Each epoch is :func:`l2l_gail.robust.training.train_epoch`, the vision mode's too, so the
    method's ``after_step`` runs after every optimizer step (a learned attacker is trained).
    ``on_step(k)`` runs after the ``k``-th optimizer step (counted from 1 over all epochs), e.g. to
    evaluate the model along training; it must leave the model's parameters as it found them.

    The batch order depends on ``(seed, epoch)`` only, so runs that differ in the optimizer or the
    method see the same batches. The clock covers the loop only (no data loading, no evaluation,
    no ``on_step``).
    """
    method = method or Method()
    start = time.perf_counter()
    hook_seconds = 0.0
    final_loss = 0.0
    steps = 0

    def after_batch(*_: object) -> None:
        nonlocal steps, hook_seconds
        steps += 1
        if on_step is not None:
            t0 = time.perf_counter()
            on_step(steps)
            hook_seconds += time.perf_counter() - t0

    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        stats = train_epoch(model, batches(data.train_x, data.train_y, batch_size, generator=gen), optimizer,
                            method, epoch=epoch, divergence_hint=": the optimizer diverged on this model",
                            on_batch=after_batch)
        final_loss = stats.get("loss", 0.0)
    return FitResult(train_seconds=time.perf_counter() - start - hook_seconds, final_loss=final_loss)


def evaluate_model(model: nn.Module, data: ImageData, *, eps: float, attacks: str, eval_subset: int,
                   autoattack_version: str = "standard", seed: int = 0) -> dict[str, float]:
    """The toolkit's evaluation on the first ``eval_subset`` test images (model in eval mode)."""
    built = [build_attack(a, eps, autoattack_version=autoattack_version, seed=seed)
             for a in attacks.split(",") if a.strip()]
    n = min(eval_subset, len(data.test_y))
    torch.manual_seed(seed)  # PGD's random starts
    return evaluate(model, data.test_x[:n], data.test_y[:n], built)


def load_learned(path: str | Path) -> UpdateRule:
    """The frozen learned optimizer of ``path``, whichever rule it holds (errors name the file and
    say what to do)."""
    learned = UpdateRule.load(path)
    learned.requires_grad_(False)
    return learned.eval()


def apply(config: ApplyConfig, run: RunDir) -> dict[str, Any]:
    """Train ``config.model`` on clean data with the frozen learned optimizer, evaluate, write metrics.

    Writes ``model.pt`` (weights and configuration) and ``metrics.json`` (accuracies, train
    seconds) into ``run``; returns the metrics.
    """
    config.validate()
    learned = load_learned(config.optimizer)
    data = load_data(config.dataset, config.data_dir, config.train_size, config.seed, config.test_size)
    torch.manual_seed(config.seed)
    model = build_optimizee(config.model, data.shape, data.num_classes, config.width, config.activation)
    n_params = check_servable(model, learned, config.max_params)
    result = fit(model, data, LearnedOptimizer(model.parameters(), learned=learned), epochs=config.epochs,
                 batch_size=config.batch_size, seed=config.seed)
    blob = {"format": "l2l_gail.meta-apply/1", "model": model.state_dict(),
            "config": {**dataclasses.asdict(config), "eps": config.resolved_eps()}}
    atomic_write(run.path / "model.pt", lambda tmp: torch.save(blob, tmp))
    scores = evaluate_model(model, data, eps=config.resolved_eps(), attacks=config.attacks,
                            eval_subset=config.eval_subset, autoattack_version=config.autoattack_version,
                            seed=config.seed)
    metrics = {"dataset": config.dataset, "model": config.model, "params": n_params,
               "train_size": len(data.train_y), "epochs": config.epochs, "eps": config.resolved_eps(),
               "train_seconds": result.train_seconds, "final_train_loss": result.final_loss,
               "rule": learned.name,
               "optimizer_config": learned.config.to_dict(), **scores}
    run.write_metrics(metrics)
    return metrics
