"""The flat buffers of the MLP rule's steps without a graph (:mod:`~l2l_gail.core.mlp_rule`).

The optimizer keeps them from step to step (:meth:`MLPRule.step_in_place
<l2l_gail.core.mlp_rule.MLPRule.step_in_place>`): the rule's memory lives in them, so nothing is
gathered or scattered per tensor at each step, and every view a step uses is made once.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from l2l_gail.core.mlp_rule import MLPRuleConfig
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


SCHEDULE_ROWS = 64
"""Steps whose per-tensor constants the optimizer's buffers compute at once."""


class FlatBuffers:
    """Flat buffers for the steps of tensors of the given shapes, without a graph.

    ``x`` holds the features of all coordinates, one row per input of the first layer but the
    time: the parameter, the gradient, the momenta and the Adam directions. Its momenta rows and
    ``v`` are the memory itself: the optimizer keeps the buffers from step to step, each
    parameter's state holding views of its columns (and ``count``, the count of all tensors while
    they agree).
    """

    def __init__(self, shapes: Sequence[torch.Size], config: MLPRuleConfig, like: dict[str, Any],
                 *, key: object = None, schedule_rows: int = 1) -> None:
        k, hidden = len(config.decays), config.hidden_size
        self.key, self.like, self.config, self.schedule_rows = key, like, config, schedule_rows
        self.sizes = [math.prod(shape) for shape in shapes]
        ends = list(itertools.accumulate(self.sizes))
        columns = [slice(end - size, end) for size, end in zip(self.sizes, ends, strict=True)]
        n = ends[-1]
        self.inv_size = 1.0 / torch.tensor(self.sizes, **like).unsqueeze(1)
        self.x = torch.zeros(2 + 2 * k, n, **like)
        self.v, self.denominator = torch.zeros(n, **like), torch.zeros(n, **like)
        self.step = self.denominator  # free once the Adam directions are made
        self.first, self.spare = (torch.empty(hidden, n, **like) for _ in range(2))
        self.head = torch.empty(2, n, **like)
        self.weights = torch.empty(len(shapes), hidden, 2 + 2 * k, **like)
        if config.sign_symmetric:
            self.mirror, self.mirror_step = torch.empty(hidden, n, **like), torch.empty(n, **like)
        self.count = torch.zeros(1)
        self._schedule_start = math.nan
        self._schedule_table = torch.empty(0)
        self._schedule_rows: list[list[float]] = []
        # The views used at every step, made once (a view costs about what a small operation
        # does), and in grad mode: views made without grad could not be changed in place with
        # grad enabled, and the state's memory is such a view.
        with torch.enable_grad():
            x = self.x
            self.g, self.momenta_rows, self.adam_rows = x[1], x[2:k + 2], x[k + 2:]
            self.g_rows = self.g.expand(k, -1)
            self.direction, self.magnitude = self.head.unbind(0)
            pairs = list(zip(columns, shapes, strict=True))
            self.params = [x[0, c].view(shape) for c, shape in pairs]
            self.grads = [x[1, c].view(shape) for c, shape in pairs]
            self.steps = [self.step[c].view(shape) for c, shape in pairs]
            self.momenta = [x[2:k + 2, c] for c in columns]
            self.second_moments = [self.v[c] for c in columns]
            self.denominators = [self.denominator[c] for c in columns]
            self.normalised = [x[:k + 2, c] for c in columns]
            self.features = [x[:, c] for c in columns]
            self.even_features = [x[:1, c] for c in columns]
            self.odd_features = [x[1:, c] for c in columns]
            self.firsts = [self.first[:, c] for c in columns]
            self.spares = [self.spare[:, c] for c in columns]
            self.tensor_weights = list(self.weights.unbind(0))
            self.even_weights = [w[:, :1] for w in self.tensor_weights]
            self.odd_weights = [w[:, 1:] for w in self.tensor_weights]

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

    def constants(self, counts: Sequence[float]) -> tuple[Tensor, list[float]]:
        """Each tensor's :meth:`MLPRuleConfig.schedule`, as rows ``(tensors, columns)``, and eps.

        When all counts agree (as usual) the rows come from a table of the next
        ``schedule_rows`` counts, made when the count leaves it: one tensor made every so many
        steps instead of one at every step.
        """
        k = len(self.config.decays)
        if len(set(counts)) > 1:
            rows = [self.config.schedule(c) for c in counts]
            return torch.tensor(rows, **self.like), [row[k] for row in rows]
        offset = counts[0] - self._schedule_start
        if not (0 <= offset < self.schedule_rows and offset.is_integer()):
            self._schedule_start, offset = counts[0], 0.0
            self._schedule_rows = [self.config.schedule(counts[0] + i)
                                   for i in range(self.schedule_rows)]
            self._schedule_table = torch.tensor(self._schedule_rows, **self.like)
        row = int(offset)
        eps = self._schedule_rows[row][k]
        return self._schedule_table[row].expand(len(counts), -1), [eps] * len(counts)
