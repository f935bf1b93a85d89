"""The MLP rule's batched computation (:mod:`~l2l_gail.core.mlp_rule`): ``phi`` folded into the
form its steps use (:func:`fold`, :func:`first_layer`), and the flat buffers of its steps without
a graph (:class:`FlatBuffers`).

The optimizer keeps the buffers from step to step (:meth:`MLPRule.step_in_place
<l2l_gail.core.mlp_rule.MLPRule.step_in_place>`): the rule's memory lives in them, so nothing is
gathered or scattered per tensor at each step, every view a step uses is made once, and what the
step derives from ``phi`` alone is kept while ``phi`` is unchanged.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from l2l_gail.core.mlp_rule import MLPRule, MLPRuleConfig
    from l2l_gail.core.rule import Memory


@functools.lru_cache(maxsize=64)
def segments(sizes: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """For a flat batch of tensors of ``sizes``: each coordinate's tensor index, and
    ``1 / size`` of each tensor as a column."""
    count = torch.tensor(sizes, device=device)
    return (torch.repeat_interleave(torch.arange(len(sizes), device=device), count),
            1.0 / count.unsqueeze(1))


def cat_like(tensors: Sequence[Tensor], like: dict[str, Any], dim: int = 0) -> Tensor:
    """``torch.cat`` on ``like``'s device and dtype (no copy when already there)."""
    out = torch.cat(list(tensors), dim)
    return out if out.dtype == like["dtype"] and out.device == like["device"] else out.to(**like)


def flat(tensors: Sequence[Tensor], like: dict[str, Any]) -> Tensor:
    """All coordinates of ``tensors`` as one flat tensor on ``like``'s device and dtype."""
    return cat_like([t.reshape(-1) for t in tensors], like)


def next_counts(counts: Sequence[float]) -> list[Tensor]:
    """Each tensor's count after an update from ``counts`` (one tensor for all when the counts
    agree)."""
    if len(set(counts)) == 1:
        return [torch.tensor([counts[0] + 1.0])] * len(counts)
    return list(torch.tensor(counts).add_(1.0).split(1))


def blocks(config: MLPRuleConfig) -> int:
    """Row blocks of ``hidden_size`` rows the first layer's product has (see :func:`fold`):
    the direct part and the part to divide by Adam's denominator, and with ``sign_symmetric``
    the even part."""
    return 3 if config.sign_symmetric else 2


class Folded(NamedTuple):
    """``phi`` as the steps use it (see :func:`fold`)."""

    template: Tensor
    """The first layer's weights on the rows of parameter, gradient and momenta, by output
    block: ``(blocks, hidden_size, 2 + len(decays))``."""
    time_weight: Tensor
    """The first layer's weights on the time embedding, transposed."""
    bias: Tensor
    """The first layer's bias."""
    hidden: list[tuple[Tensor, Tensor]]
    """Each hidden layer's bias (a column) and weight."""
    head_bias: Tensor
    """The output layer's bias (a column), ``step_mult`` and ``exp_mult`` folded in."""
    head_weight: Tensor
    """The output layer's weight, ``step_mult`` and ``exp_mult`` folded in."""


def fold(rule: MLPRule) -> Folded:
    """``rule``'s weights ``phi`` as the steps use them: the first layer's weights on the feature
    rows as a template of row blocks (:func:`blocks`), the output layer scaled; differentiable.

    The Adam directions ``m_k / d`` (``d`` the denominator, one number per coordinate) are
    not features: their weights ``W_a`` make a block of their own, on the momenta's rows,
    and ``W_a (m / d) = (W_a m) / d`` is taken after the product, so the product runs over
    ``2 + len(decays)`` rows instead of ``2 + 2 len(decays)`` and the directions are never
    stored. With ``sign_symmetric``, the parameter's weights make a third block, the even
    part, and the first block keeps the odd rows.
    """
    cfg = rule.config
    k, pad = len(cfg.decays), nn.functional.pad
    on_x, on_adam, on_time = rule.inp.weight.split((2 + k, k, len(cfg.time_scales)), 1)
    parts = [on_x, pad(on_adam, (2, 0))]
    if cfg.sign_symmetric:
        parts = [pad(on_x[:, 1:], (1, 0)), parts[1], pad(on_x[:, :1], (0, 1 + k))]
    scale = rule.output_scale
    # exp_mult and step_mult folded into the head's two rows: 2 x hidden products instead
    # of two passes over every coordinate
    return Folded(torch.stack(parts), on_time.t(), rule.inp.bias,
                  [(layer.bias.unsqueeze(1), layer.weight)
                   for layer in cast(Iterable[nn.Linear], rule.hidden)],
                  rule.head.bias.unsqueeze(1) * scale, rule.head.weight * scale)


