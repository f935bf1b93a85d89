"""The discriminator steps the controls and the v2 configurations of l2l-gail are built from.

* :class:`AdamReference` -- Adam's step on the very gradients the learned optimizer sees, kept
  beside it: the yardstick of the learned step's norm (logged for every l2l-gail run) and the
  norm or direction that :func:`shape_step` borrows;
* :func:`shape_step` -- one tensor's step with its norm and its direction each taken from the
  learned step, from Adam's, or (the norm) fixed: the ``--l2l-step-norm`` x
  ``--l2l-step-direction`` design that separates what ``phi`` learns about the step's size
  from what it learns about its direction;
* :func:`output_shift` -- how far one step moves the discriminator's outputs (the quantity the
  constrained meta-objective bounds, and a diagnostic of every method);
* :class:`SignSGD` -- the ``sign-sgd`` discriminator (Bernstein et al. 2018, arXiv 1802.04434),
  the update a coordinatewise learned step with a bound (``--l2l-max-step``) tends to when
  ``phi`` saturates it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from l2l_gail.core.optim import closure_loss
from l2l_gail.gail.config import StepDirection, StepNorm


class AdamReference:
    """Adam's step (Kingma & Ba 2015, arXiv 1412.6980) on a stream of gradients, by tensor name,
    without applying it: torch's ``Adam`` with its defaults (``betas=(0.9, 0.999)``,
    ``eps=1e-8``, no weight decay), computed as ``torch.optim.Adam`` computes it.

    The learned optimizer's start is a clone of this Adam in units of the learning rate, so the
    reference says, step by step, how far the learned step has moved from where it began.

    Args:
        lr: the learning rate the steps are scaled by (the discriminator's).
    """

    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.count = 0
        self.moments: dict[str, tuple[Tensor, Tensor]] = {}

    @torch.no_grad()
    def step(self, grads: Mapping[str, Tensor | None]) -> dict[str, Tensor]:
        """Update the moments with ``grads`` and return Adam's additive step for each tensor
        with a gradient (``-lr * m_hat / (sqrt(v_hat) + eps)``)."""
        self.count += 1
        b1, b2 = self.betas
        bias1, bias2 = 1 - b1 ** self.count, 1 - b2 ** self.count
        steps = {}
        for name, grad in grads.items():
            if grad is None:
                continue
            m, v = self.moments.get(name) or (torch.zeros_like(grad), torch.zeros_like(grad))
            m = m.mul(b1).add_(grad, alpha=1 - b1)
            v = v.mul(b2).addcmul_(grad, grad, value=1 - b2)
            self.moments[name] = (m, v)
            denom = (v.sqrt() / math.sqrt(bias2)).add_(self.eps)
            steps[name] = -(self.lr / bias1) * m / denom
        return steps

    def state_dict(self) -> dict[str, Any]:
        """The step count and the moments, as tensors and plain data."""
        return {"count": self.count, "moments": {n: list(mv) for n, mv in self.moments.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.count = int(state["count"])
        self.moments = {n: (mv[0].clone(), mv[1].clone()) for n, mv in state["moments"].items()}


def shape_step(learned: Tensor, adam: Tensor, *, norm: StepNorm, direction: StepDirection,
               lr: float) -> Tensor:
    """One tensor's step with its direction and its Euclidean norm chosen independently.

    The direction is the learned step's or Adam's; the norm is the learned step's, Adam's, or
    ``lr`` (``ttur``: a fixed budget per step, the discriminator's time scale of a two-time-scale
    update, Heusel et al. 2017, arXiv 1706.08500). A zero direction stays zero. Differentiable
    in ``learned``, so ``phi`` can be meta-trained through the shaped step.
    """
    if norm == "learned" and direction == "learned":
        return learned
    unit = learned if direction == "learned" else adam
    if norm == "ttur":
        target: Tensor | float = lr
    else:
        target = (learned if norm == "learned" else adam).norm()
    return unit * (target / unit.norm().clamp_min(torch.finfo(unit.dtype).tiny))


def output_shift(old: Tensor, new: Tensor, kind: Literal["logit", "kl"]) -> Tensor:
    """How far a step moved a discriminator's outputs, from its logits before (``old``) and after
    (``new``) on the same rows: the mean absolute change of the logits (``logit``) or the mean
    ``KL(Bernoulli(sigmoid(old)) || Bernoulli(sigmoid(new)))`` (``kl``). Differentiable in ``new``."""
    if kind == "logit":
        return (new - old).abs().mean()
    p = torch.sigmoid(old)
    return (p * (F.logsigmoid(old) - F.logsigmoid(new))
            + (1 - p) * (F.logsigmoid(-old) - F.logsigmoid(-new))).mean()


class SignSGD(torch.optim.Optimizer):
    """signSGD (Bernstein et al. 2018, *signSGD: Compressed Optimisation for Non-Convex
    Problems*, arXiv 1802.04434): ``theta <- theta - lr * sign(grad)``, no momentum.

    Every coordinate moves by exactly ``lr`` (0 where the gradient is exactly 0), whatever the
    gradient's scale: what a learned coordinatewise step bounded by ``max_step`` learning rates
    becomes once ``phi`` drives every output to the bound (``l2l-max1`` with ``max_step = 1``).

    Args:
        params: parameters or parameter groups.
        lr: the size of every coordinate's step.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float) -> None:
        if not lr >= 0:
            raise ValueError(f"invalid learning rate {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])
        return loss
