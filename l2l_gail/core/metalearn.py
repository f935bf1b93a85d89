"""Meta-training helpers: train ``phi`` on the optimizee's loss measured after learned updates.

* :func:`meta_step` -- one clipped, finiteness-checked step of the optimizer of ``phi`` on an
  objective measured after the update(s); used by every learned inner optimizer of the core
  (the update rules and the learned attacker).
* :func:`unroll` -- truncated back-propagation through ``T`` learned updates (offline
  meta-training, Andrychowicz et al. 2016, arXiv 1606.04474; Serban et al., arXiv 2008.05247).
* :func:`lookahead_step` -- one learned update trained on a held-out batch (online training, the
  L2L-GAIL discriminator update; ``docs/design.md``).
* :func:`trainable_params`, :func:`write_params`, :func:`detach_state` -- moving parameters
  between a module and the functional ``dict[str, Tensor]`` form.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from l2l_gail.core.rule import Memory, Params, State, UpdateRule, l2_norm
from l2l_gail.errors import L2LError


@dataclasses.dataclass(frozen=True)
class MetaStepStats:
    """What one step on ``phi`` saw: the objective and the (pre-clipping) gradient norm."""

    meta_loss: float
    grad_norm: float


@dataclasses.dataclass(frozen=True)
class LookaheadStats:
    """One online look-ahead step: train loss before (NaN when the step was given gradients),
    held-out loss after, step sizes."""

    train_loss: float
    meta_loss: float
    update_norm: float
    meta_grad_norm: float


@dataclasses.dataclass(frozen=True)
class StepLoss:
    """An unroll loss function's answer when the gradient the rule reads and the meta-loss term
    come from different losses at the same parameters (e.g. clean gradients with an adversarial
    meta-loss, as ``l2l meta train --gradient clean`` does)."""

    grad: Tensor
    """The loss whose gradient the rule reads next."""
    meta: Tensor
    """The meta-loss term at these parameters."""


UnrollLoss = Callable[[Params, int], Tensor | StepLoss]
"""``(params, step) -> loss``: one tensor serves as both gradient source and meta-loss term."""


@dataclasses.dataclass
class UnrollResult:
    """The outcome of :func:`unroll`.

    ``terms``, ``meta_loss`` and the final ``params`` / ``state`` still carry the graph back to
    ``phi``, so the caller may add terms (e.g. a final clean-batch loss) before
    :func:`meta_step`; the next :func:`unroll` detaches them, which is what truncates
    back-propagation.
    """

    terms: list[Tensor]
    """The meta-loss term after each of the ``T`` updates."""
    meta_loss: Tensor
    """Their sum (Andrychowicz et al. 2016, eq. 3 with ``w_t = 1``)."""
    params: Params
    state: State


def meta_step(
    objective: Tensor, meta_opt: torch.optim.Optimizer, *, max_grad_norm: float | None = 1.0
) -> MetaStepStats:
    """One step of ``meta_opt`` on the objective measured after the learned update(s).

    Only the tensors ``meta_opt`` holds receive gradients (``torch.autograd.grad``, not
    ``backward``), so the optimizee's parameters and any module the objective touched keep
    their ``.grad`` untouched. Their ``.grad`` is replaced, not accumulated. The gradient is
    clipped to ``max_grad_norm`` (``None``: not clipped) because unrolled meta-gradients are
    heavy-tailed (a single bad unroll otherwise wrecks ``phi``). Works for any learned inner
    optimizer.

    Raises:
        L2LError: the objective or its gradient is not finite (the meta-training diverged).
    """
    value = float(objective.detach())
    if not math.isfinite(value):
        raise L2LError(
            f"the meta-loss is {value}: meta-training diverged; lower the meta learning rate "
            "or bound the learned steps (e.g. the LSTM rule's output_scale / max_step)"
        )
    params = [p for group in meta_opt.param_groups for p in group["params"] if p.requires_grad]
    grads = [
        torch.zeros_like(p) if g is None else g
        for p, g in zip(params, torch.autograd.grad(objective, params, allow_unused=True),
                        strict=True)
    ]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    if max_grad_norm is None:
        norm = l2_norm(grads)
    else:
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    if not math.isfinite(norm):
        raise L2LError(
            "the meta-gradient is not finite: meta-training diverged; lower the meta learning "
            "rate or bound the learned steps (e.g. the LSTM rule's output_scale / max_step)"
        )
    meta_opt.step()
    return MetaStepStats(meta_loss=value, grad_norm=norm)


def trainable_params(module: nn.Module, names: Iterable[str] | None = None) -> Params:
    """The module's trainable parameters as detached leaves that require grad.

    They share storage with the module, so they are the starting point of a functional
    unroll without copying; ``names`` restricts the selection.
    """
    wanted = None if names is None else set(names)
    return {
        name: p.detach().requires_grad_()
        for name, p in module.named_parameters()
        if p.requires_grad and (wanted is None or name in wanted)
    }


@torch.no_grad()
def write_params(module: nn.Module, params: Mapping[str, Tensor]) -> None:
    """Copy ``params`` into the module's parameters of the same names, in place."""
    for name, value in params.items():
        module.get_parameter(name).copy_(value)


def detach_state(state: Mapping[str, Memory]) -> State:
    """The same memory cut from the graph: the truncation point of truncated BPTT."""
    return {name: tuple(t.detach() for t in memory) for name, memory in state.items()}


