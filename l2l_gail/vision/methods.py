"""Adversarial-training methods: how a classifier's training loss is built for one batch.

Every method follows :class:`l2l_gail.robust.training.Method`: ``loss(model, x, y)`` (the
classifier's objective, called with the model in train mode; any attack inside runs in eval
mode) and ``after_step(model, x, y)`` (the follower's own update, used by the learned
attacker). The L2L methods alternate as in 1811.01213: (a) a classifier step on
``CE(f(x + delta), y)`` with ``delta`` from the attacker (attacker in eval mode, detached),
then (b) an attacker step on ``-CE`` (classifier in eval mode). Three details of the paper's
official code (``YuyangShi/Learning-to-Defend-by-Learning-to-Attack``) are options here:
``train_mode_grad`` (its classifier step computes the attacker's input gradient in train mode),
``att_iter`` (attacker updates per classifier update, its ``--att_iter``) and the attacker's
initialisation (:func:`official_attacker_init`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from l2l_gail.core.attacker import LearnedAttacker, WideAttacker
from l2l_gail.errors import L2LError
from l2l_gail.robust.attacks import PGD, LearnedAttack
from l2l_gail.robust.models import eval_mode
from l2l_gail.robust.training import AdversarialTraining, Method

METHODS = ("standard", "fgsm-rs", "pgd", "trades", "l2l-naive", "l2l-grad", "l2l-2step", "l2l-kstep")
ATTACKER_INITS = ("ours", "official")


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
    """Adversarial training against a learned attacker (1811.01213), trained alternately.

    Args:
        train_mode_grad: generate the classifier step's perturbation with the classifier in train
            mode, as the official code does (``adv_loss_l2l_1`` / ``_2`` call ``model.train()``
            before taking the input gradient): the gradient the attacker reads uses the batch's
            statistics, and every batch-norm layer's running statistics are also updated with
            the clean batch (and, for two steps, the intermediate one). Default: eval mode, like
            every other attack here.
        att_iter: attacker updates on each batch after each classifier update (the official
            ``--att_iter``, default 1).
    """

    def __init__(self, name: str, attacker: LearnedAttacker, *, train_mode_grad: bool = False,
                 att_iter: int = 1):
        super().__init__(name, LearnedAttack(attacker))
        if att_iter < 1:
            raise L2LError(f"--att-iter must be >= 1, got {att_iter}")
        self.attacker, self.train_mode_grad, self.att_iter = attacker, train_mode_grad, att_iter

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.train_mode_grad:
            return self.attack(model, x, y)
        return super().adversarial(model, x, y)

    def after_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """``att_iter`` attacker steps; logs the classifier's loss the last one saw."""
        with eval_mode(model):
            for _ in range(self.att_iter):
                loss = self.attacker.attack_step(model, x, y)
        return {"attacker_loss": loss}

    def state_dict(self) -> dict[str, Any]:
        return {"attacker": self.attacker.state_dict(), "attacker_opt": self.attacker.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.attacker.load_state_dict(state["attacker"])
        self.attacker.optimizer.load_state_dict(state["attacker_opt"])

    def lr_modules(self) -> dict[str, torch.optim.Optimizer]:
        return {"attacker": self.attacker.optimizer}


def official_attacker_init(net: WideAttacker) -> None:
    """Re-initialise ``net`` in place as the official code's ``WideAttacker`` starts.

    The official code sets only its residual blocks' convolutions (Xavier-uniform, gain sqrt(2)
    for the 3x3 ones, gain 1 for the 1x1 shortcuts) and leaves the stem and the output
    convolution at PyTorch's default (``reset_parameters``: uniform in +-1/sqrt(fan_in)). The
    core's attacker gives every convolution gain sqrt(2), which makes the output convolution's
    weights about 3.4x larger: a fresh attacker's ``tanh`` starts saturated on a large share of
    pixels, where its gradient vanishes. (The official block convolutions also carry biases, which
    the core's architecture does not have; that difference is not an initialisation and stays.)
    """
    stem, head = net.stem[0], net.head[-1]
    for m in net.modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if m is stem or m is head:
            m.reset_parameters()
        elif m.kernel_size == (1, 1):
            nn.init.xavier_uniform_(m.weight, gain=1.0)
        else:
            nn.init.xavier_uniform_(m.weight, gain=math.sqrt(2.0))


def build_method(name: str, *, eps: float, channels: int, pgd_steps: int = 10,
                 pgd_step_size: float | None = None, trades_beta: float = 6.0,
                 attacker_steps: int = 2, attacker_width: float = 1.0, attacker_lr: float = 1e-3,
                 attacker_weight_decay: float = 2e-4, device: torch.device | str = "cpu",
                 attacker_init: str = "ours", train_mode_grad: bool = False, att_iter: int = 1) -> Method:
    """A training method by name (one of :data:`METHODS`); the last three options apply to the
    learned attackers only (see :class:`L2LTraining` and :func:`official_attacker_init`)."""
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
        if attacker_init not in ATTACKER_INITS:
            raise L2LError(f"--attacker-init must be one of {', '.join(ATTACKER_INITS)}, "
                           f"got {attacker_init!r}")
        attacker = LearnedAttacker(channels, eps, variant=variant, steps=steps, width=attacker_width,
                                   lr=attacker_lr, weight_decay=attacker_weight_decay)
        if attacker_init == "official":
            official_attacker_init(attacker.net)
        return L2LTraining(name, attacker.to(device), train_mode_grad=train_mode_grad, att_iter=att_iter)
    raise L2LError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
