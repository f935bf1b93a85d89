"""The interface of a learned update rule ``g_phi``, and its functional update.

A learned update rule proposes each parameter coordinate's additive step from that coordinate's
gradient and the rule's own memory of earlier gradients: ``theta_{t+1} = theta_t + g_phi(grad_t,
memory_t)`` (Andrychowicz et al., *Learning to learn by gradient descent by gradient descent*,
NeurIPS 2016, arXiv 1606.04474). The same ``phi`` serves every coordinate of every parameter, so
one rule serves a model of any size.

:class:`UpdateRule` is the interface the rest is written against: the meta-training helpers of
:mod:`l2l_gail.core.metalearn`, the ``torch.optim`` wrapper
:class:`~l2l_gail.core.optim.LearnedOptimizer`, the versioned file of
:mod:`l2l_gail.core.rule_file` and the GAIL trainers. It provides the functional verbs
:meth:`~UpdateRule.init_state` and :meth:`~UpdateRule.update` over ``dict[str, Tensor]``
parameters, differentiable in ``phi``. A rule implements three things --
:meth:`~UpdateRule.init_memory`, :meth:`~UpdateRule.steps` and :attr:`~UpdateRule.never_steps` --
and declares its file format and configuration type. Two rules implement it:
:class:`~l2l_gail.core.lstm_rule.LSTMRule` (the coordinatewise LSTM) and
:class:`~l2l_gail.core.mlp_rule.MLPRule` (a per-parameter MLP over Adam-like features).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import Tensor, nn

from l2l_gail.core import rule_file
from l2l_gail.core.rule_file import STEP_UNITS, StepUnits
from l2l_gail.errors import L2LError

Params = dict[str, Tensor]
"""Parameters by name, as ``torch.func.functional_call`` takes them."""
Memory = tuple[Tensor, ...]
"""A rule's memory of some coordinates (for the LSTM rule: ``(h, c)``)."""
State = dict[str, Memory]
"""A rule's memory for each parameter, by name."""


@dataclasses.dataclass(frozen=True)
class UpdateStats:
    """Norms of one learned update over all coordinates it touched."""

    update_norm: float
    grad_norm: float


def l2_norm(tensors: Iterable[Tensor]) -> float:
    """The Euclidean norm of all coordinates of ``tensors`` together (0 for none), in double."""
    squares = [t.detach().double().square().sum() for t in tensors]
    return math.sqrt(float(torch.stack(squares).sum())) if squares else 0.0