def unroll(
    rule: UpdateRule,
    params: Mapping[str, Tensor],
    loss_fn: UnrollLoss,
    steps: int,
    *,
    state: Mapping[str, Memory] | None = None,
    start: int = 0,
    second_order: bool = False,
) -> UnrollResult:
    """One truncation of back-propagation through time over ``steps`` learned updates.

    ``loss_fn(params, t)`` is the optimizee's loss at optimizer step ``t`` on a batch the caller
    picks (clean, FGSM or PGD against the current parameters, ...), usually via
    ``torch.func.functional_call(module, params, x)``. Its first call, at ``t = start`` on the
    incoming parameters, only supplies the first gradient; each later call gives both the next
    gradient's source and a meta-loss term -- one tensor for both, or a :class:`StepLoss` when
    they differ. So an unroll costs ``steps + 1`` forward and backward passes, and the
    meta-loss is the sum of the ``steps`` terms (Andrychowicz et al. 2016, eq. 3, ``w_t = 1``).

    Args:
        rule: the update rule being meta-trained.
        params: the optimizee's parameters; detached here, which truncates the previous unroll.
        loss_fn: ``(params, step) -> loss or StepLoss``.
        steps: the truncation length ``T`` (20 in 2008.05247).
        state: the rule's memory (detached here); fresh when omitted.
        start: the index of the first step, so that ``loss_fn`` can pick batches across
            consecutive truncations.
        second_order: differentiate through the optimizee's gradients (costly; off in the
            papers' default setting).
    """
    if steps < 1:
        raise ValueError(f"an unroll needs at least one step, got {steps}")
    current: Params = {n: p.detach().requires_grad_() for n, p in params.items()}
    memory = rule.init_state(current) if state is None else detach_state(state)
    loss = _split(loss_fn(current, start))[0]
    terms: list[Tensor] = []
    for t in range(steps):
        names = list(current)
        grads = torch.autograd.grad(
            loss, [current[n] for n in names], retain_graph=t > 0,
            create_graph=second_order, allow_unused=True,
        )
        current, memory, _ = rule.update(
            current, dict(zip(names, grads, strict=True)), memory,
            create_graph=True, second_order=second_order,
        )
        loss, term = _split(loss_fn(current, start + t + 1))
        terms.append(term)
    return UnrollResult(terms=terms, meta_loss=torch.stack(terms).sum(), params=current,
                        state=memory)


def _split(loss: Tensor | StepLoss) -> tuple[Tensor, Tensor]:
    return (loss.grad, loss.meta) if isinstance(loss, StepLoss) else (loss, loss)


def lookahead_step(
    rule: UpdateRule,
    module: nn.Module,
    state: Mapping[str, Memory] | None,
    train_loss: Callable[[Params], Tensor] | Mapping[str, Tensor],
    heldout_loss: Callable[[Params], Tensor],
    meta_opt: torch.optim.Optimizer,
    *,
    names: Iterable[str] | None = None,
    scale: float | Mapping[str, float] = 1.0,
    max_grad_norm: float | None = 1.0,
    second_order: bool = False,
) -> tuple[State, LookaheadStats]:
    """One online learned step whose ``phi`` is trained on a held-out batch after the step.

    The L2L-GAIL discriminator update (``docs/design.md``): gradients of ``train_loss`` at the
    module's current parameters, one learned update, ``heldout_loss`` of the updated parameters
    on a fresh batch, one :func:`meta_step` on ``phi``, then the updated parameters (the ones
    just evaluated) are written back into ``module``, detached. Measuring the objective on
    held-out data is what keeps ``phi`` from learning to over-fit the training batch.

    Online, ``phi`` chases a moving optimizee, so it needs a smaller meta learning rate than
    offline unrolled meta-training: on a small MLP regression, Adam at 1e-3 on ``phi`` trained
    the MLP steadily, while 3e-3 and 1e-2 first sped up and then diverged (steps grew until
    they overshot), with or without ``max_step``.

    Args:
        rule: the update rule (``meta_opt`` holds its parameters).
        module: the optimizee, updated in place.
        state: the rule's memory for ``module``'s parameters; fresh when ``None``.
        train_loss: ``params -> loss`` on the training batch (via ``functional_call``), or the
            training gradients at the module's current parameters, by name, when the caller has
            computed them already (L2L-GAIL also feeds them to its Adam reference); they are
            constants to the meta-gradient, so not with ``second_order``, and the statistics'
            ``train_loss`` is then NaN.
        heldout_loss: ``params -> loss`` on the held-out batch.
        meta_opt: the optimizer of ``phi`` (Adam in both papers).
        names: the parameters to update (default: every trainable parameter).
        scale: a factor on the learned step (see :meth:`UpdateRule.update`).
        max_grad_norm: clipping of the meta-gradient.
        second_order: differentiate through the training gradients.

    Returns:
        The new (detached) memory and the step's statistics.
    """
    params = trainable_params(module, names)
    memory = rule.init_state(params) if state is None else detach_state(state)
    names_list = list(params)
    grads: list[Tensor | None]
    if isinstance(train_loss, Mapping):
        if second_order:
            raise ValueError("lookahead_step: second_order needs train_loss, not gradients")
        loss, grads = torch.tensor(math.nan), [train_loss.get(n) for n in names_list]
    else:
        loss = train_loss(params)
        grads = list(torch.autograd.grad(
            loss, [params[n] for n in names_list], create_graph=second_order, allow_unused=True
        ))
    new_params, memory, update = rule.update(
        params, dict(zip(names_list, grads, strict=True)), memory,
        create_graph=True, second_order=second_order, scale=scale,
    )
    meta = meta_step(heldout_loss(new_params), meta_opt, max_grad_norm=max_grad_norm)
    write_params(module, new_params)
    stats = LookaheadStats(
        train_loss=float(loss.detach()), meta_loss=meta.meta_loss,
        update_norm=update.update_norm, meta_grad_norm=meta.grad_norm,
    )
    return detach_state(memory), stats