def first_layer(phi: Folded, norm_eps: Tensor, norms: Tensor, inv_size: Tensor,
                corrections: Tensor, time: Tensor, buffers: FlatBuffers | None = None,
                ) -> tuple[Iterable[Tensor], Iterable[Tensor]]:
    """Each tensor's first layer, with what is constant over the tensor folded in.

    Args:
        phi: the rule's weights (:func:`fold`).
        norm_eps: the normaliser's epsilon, a tensor.
        norms: the Euclidean norm of each tensor's rows of parameter, gradient and momenta,
            ``(tensors, 2 + len(decays))``.
        inv_size: ``1 / numel`` of each tensor, ``(tensors, 1)``.
        corrections, time: Adam's bias corrections and the time embedding of
            :meth:`~l2l_gail.core.mlp_rule.MLPRuleConfig.schedules`, one row for all tensors
            or one per tensor.
        buffers: where to compute them (without a graph).

    Returns:
        Each tensor's weights on its feature rows, ``(blocks * hidden_size, 2 +
        len(decays))``, the normalisers folded into the feature columns and Adam's bias
        corrections into the Adam block's, and its biases, ``(blocks * hidden_size, 1)``,
        the time embedding's share folded into the block with the bias.
    """
    normalisers = torch.addcmul(norm_eps, norms.square(), inv_size)
    shared = len(time) == 1
    if buffers is not None:
        torch.rsqrt(normalisers, out=buffers.normalisers)
        buffers.corrections.copy_(corrections)
        if len(phi.template) == 3:  # sign-symmetric: the even block's normalisers
            buffers.factors[:, 2].copy_(buffers.factors[:, 0])
        torch.addmm(phi.bias, time, phi.time_weight,
                    out=buffers.shared_bias if shared else buffers.bias_block)
        torch.mul(phi.template, buffers.factors, out=buffers.weights)
        tensor_biases = buffers.tensor_biases
        return (buffers.tensor_weights,
                [tensor_biases[0]] * len(tensor_biases) if shared else tensor_biases)
    tensors = len(normalisers)
    normalisers = normalisers.rsqrt()
    corrections = nn.functional.pad(corrections, (2, 0)).expand(tensors, -1)
    factors = [normalisers, corrections, normalisers][:len(phi.template)]
    weights = (phi.template * torch.stack(factors, 1).unsqueeze(2)).flatten(1, 2)
    bias, rows = torch.addmm(phi.bias, time, phi.time_weight), weights.shape[1]
    before = rows - bias.shape[1] if len(phi.template) == 3 else 0
    biases = nn.functional.pad(bias, (before, rows - bias.shape[1] - before))
    return weights, biases.unsqueeze(2).expand(tensors, -1, -1)


SCHEDULE_ROWS = 256
"""Steps whose per-tensor constants the optimizer's buffers compute at once."""