class UpdateRule(nn.Module, abc.ABC):
    """A coordinatewise learned update rule ``g_phi`` (its weights are ``phi``).

    Subclasses set :attr:`file_format`, :attr:`name`, :attr:`config_type` and :attr:`memory_keys`,
    keep this constructor's signature, and implement :meth:`init_memory`, :meth:`steps` and
    :attr:`never_steps`.

    Args:
        config: the rule's configuration (an instance of :attr:`config_type`).
        step_units: how the rule's output is to be applied (see
            :data:`~l2l_gail.core.rule_file.StepUnits`); stored in its file so that
            :class:`~l2l_gail.core.optim.LearnedOptimizer` applies it right.
    """

    file_format: ClassVar[str]
    """The ``format`` field of this rule's file (:mod:`l2l_gail.core.rule_file`)."""
    name: ClassVar[str]
    """The rule's short name (``"lstm"``, ``"mlp"``), as ``--rule`` options take it
    (:func:`~l2l_gail.core.rule_file.rule_type`)."""
    config_type: ClassVar[type]
    """The frozen dataclass of the rule's configuration, rebuilt from the file's ``config``."""
    memory_keys: ClassVar[tuple[str, ...]]
    """Names of the memory tensors, as :class:`~l2l_gail.core.optim.LearnedOptimizer` stores them
    in its per-parameter state."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "file_format" in cls.__dict__:
            rule_file.register(cls)

    def __init__(self, config: Any, *, step_units: StepUnits = "absolute") -> None:
        super().__init__()
        self.config = config
        self.step_units = step_units

    @property
    def step_units(self) -> StepUnits:
        """``absolute`` or ``lr``: how the rule's output is meant to be applied."""
        return self._step_units

    @step_units.setter
    def step_units(self, units: StepUnits) -> None:
        if units not in STEP_UNITS:
            raise L2LError(f"step_units must be one of {', '.join(STEP_UNITS)}, got {units!r}")
        self._step_units: StepUnits = units

    # -- what a rule implements ------------------------------------------------------------

    @abc.abstractmethod
    def init_memory(self, n_coords: int) -> Memory:
        """Fresh memory for ``n_coords`` coordinates, on ``phi``'s device."""

    @abc.abstractmethod
    def steps(self, grads: Sequence[Tensor], memory: Sequence[Memory],
              params: Sequence[Tensor]) -> tuple[list[Tensor], list[Memory]]:
        """The steps for several tensors at once, and each tensor's new memory.

        ``params`` are the tensors' current values, in the order of ``grads``: a rule may read
        them (the MLP rule does, as in learned_optimization) or not (the LSTM does not).
        Returns one step per gradient (same shape, dtype and device as the gradient).
        Differentiable in ``phi`` (and in the gradients and parameters) when autograd is enabled.
        """

    @property
    @abc.abstractmethod
    def never_steps(self) -> bool:
        """True when the rule's step is zero for every gradient (a fresh rule's zero output), so
        applying it as it is would never move the parameters."""

    # -- the optimizer's in-place step ----------------------------------------------------------

    def memory_of(self, state: dict[str, Any], n_coords: int) -> Memory:
        """The memory held in ``state`` (a parameter's ``torch.optim`` state, memory under
        :attr:`memory_keys`), stored there fresh from :meth:`init_memory` if it has none."""
        if self.memory_keys[0] not in state:
            state.update(zip(self.memory_keys, self.init_memory(n_coords), strict=True))
        return tuple(state[key] for key in self.memory_keys)

    def step_in_place(self, params: Sequence[Tensor], grads: Sequence[Tensor],
                      factors: Sequence[float], states: Sequence[dict[str, Any]],
                      workspace: dict[str, Any]) -> None:
        """``p += factor * g_phi(grad, memory)`` for every parameter, in place and without a
        graph, with each parameter's memory read from and written to its ``states`` entry (as
        :meth:`memory_of`): :class:`~l2l_gail.core.optim.LearnedOptimizer`'s step.

        This implementation calls :meth:`steps`. A rule may override it to keep buffers from
        step to step in ``workspace``, a dict its caller keeps for the purpose (empty at
        first), if it takes the same steps as :meth:`steps` up to rounding and leaves the
        memory in ``states`` in the same format.
        """
        memory = [self.memory_of(state, p.numel()) for p, state in zip(params, states, strict=True)]
        steps, memory = self.steps(grads, memory, params)
        for p, step, factor, state, mem in zip(params, steps, factors, states, memory, strict=True):
            p.add_(step, alpha=factor)
            state.update(zip(self.memory_keys, mem, strict=True))

    # -- the functional update ------------------------------------------------------------

    def init_state(self, params: Mapping[str, Tensor]) -> State:
        """Fresh memory for every coordinate of ``params``."""
        return {name: self.init_memory(p.numel()) for name, p in params.items()}

    def update(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor | None],
        state: Mapping[str, Memory],
        *,
        create_graph: bool,
        second_order: bool = False,
        scale: float | Mapping[str, float] = 1.0,
    ) -> tuple[Params, State, UpdateStats]:
        """Apply one learned step: ``theta + scale * g_phi(grad, memory)``.

        Args:
            params: current parameters by name.
            grads: their gradients by name; a missing or ``None`` gradient leaves that parameter
                and its memory as they are (like ``torch.optim`` skips parameters without
                ``.grad``).
            state: the memory from :meth:`init_state` or a previous ``update``.
            create_graph: keep the graph from the new parameters back to ``phi`` (and to the
                incoming parameters), for meta-training; ``False`` returns detached tensors.
            second_order: also differentiate through the gradients. Off by default, as in
                Serban et al. (arXiv 2008.05247) and the first-order variant of Andrychowicz et
                al.: the gradients are detached, which drops the Hessian terms and most of the
                cost.
            scale: a factor on the learned step, per name or for all (a learning-rate ratio).

        Returns:
            ``(new_params, new_state, stats)`` with the same names as ``params``.
        """
        given = {n: g for n, g in grads.items() if g is not None}
        unknown = (set(grads) - set(params)) | (set(given) - set(state))
        if unknown:
            raise ValueError(f"gradients or memory do not match the parameters: {sorted(unknown)}")
        names = [n for n in params if n in given]
        grad_list = [given[n] if second_order else given[n].detach() for n in names]
        with torch.enable_grad() if create_graph else torch.no_grad():
            new_params = {n: p if create_graph else p.detach() for n, p in params.items()}
            steps, memory = self.steps(grad_list, [state[n] for n in names],
                                       [new_params[n] for n in names])
            new_state = dict(state)
            for i, (n, mem) in enumerate(zip(names, memory, strict=True)):
                factor = scale[n] if isinstance(scale, Mapping) else scale
                if factor != 1.0:
                    steps[i] = steps[i] * factor
                new_params[n] = new_params[n] + steps[i]
                new_state[n] = mem
        stats = UpdateStats(update_norm=l2_norm(steps), grad_norm=l2_norm(grad_list))
        return new_params, new_state, stats

    # -- the versioned file (l2l_gail.core.rule_file) ---------------------------------------

    def payload(self) -> dict[str, Any]:
        """Format, version, configuration, step units and weights as one ``torch.save``-able
        dict (what :meth:`save` writes and ``LearnedOptimizer.state_dict`` embeds)."""
        return rule_file.to_payload(self)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`payload` to ``path`` atomically (an interrupted save keeps the old file)."""
        return rule_file.save(self, Path(path))

    @classmethod
    def from_payload(cls, payload: Any, *, source: str, config: Any = None) -> Self:
        """Rebuild a rule from :meth:`payload`; ``source`` names it in error messages.

        Called on :class:`UpdateRule`, it rebuilds whichever rule the payload holds; on a
        subclass, the payload must hold that rule.

        Raises:
            L2LError: the payload is not a learned rule (of this class), is from an unknown
                format version, does not match ``config`` (when given), or its weights do not
                fit its configuration.
        """
        return rule_file.from_payload(payload, source=source, expected=cls, config=config)

    @classmethod
    def load(cls, path: str | Path, *, config: Any = None) -> Self:
        """Load a rule written by :meth:`save` (on the CPU; move it with ``.to``).

        Args:
            path: the file.
            config: if given, the file must hold exactly this configuration.

        Raises:
            L2LError: the file is missing, unreadable, from an unknown format version or
                another configuration, or its weights are damaged.
        """
        return rule_file.load(Path(path), expected=cls, config=config)
