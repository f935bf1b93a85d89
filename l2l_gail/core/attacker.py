"""The input-space learned inner optimizer: a learned attacker (Jiang et al., arXiv 1811.01213).

In adversarial training ``min_theta max_{|delta| <= eps} CE(f_theta(x + delta), y)`` the inner
maximisation is normally solved by PGD. Here a network ``g_phi`` maps the input (and, for the
gradient variants, the classifier's input gradient) to a perturbation ``eps * tanh(.)``; ``phi``
is trained on the follower's objective measured after the perturbation is applied, i.e. to
maximise the classifier's loss. The architecture follows the paper's official code (its
``WideAttacker``), with a width multiplier for cheap CPU variants.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from l2l_gail.core.metalearn import meta_step

VARIANTS = ("naive", "grad")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _ResBlock(nn.Module):
    """BN(affine=False) -> PReLU -> conv3x3, twice, with a 1x1 shortcut when channels change."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, affine=False), nn.PReLU(), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout, affine=False), nn.PReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        )
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class WideAttacker(nn.Module):
    """The attacker network of 1811.01213's code: a fully convolutional residual net
    (64 -> 128 -> 256 -> 128 -> 64 channels, times ``width``) ending in ``eps * tanh``.

    Args:
        in_channels: channels of its input (C for ``naive``, 2C for ``grad``: image + gradient).
        out_channels: channels of the perturbation (C).
        eps: L-inf radius; the output lies in ``[-eps, eps]``.
        width: channel multiplier (1.0 is the paper's size).
    """

    def __init__(self, in_channels: int, out_channels: int, eps: float, width: float = 1.0):
        super().__init__()
        ch = [max(4, round(c * width)) for c in (64, 128, 256, 128, 64)]
        self.eps = eps
        self.stem = nn.Sequential(nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(ch[0]), nn.ReLU())
        self.blocks = nn.Sequential(*(_ResBlock(a, b) for a, b in itertools.pairwise(ch)))
        self.head = nn.Sequential(nn.BatchNorm2d(ch[-1], affine=False),
                                  nn.Conv2d(ch[-1], out_channels, 3, 1, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight, gain=math.sqrt(2.0))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.eps * torch.tanh(self.head(self.blocks(self.stem(inp))))


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   loss_fn: LossFn = F.cross_entropy) -> torch.Tensor:
    """The classifier's loss gradient w.r.t. its input, detached and divided by its batch max.

    Normalising by the batch-wide max keeps the attacker's second input on the scale of the
    image whatever the classifier's loss scale (as in 1811.01213's ``l2l-grad`` code).
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model(xg), y), xg)
    return grad / grad.abs().max().clamp_min(1e-12)


class LearnedAttacker(nn.Module):
    """A learned L-inf attacker: an input-space learned inner optimizer.

    Variants (1811.01213): ``naive`` sees the image only; ``grad`` also sees the normalised input
    gradient. ``steps=K`` applies the same network K times (``l2l-2step`` is K=2):
    ``delta_k = g(x_k, grad(x_k))``, ``x_{k+1} = clamp(x + clip(sum_k delta_k, +-eps), 0, 1)``;
    backpropagation flows through every step.

    Calling it, ``attacker(model, x, y)``, is the attack signature every attack of
    :mod:`l2l_gail.robust.attacks` shares (:meth:`generate`); :meth:`attack_step` trains ``phi``
    with the core's :func:`~l2l_gail.core.metalearn.meta_step`.

    Args:
        channels: image channels.
        eps: L-inf radius.
        variant: ``naive`` or ``grad``.
        steps: attacker applications per perturbation (K).
        width: channel multiplier of :class:`WideAttacker`.
        lr, weight_decay: Adam settings of ``phi`` (paper's code: 1e-3, 2e-4).
        bounds: the valid data range (inputs are in [0, 1]).
        max_grad_norm: clipping of ``phi``'s gradient (``None``, the default: not clipped, as in
            the paper's code).
    """

    name = "learned"

    def __init__(self, channels: int, eps: float, *, variant: str = "grad", steps: int = 1,
                 width: float = 1.0, lr: float = 1e-3, weight_decay: float = 2e-4,
                 bounds: tuple[float, float] = (0.0, 1.0), max_grad_norm: float | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown attacker variant {variant!r}; choose one of {VARIANTS}")
        if steps < 1:
            raise ValueError(f"attacker steps must be >= 1, got {steps}")
        if variant == "naive" and steps > 1:
            raise ValueError("multi-step attackers need the gradient input: use variant='grad'")
        self.variant, self.steps, self.eps, self.bounds = variant, steps, eps, bounds
        self.max_grad_norm = max_grad_norm
        self.net = WideAttacker(channels * (2 if variant == "grad" else 1), channels, eps, width)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                loss_fn: LossFn = F.cross_entropy) -> torch.Tensor:
        """The adversarial input ``x + delta``; differentiable w.r.t. ``phi`` (not w.r.t. x)."""
        lo, hi = self.bounds
        x = x.detach()
        x_k, total = x, torch.zeros_like(x)
        for _ in range(self.steps):
            inp = x_k if self.variant == "naive" else torch.cat(
                [x_k, input_gradient(model, x_k, y, loss_fn)], dim=1)
            total = (total + self.net(inp)).clamp(-self.eps, self.eps)
            x_k = (x + total).clamp(lo, hi)
        return x_k

    @torch.no_grad()
    def generate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Deployment: the detached adversarial batch, with the attacker's BN in eval mode."""
        was_training = self.training
        self.eval()
        try:
            with torch.enable_grad():  # the gradient variants need the classifier's input gradient
                return self.perturb(model, x, y).detach()
        finally:
            self.train(was_training)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``attacker(model, x, y)``: :meth:`generate`, the shared attack signature."""
        return self.generate(model, x, y)

    def update(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Deprecated name of :meth:`generate` (it generates an attack, it updates nothing)."""
        warnings.warn("LearnedAttacker.update is deprecated and will be removed in the next "
                      "release; use generate() or call the attacker", DeprecationWarning,
                      stacklevel=2)
        return self.generate(model, x, y)

    def attack_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    loss_fn: LossFn = F.cross_entropy) -> float:
        """Train ``phi`` on one batch: maximise the classifier's loss after the perturbation.

        The caller puts the classifier in eval mode (1811.01213 trains the attacker against the
        classifier's inference-time behaviour). Only ``phi`` receives gradients, so the
        classifier's ``.grad`` fields are left untouched. Returns the classifier's loss on the
        batch.
        """
        self.train()
        x_adv = self.perturb(model, x, y, loss_fn)
        objective = -loss_fn(model(x_adv), y)
        return -meta_step(objective, self.optimizer, max_grad_norm=self.max_grad_norm).meta_loss
