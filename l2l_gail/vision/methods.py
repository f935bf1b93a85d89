"""Adversarial-training methods: how a classifier's training loss is built for one batch.

Every method follows :class:`l2l_gail.robust.training.Method`: ``loss(model, x, y)`` (the
classifier's objective, called with the model in train mode; any attack inside runs in eval
mode) and ``after_step(model, x, y)`` (the follower's own update, used by the learned
attacker). The L2L methods alternate as in 1811.01213: (a) a classifier step on
``CE(f(x + delta), y)`` with ``delta`` from the attacker (attacker in eval mode, detached),
then (b) an attacker step on ``-CE`` (classifier in eval mode).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from l2l_gail.core.attacker import LearnedAttacker
from l2l_gail.errors import L2LError
from l2l_gail.robust.attacks import PGD, Attack, LearnedAttack
from l2l_gail.robust.models import eval_mode
from l2l_gail.robust.training import Method

METHODS = ("standard", "fgsm-rs", "pgd", "trades", "l2l-naive", "l2l-grad", "l2l-2step", "l2l-kstep")


class AdversarialTraining(Method):
    """Train on ``attack(model, x, y)`` only (Madry et al. 2018; Wong et al. 2020 with FGSM-RS)."""

    def __init__(self, name: str, attack: Attack):
        self.name, self.attack = name, attack

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):
            return self.attack(model, x, y)


class TRADES(Method):
    """TRADES (Zhang et al. 2019, arXiv 1901.08573): ``CE(f(x)) + beta * KL(f(x) || f(x'))`` with
    ``x'`` from PGD on the KL term, started at ``x + 0.001 N(0, 1)`` as in the authors' code."""

    name = "trades"

    def __init__(self, eps: float, steps: int, step_size: float | None, beta: float = 6.0):
        self.beta = beta
        self.pgd = PGD(eps, steps, step_size, start="normal", loss=self._kl_sum)

    @staticmethod
    def _kl_sum(logits: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="sum")

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        with eval_mode(model), torch.no_grad():
            p_clean = F.softmax(model(x), 1)
        with eval_mode(model):
            x_adv = self.pgd(model, x, p_clean)
        logits = model(x)
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
        delta = (x_adv - x).flatten(1)
        return F.cross_entropy(logits, y) + self.beta * kl, {
            "logits": logits, "delta_linf": float(delta.abs().amax(1).mean()),
            "delta_l2": float(delta.norm(dim=1).mean()),
        }


class L2LTraining(AdversarialTraining):
    """Adversarial training against a learned attacker (1811.01213), trained alternately."""

    def __init__(self, name: str, attacker: LearnedAttacker):
        super().__init__(name, LearnedAttack(attacker))
        self.attacker = attacker

    def after_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        with eval_mode(model):
            return {"attacker_loss": self.attacker.attack_step(model, x, y)}

    def state_dict(self) -> dict[str, Any]:
        return {"attacker": self.attacker.state_dict(), "attacker_opt": self.attacker.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.attacker.load_state_dict(state["attacker"])
        self.attacker.optimizer.load_state_dict(state["attacker_opt"])

    def lr_modules(self) -> dict[str, torch.optim.Optimizer]:
        return {"attacker": self.attacker.optimizer}


def build_method(name: str, *, eps: float, channels: int, pgd_steps: int = 10,
                 pgd_step_size: float | None = None, trades_beta: float = 6.0,
                 attacker_steps: int = 2, attacker_width: float = 1.0, attacker_lr: float = 1e-3,
                 attacker_weight_decay: float = 2e-4, device: torch.device | str = "cpu") -> Method:
    """A training method by name (one of :data:`METHODS`)."""
    if name == "standard":
        return Method()
    if name == "fgsm-rs":  # Wong et al. 2020: uniform start, one step of 1.25 eps
        return AdversarialTraining(name, PGD(eps, 1, 1.25 * eps, start="uniform"))
    if name == "pgd":
        return AdversarialTraining(name, PGD(eps, pgd_steps, pgd_step_size))
    if name == "trades":
        return TRADES(eps, pgd_steps, pgd_step_size, trades_beta)
    if name.startswith("l2l-") and name in METHODS:
        variant = "naive" if name == "l2l-naive" else "grad"
        steps = {"l2l-naive": 1, "l2l-grad": 1, "l2l-2step": 2}.get(name, attacker_steps)
        if steps < 1:
            raise L2LError(f"--attacker-steps must be >= 1, got {steps}")
        attacker = LearnedAttacker(channels, eps, variant=variant, steps=steps, width=attacker_width,
                                   lr=attacker_lr, weight_decay=attacker_weight_decay).to(device)
        return L2LTraining(name, attacker)
    raise L2LError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
