"""The training method protocol and the one training epoch every robustness mode runs.

A method builds a batch's loss (``loss``) and may train a follower of its own after the
classifier's step (``after_step``: the learned attacker of 1811.01213). :func:`train_epoch` is the
only batch loop that steps a classifier: the vision mode's adversarial training and the meta
mode's transfer runs (:func:`l2l_gail.meta.apply.fit`) both call it, so a method behaves the same
in either -- a learned attacker is trained wherever it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from l2l_gail.errors import L2LError
from l2l_gail.robust.attacks import Attack
from l2l_gail.robust.models import eval_mode


class Method:
    """Base: plain empirical risk minimisation (``standard``).

    ``loss(model, x, y)`` is the classifier's objective, called with the model in train mode
    (any attack inside runs in eval mode); ``after_step(model, x, y)`` is the method's own update
    after the classifier's step, returning numbers to log.
    """

    name = "standard"

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The classifier's loss on the batch and the inputs it was measured on."""
        x_adv = self.adversarial(model, x, y)
        logits = model(x_adv)
        delta = (x_adv - x).flatten(1)
        return F.cross_entropy(logits, y), {
            "logits": logits, "delta_linf": float(delta.abs().amax(1).mean()),
            "delta_l2": float(delta.norm(dim=1).mean()),
        }

    def after_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def lr_modules(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers besides the classifier's, for learning-rate logging."""
        return {}


class AdversarialTraining(Method):
    """Train on ``attack(model, x, y)`` only (Madry et al. 2018; Wong et al. 2020 with FGSM-RS);
    the attack runs with the model in eval mode."""

    def __init__(self, name: str, attack: Attack):
        self.name, self.attack = name, attack

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):
            return self.attack(model, x, y)


BatchHook = Callable[[int, Mapping[str, float], Mapping[str, float]], None]
"""``hook(step, batch_stats, running_means)``, called after each batch (step counts from 0)."""


def train_epoch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                optimizer: torch.optim.Optimizer, method: Method, *, epoch: int,
                divergence_hint: str = "", on_batch: BatchHook | None = None) -> dict[str, float]:
    """One pass over ``batches``: ``method.loss``, the optimizer's step, then ``method.after_step``.

    Returns the example-weighted means over the epoch of ``loss``, ``acc`` (on the inputs the
    loss saw), ``delta_linf``, ``delta_l2`` and whatever ``after_step`` reports.

    Raises:
        L2LError: the loss is not finite; the message names the epoch (``epoch`` counts from 0)
            and batch, followed by ``divergence_hint`` (what the user should do).
    """
    model.train()
    sums: dict[str, float] = {}
    seen = 0
    for step, (x, y) in enumerate(batches):
        loss, info = method.loss(model, x, y)
        if not torch.isfinite(loss):
            raise L2LError(f"the training loss became {float(loss.detach())} at epoch {epoch + 1}, "
                           f"batch {step + 1}{divergence_hint}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        extra = method.after_step(model, x, y)
        b = len(y)
        seen += b
        acc = float((info["logits"].argmax(1) == y).float().mean())
        batch_stats = {"loss": float(loss.detach()), "acc": acc, "delta_linf": info["delta_linf"],
                       "delta_l2": info["delta_l2"], **extra}
        for k, v in batch_stats.items():
            sums[k] = sums.get(k, 0.0) + v * b
        if on_batch is not None:
            on_batch(step, batch_stats, {k: v / seen for k, v in sums.items()})
    return {k: v / max(seen, 1) for k, v in sums.items()}
