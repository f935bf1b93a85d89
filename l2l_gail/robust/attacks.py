"""L-inf attacks with one call signature, ``attack(model, x, y) -> x_adv`` (as in torchattacks).

Training methods and evaluation treat hand-designed attacks, the learned attacker and
AutoAttack alike. An attack never changes the model's train/eval mode: the caller chooses it
(evaluation uses eval mode; training generates its examples in eval mode too, so batch-norm
statistics are not polluted by adversarial batches).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from l2l_gail.core.attacker import LearnedAttacker, LossFn
from l2l_gail.errors import L2LError
from l2l_gail.robust.data import check_eps

EVAL_ATTACKS = ("fgsm", "pgd<K>", "pgd<K>x<R>", "cw", "apgd", "autoattack")


def cw_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0,
            reduction: str = "mean") -> torch.Tensor:
    """Carlini-Wagner margin loss (max wrong logit - true logit, clamped at ``kappa``), as used
    for the CW-L-inf evaluation of TRADES and Madry et al.; maximising it causes misclassification.
    ``reduction`` ``none`` gives it per example."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    margin = (wrong - true).clamp(max=kappa)
    return margin if reduction == "none" else margin.mean()


class Attack:
    """Base class: ``__call__(model, x, y)`` returns adversarial inputs within the eps-ball and [0, 1]."""

    name = "attack"

    def __init__(self, eps: float):
        self.eps = check_eps(eps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Back into the eps-ball around ``x`` and the data range [0, 1]."""
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps})"


class PGD(Attack):
    """Projected gradient descent, L-inf (Madry et al. 2018, arXiv 1706.06083).

    Args:
        eps: radius. steps: iterations. step_size: per-iteration step (default ``2.5 * eps / steps``).
        start: ``uniform`` inside the ball (random start), ``zero`` (at x), or ``normal``
        (``x + 0.001 N(0, 1)``, TRADES' start, where the KL gradient at x is zero).
        restarts: independent runs; an example counts as broken if any restart breaks it.
        loss: ``ce``, ``cw`` (CW-L-inf) or any ``loss(logits, target)`` to maximise
        (TRADES passes its KL term).
        worst_iterate: keep, for each example, its worst iterate over every step of every restart
            (the first that is misclassified, else the one of highest loss) rather than the last
            iterate of a run: PGD's loss is not monotone, so the last iterate can miss an
            adversarial example the attack passed through. Needs ``ce`` or ``cw`` (a per-example
            loss); the name gains ``x<restarts>``, e.g. ``pgd50x5``.
    """

    def __init__(self, eps: float, steps: int = 10, step_size: float | None = None,
                 start: str = "uniform", restarts: int = 1, loss: str | LossFn = "ce",
                 worst_iterate: bool = False):
        super().__init__(eps)
        if worst_iterate and not isinstance(loss, str):
            raise L2LError("PGD's worst_iterate needs the ce or cw loss (a per-example score)")
        self.worst_iterate = worst_iterate
        if steps < 1 or restarts < 1:
            raise L2LError(f"PGD needs steps >= 1 and restarts >= 1, got {steps} and {restarts}")
        if start not in ("uniform", "zero", "normal"):
            raise L2LError(f"PGD start must be uniform, zero or normal, got {start!r}")
        self.steps, self.restarts, self.start = steps, restarts, start
        self.step_size = step_size if step_size is not None else 2.5 * eps / steps
        if isinstance(loss, str):
            losses: dict[str, LossFn] = {"ce": F.cross_entropy, "cw": cw_loss}
            self.loss_fn = losses[loss]
            self.name = f"pgd{steps}" if loss == "ce" else "cw"
            if worst_iterate:
                self.name += f"x{restarts}"
        else:
            self.loss_fn, self.name = loss, "pgd-custom"

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """One run from ``start``; returns the last iterate. ``observe(iterate, logits)`` sees
        every iterate, the start and the last included (for ``worst_iterate``)."""
        x_adv = self._start(x)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            if observe is not None:
                observe(x_adv.detach(), logits.detach())
            (grad,) = torch.autograd.grad(self.loss_fn(logits, y), x_adv)
            x_adv = self.project(x_adv.detach() + self.step_size * grad.sign(), x)
        x_adv = x_adv.detach()
        if observe is not None:
            with torch.no_grad():
                observe(x_adv, model(x_adv))
        return x_adv

    def _score(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example badness of an iterate: +inf once misclassified, else its loss."""
        per_example = (F.cross_entropy(logits, y, reduction="none") if self.loss_fn is F.cross_entropy
                       else cw_loss(logits, y, reduction="none"))
        return per_example.masked_fill(logits.argmax(1) != y, float("inf"))

    def _run_worst(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   best: torch.Tensor, best_score: torch.Tensor) -> None:
        """One run, folding every iterate into ``best`` / ``best_score`` in place."""
        def keep_worse(x_adv: torch.Tensor, logits: torch.Tensor) -> None:
            score = self._score(logits, y)
            better = score > best_score
            best[better], best_score[better] = x_adv[better], score[better]

        self._run(model, x, y, keep_worse)

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if self.start == "uniform":
            return self.project(x + torch.empty_like(x).uniform_(-self.eps, self.eps), x)
        if self.start == "normal":
            return self.project(x + 0.001 * torch.randn_like(x), x)
        return x.clone()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if self.worst_iterate:
            best, best_score = x.clone(), torch.full((len(y),), -float("inf"), device=x.device)
            with torch.enable_grad():
                for restart in range(self.restarts):
                    # a restart only attacks the examples no earlier one has broken
                    todo = torch.arange(len(y), device=x.device) if restart == 0 else \
                        (best_score != float("inf")).nonzero().squeeze(1)
                    if len(todo) == 0:
                        break
                    sub_best, sub_score = best[todo], best_score[todo]
                    self._run_worst(model, x[todo], y[todo], sub_best, sub_score)
                    best[todo], best_score[todo] = sub_best, sub_score
            return best
        with torch.enable_grad():
            best = self._run(model, x, y)
            for _ in range(self.restarts - 1):
                with torch.no_grad():
                    fooled = model(best).argmax(1) != y
                if bool(fooled.all()):
                    break
                cand = self._run(model, x, y)
                best = torch.where(fooled[:, None, None, None], best, cand)
        return best


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps, no random start."""

    def __init__(self, eps: float):
        super().__init__(eps, steps=1, step_size=eps, start="zero")
        self.name = "fgsm"


class LearnedAttack(Attack):
    """The learned attacker of :mod:`l2l_gail.core.attacker` behind the common signature."""

    name = "learned"

    def __init__(self, attacker: LearnedAttacker):
        super().__init__(attacker.eps)
        self.attacker = attacker

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.attacker(model, x, y)


class AutoAttack(Attack):
    """AutoAttack (Croce & Hein 2020, arXiv 2003.01690) from the independent ``pyautoattack``
    package: APGD-CE, APGD-T, FAB-T and Square (``standard``), or APGD-CE + APGD-T (``fast``).

    ``name`` (default ``autoattack``) tells two versions apart when both run in one evaluation.
    """

    name = "autoattack"

    def __init__(self, eps: float, version: str = "standard", seed: int = 0, name: str | None = None):
        super().__init__(eps)
        if version not in ("standard", "fast"):
            raise L2LError(f"AutoAttack version must be 'standard' or 'fast', got {version!r}")
        self.version, self.seed = version, seed
        if name is not None:
            self.name = name

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack import AutoAttack as _AA

        kwargs: dict[str, Any] = {"norm": "Linf", "eps": self.eps, "seed": self.seed, "device": x.device}
        if self.version == "fast":
            kwargs.update(version="custom", attacks=["apgd-ce", "apgd-t"])
        adversary = _AA(model, **kwargs)
        adversary.verbose = False
        with torch.no_grad():  # the targeted attacks use the 9 runner-up classes, or fewer if there are fewer
            n_targets = min(9, model(x[:1]).shape[1] - 1)
        adversary.apgd_targeted.n_target_classes = n_targets
        adversary.fab.n_target_classes = n_targets
        with torch.enable_grad():
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(y))
        return x_adv.detach()


def build_attack(spec: str, eps: float, *, pgd_step: float | None = None, restarts: int = 1,
                 autoattack_version: str = "standard", seed: int = 0) -> Attack:
    """An evaluation attack by name: ``fgsm``, ``pgd<K>`` (e.g. ``pgd20``, ``restarts`` runs),
    ``pgd<K>x<R>`` (e.g. ``pgd50x5``: K steps, R restarts, each example's worst iterate kept),
    ``cw`` (CW-L-inf, 30 steps as in TRADES' evaluation), ``apgd`` (AutoAttack's APGD-CE and
    APGD-T) and ``autoattack`` (``autoattack_version``)."""
    spec = spec.strip().lower()
    if spec == "fgsm":
        return FGSM(eps)
    if m := re.fullmatch(r"pgd(\d+)", spec):
        return PGD(eps, int(m.group(1)), pgd_step, restarts=restarts)
    if m := re.fullmatch(r"pgd(\d+)x(\d+)", spec):
        return PGD(eps, int(m.group(1)), pgd_step, restarts=int(m.group(2)), worst_iterate=True)
    if spec == "cw":
        return PGD(eps, 30, pgd_step, restarts=restarts, loss="cw")
    if spec == "apgd":
        return AutoAttack(eps, "fast", seed, name="apgd")
    if spec == "autoattack":
        return AutoAttack(eps, autoattack_version, seed)
    raise L2LError(f"unknown attack {spec!r}; choose from {', '.join(EVAL_ATTACKS)}")
