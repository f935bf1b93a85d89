"""The drop-in ``torch.optim.Optimizer`` whose step is a learned update rule ``g_phi``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2l_gail.core.lstm_rule import LSTMRule
from l2l_gail.core.metalearn import LookaheadStats, lookahead_step
from l2l_gail.core.rule import Memory, Params, UpdateRule
from l2l_gail.errors import L2LError


def closure_loss(closure: Callable[[], float] | None) -> float | None:
    """What an optimizer's ``step(closure)`` returns: the loss of ``closure`` evaluated with
    gradients enabled (``torch.optim``'s convention, inside a ``no_grad`` step), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class LearnedOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose step is the learned ``g_phi``.

    The constructor matches what stable-baselines3 (``optimizer_class(params, lr=...,
    **optimizer_kwargs)``) and imitation (``disc_opt_cls(params, **disc_opt_kwargs)``) call,
    so the learned optimizer is injected, not forked in. With a ``phi`` from an l2l-gail run
    (steps in units of the learning rate) it takes Adam-like steps of size about ``lr``::

        PPO("MlpPolicy", env, policy_kwargs={"optimizer_class": LearnedOptimizer,
                                             "optimizer_kwargs": {"learned": "phi_policy.pt"}})

    How ``lr`` acts depends on the rule's ``step_units`` (recorded in its file): each group's
    learned step is multiplied by ``lr / reference_lr``. For a rule in units of ``lr`` (the Adam
    clone, every l2l-gail phi) ``reference_lr`` defaults to 1, so the step is ``lr * g_phi``. A
    rule with absolute steps (meta-trained by ``l2l meta train``) is applied as it is, so it
    refuses an ``lr`` unless a ``reference_lr`` says what that ``lr`` means (``reference_lr=lr``
    keeps the learned steps and lets a learning-rate schedule scale them).

    Each parameter's memory lives in ``self.state[p]`` (for the LSTM rule ``"h"`` and ``"c"``, for
    the MLP rule ``"momenta"``, ``"second_moment"`` and ``"step"``: views of flat buffers that its
    :meth:`~l2l_gail.core.rule.UpdateRule.step_in_place` updates in place, as Adam does its
    state), and ``state_dict()`` copies it and also carries ``phi`` (under ``"learned"``), so a
    checkpoint resumes bit-for-bit even while ``phi`` is being trained online. ``step()`` never
    builds a graph; to train ``phi`` use :meth:`lookahead_step` or the helpers of
    :mod:`l2l_gail.core.metalearn`.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        lr: the learning rate (see above); schedulers and stable-baselines3 may change it.
        learned: an :class:`~l2l_gail.core.rule.UpdateRule` (shared, not copied: training it
            elsewhere changes this optimizer's steps), a path to one saved with its ``save``,
            or ``None`` for a fresh :class:`~l2l_gail.core.lstm_rule.LSTMRule`. It is moved to
            the parameters' device.
        reference_lr: the learning rate at which the learned steps are taken as they are.
        allow_untrained: accept a rule whose steps are all zero (a fresh one), which is only
            useful when ``phi`` is trained online, e.g. with :meth:`lookahead_step` and
            ``Adam(opt.learned.parameters())``; refused otherwise, since the optimizer would
            never move the parameters.

    Raises:
        L2LError: the rule is untrained (and not allowed), its file is bad, or ``lr`` and
            ``reference_lr`` do not fit its step units.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | None = None,
        *,
        learned: UpdateRule | str | Path | None = None,
        reference_lr: float | None = None,
        allow_untrained: bool = False,
    ) -> None:
        if learned is None:
            rule: UpdateRule = LSTMRule()
            self._source = "a fresh LSTMRule"
        elif isinstance(learned, UpdateRule):
            rule, self._source = learned, f"the given {type(learned).__name__}"
        else:
            rule, self._source = UpdateRule.load(learned), str(learned)
        if rule.never_steps and not allow_untrained:
            raise L2LError(
                f"{self._source} is untrained (its steps are all zero), so the optimizer would "
                "never move the parameters: pass learned= a trained phi (from `l2l meta train` "
                "or an l2l-gail run's phi_*.pt), or allow_untrained=True if you train phi online"
            )
        if reference_lr is None and rule.step_units == "lr":
            reference_lr = 1.0
        if reference_lr is not None and not reference_lr > 0:
            raise ValueError(f"reference_lr must be positive, got {reference_lr}")
        super().__init__(params, {"lr": lr, "reference_lr": reference_lr})
        first = next(p for group in self.param_groups for p in group["params"])
        self.learned = rule.to(first.device)
        self._workspace: dict[str, Any] = {}  # the rule's buffers between steps (step_in_place)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._factor(self.param_groups[-1])  # refuse an lr that would do nothing, now

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "learned": self.learned, "_source": self._source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._workspace = {}  # the state's memory is copied into fresh buffers at the next step

    def _factor(self, group: Mapping[str, Any]) -> float:
        lr, ref = group["lr"], group["reference_lr"]
        if lr is not None and not lr >= 0:
            raise ValueError(f"invalid learning rate {lr}")
        if ref is None:
            if lr is not None:
                raise L2LError(
                    f"{self._source} makes absolute steps, so lr={lr} would do nothing: leave lr "
                    "unset, or pass reference_lr to scale the steps by lr / reference_lr "
                    "(a phi_*.pt of an l2l-gail run older than format version 2 is in units of "
                    "lr: pass reference_lr=1.0)"
                )
            return 1.0
        if lr is None:
            raise L2LError(f"{self._source} needs lr: its steps are scaled by lr / reference_lr "
                           f"(reference_lr={ref})")
        return float(lr / ref)

    def _memory(self, p: Tensor) -> Memory:
        return self.learned.memory_of(self.state[p], p.numel())

    def _remember(self, p: Tensor, memory: Memory) -> None:
        self.state[p].update(zip(self.learned.memory_keys, memory, strict=True))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Apply the learned step to every parameter with a gradient (one rule call in all)."""
        loss = closure_loss(closure)
        params, grads, factors = [], [], []
        for group in self.param_groups:
            factor = self._factor(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LearnedOptimizer does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
                factors.append(factor)
        if params:
            self.learned.step_in_place(params, grads, factors, [self.state[p] for p in params],
                                       self._workspace)
        return loss

    def lookahead_step(
        self,
        module: nn.Module,
        train_loss: Callable[[Params], Tensor] | Mapping[str, Tensor],
        heldout_loss: Callable[[Params], Tensor],
        meta_opt: torch.optim.Optimizer,
        *,
        max_grad_norm: float | None = 1.0,
        second_order: bool = False,
    ) -> LookaheadStats:
        """:func:`~l2l_gail.core.metalearn.lookahead_step` on this optimizer's parameters
        within ``module``.

        Uses and updates the memory in ``self.state``, so learned steps from :meth:`step` and
        from look-ahead steps share one history.
        """
        owner = {
            id(p): (p, self._factor(group)) for group in self.param_groups for p in group["params"]
        }
        named = {n: owner[id(p)] for n, p in module.named_parameters() if id(p) in owner}
        state, stats = lookahead_step(
            self.learned, module, {n: self._memory(p) for n, (p, _) in named.items()},
            train_loss, heldout_loss, meta_opt, names=named,
            scale={n: f for n, (_, f) in named.items()},
            max_grad_norm=max_grad_norm, second_order=second_order,
        )
        for n, memory in state.items():
            self._remember(named[n][0], memory)
        return stats

    def state_dict(self) -> dict[str, Any]:
        """The ``torch.optim`` state dict plus ``phi`` (``"learned"``), for exact resumption.

        The memory is copied: a rule may update it in place (the MLP rule's memory is a view of
        buffers it keeps between steps), and the state dict is a snapshot of this step.
        """
        packed = super().state_dict()
        packed["state"] = {
            index: {key: value.clone(memory_format=torch.contiguous_format)
                    if isinstance(value, Tensor) else value for key, value in state.items()}
            for index, state in packed["state"].items()
        }
        return {**packed, "learned": self.learned.payload()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore memory and param groups, and ``phi``'s weights in place (so a meta-optimizer
        holding ``phi`` keeps working; the rule's step units stay). A state dict without
        ``"learned"`` keeps the current ``phi``.

        Raises:
            L2LError: the stored ``phi`` is another rule or configuration than this optimizer's.
        """
        state_dict = dict(state_dict)
        payload = state_dict.pop("learned", None)
        if payload is not None:
            stored = type(self.learned).from_payload(
                payload, source="the optimizer state dict", config=self.learned.config
            )
            self.learned.load_state_dict(stored.state_dict())
        super().load_state_dict(state_dict)