class FlatBuffers:
    """Flat buffers for the steps of tensors of the given shapes, without a graph.

    ``x`` holds the features of all coordinates that the first layer multiplies, one row each:
    the parameter, the gradient and the momenta. Its momenta rows and ``v`` are the memory
    itself: the optimizer keeps the buffers from step to step, each parameter's state holding
    views of its columns (and ``count``, the count of all tensors while they agree). ``d`` holds
    Adam's denominator and then the step, ``a`` the first layer's product and then the hidden
    layers' activations; the output layer writes into ``x``'s first two rows, free by then.
    """

    def __init__(self, shapes: Sequence[torch.Size], config: MLPRuleConfig, like: dict[str, Any],
                 *, key: object = None, schedule_rows: int = 1) -> None:
        k, hidden, n_blocks = len(config.decays), config.hidden_size, blocks(config)
        self.key, self.like, self.config, self.schedule_rows = key, like, config, schedule_rows
        self.sizes = [math.prod(shape) for shape in shapes]
        ends = list(itertools.accumulate(self.sizes))
        columns = [slice(end - size, end) for size, end in zip(self.sizes, ends, strict=True)]
        n, tensors = ends[-1], len(shapes)
        self.inv_size = 1.0 / torch.tensor(self.sizes, **like).unsqueeze(1)
        self.x = torch.zeros(2 + k, n, **like)
        self.v, self.d = torch.zeros(n, **like), torch.zeros(n, **like)
        self.a = torch.empty(n_blocks * hidden, n, **like)
        self.weights = torch.empty(tensors, n_blocks, hidden, 2 + k, **like)
        # zeros where the weights' template is zero, and where no bias is added
        self.factors = torch.zeros(tensors, n_blocks, 1, 2 + k, **like)
        self.biases = torch.zeros(tensors, n_blocks, hidden, **like)
        self.count = torch.zeros(1)
        self.phi: tuple[object, Any, tuple[Tensor, ...]] | None = None
        self._schedule_start = math.nan
        self._schedule: tuple[Tensor, Tensor, list[float]] = (torch.empty(0), torch.empty(0), [])
        # The views used at every step, made once (a view costs about what a small operation
        # does), and in grad mode: views made without grad could not be changed in place with
        # grad enabled, and the state's memory is such a view.
        with torch.enable_grad():
            x = self.x
            self.g, self.momenta_rows = x[1], x[2:]
            self.g_rows = self.g.expand(k, -1)
            self.head = x[:2]
            self.direction, self.magnitude = self.head.unbind(0)
            self.parts = self.a.split(hidden)  # the blocks (see blocks())
            self.mirror_step = self.a[hidden]
            self.normalisers, self.corrections = self.factors[:, 0, 0], self.factors[:, 1, 0, 2:]
            self.bias_block = self.biases[:, -1 if config.sign_symmetric else 0]
            self.shared_bias = self.bias_block[:1]
            pairs = list(zip(columns, shapes, strict=True))
            self.params = [x[0, c].view(shape) for c, shape in pairs]
            self.inputs = [*self.params, *(x[1, c].view(shape) for c, shape in pairs)]
            self.steps = [self.d[c].view(shape) for c, shape in pairs]
            self.momenta = [x[2:, c] for c in columns]
            self.second_moments = [self.v[c] for c in columns]
            self.denominators = [self.d[c] for c in columns]
            self.features = [x[:, c] for c in columns]
            self.outputs = [self.a[:, c] for c in columns]
            self.tensor_weights = [w.view(-1, 2 + k) for w in self.weights.unbind(0)]
            self.tensor_biases = [b.view(-1, 1) for b in self.biases.unbind(0)]

    def load(self, memory: Sequence[Memory]) -> list[float]:
        """Copy each tensor's memory into the buffers; return the tensors' counts."""
        for mem, momenta, second_moment in zip(memory, self.momenta, self.second_moments,
                                               strict=True):
            momenta.copy_(mem[0])
            second_moment.copy_(mem[1])
        return [float(mem[2]) for mem in memory]

    def adopt(self, states: Sequence[dict[str, Any]],
              memory_of: Callable[[dict[str, Any], int], Memory]) -> list[float]:
        """Make each parameter's ``torch.optim`` state hold views of the buffers, copying in the
        memory it holds otherwise (``memory_of`` gives it, fresh if there is none); return the
        tensors' counts. Tensors with one count share the tensor ``count``."""
        for state, size, momenta, second_moment in zip(states, self.sizes, self.momenta,
                                                       self.second_moments, strict=True):
            if state.get("momenta") is not momenta or state.get("second_moment") is not second_moment:
                held = memory_of(state, size)
                momenta.copy_(held[0])
                second_moment.copy_(held[1])
                state["momenta"], state["second_moment"] = momenta, second_moment
        if all(state["step"] is self.count for state in states):
            return [float(self.count)] * len(states)
        counts = [float(state["step"]) for state in states]
        if len(set(counts)) == 1:
            self.count.fill_(counts[0])
            for state in states:
                state["step"] = self.count
        return counts

    def advance(self, states: Sequence[dict[str, Any]], counts: Sequence[float]) -> None:
        """Count the update just made from :meth:`adopt`'s ``counts`` in each state."""
        if all(state["step"] is self.count for state in states):
            self.count.add_(1.0)
        else:
            for state, count in zip(states, next_counts(counts), strict=True):
                state["step"] = count

    def folded(self, phi: tuple[Tensor, ...], fold: Callable[[], Any]) -> Any:
        """``fold()``, made again only when a tensor of ``phi`` has changed since it was last
        made: replaced (another tensor or other storage) or changed in place (its version
        counter, which every in-place change advances, e.g. a meta-optimizer's step)."""
        key = tuple((id(p), p._version, p.data_ptr()) for p in phi)  # noqa: SLF001 (no public API)
        if self.phi is None or self.phi[0] != key:
            self.phi = (key, fold(), phi)  # phi kept: the ids in the key stay its tensors'
        return self.phi[1]

    def constants(self, counts: Sequence[float]) -> tuple[Tensor, Tensor, list[float]]:
        """The :meth:`MLPRuleConfig.schedules` of ``counts``: the corrections and the time
        embedding, one row for all tensors when their counts agree (as usual) and else one row
        per tensor; and each tensor's eps.

        When all counts agree the row comes from a table of the next ``schedule_rows`` counts,
        made when the count leaves it: one table made every so many steps instead of a row at
        every step.
        """
        k, times = len(self.config.decays), len(self.config.time_scales)
        if len(set(counts)) > 1:
            rows = self.config.schedules(counts)
            corrections, _, time = rows.to(**self.like).split((k, 1, times), 1)
            return corrections, time, rows[:, k].tolist()
        offset = counts[0] - self._schedule_start
        if not (0 <= offset < self.schedule_rows and offset.is_integer()):
            self._schedule_start, offset = counts[0], 0.0
            table = self.config.schedules([counts[0] + i for i in range(self.schedule_rows)])
            corrections, _, time = table.to(**self.like).split((k, 1, times), 1)
            self._schedule = (corrections, time.unsqueeze(1), table[:, k].tolist())
        row = int(offset)
        corrections, time, eps = self._schedule
        return corrections[row], time[row], [eps[row]] * len(counts)
