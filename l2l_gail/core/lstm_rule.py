"""The coordinatewise LSTM update rule (Andrychowicz et al. 2016, arXiv 1606.04474).

Andrychowicz et al., *Learning to learn by gradient descent by gradient descent* (NeurIPS 2016)
replace a hand-designed update rule by a small LSTM that reads each gradient coordinate
(log-magnitude and sign, :func:`~l2l_gail.core.preprocess.preprocess_gradients`) and proposes that
coordinate's step. The same two-layer LSTM is shared by every coordinate of every parameter.
Serban et al., *Learning to Learn from Mistakes* (arXiv 2008.05247) meta-train it on adversarial
batches; L2L-GAIL trains it online on the discriminator's held-out loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from l2l_gail.core.preprocess import preprocess_gradients
from l2l_gail.core.rule import Memory, UpdateRule
from l2l_gail.core.rule_file import StepUnits
from l2l_gail.errors import L2LError

Hidden = tuple[Tensor, Tensor]
"""The LSTM memory ``(h, c)`` of some coordinates, each ``(num_layers, n_coords, hidden_size)``."""


@dataclasses.dataclass(frozen=True)
class LSTMRuleConfig:
    """Shape and output transform of the coordinatewise LSTM; stored with its weights."""

    hidden_size: int = 20
    """Units per LSTM layer (20 in Andrychowicz et al. 2016 and in 2008.05247)."""
    num_layers: int = 2
    """Stacked LSTM layers (2 in both papers)."""
    preprocess_p: float = 10.0
    """Cut-off exponent of the log/sign gradient preprocessing (10 in the paper's appendix A)."""
    output_scale: float = 0.1
    """Multiplies the linear head's output, so a fresh network proposes small steps."""
    max_step: float | None = None
    """If set, each coordinate's step is ``max_step * tanh(step / max_step)``: an optional
    bound that keeps an online-trained optimizer from taking one catastrophic step."""
    sign_symmetric: bool = False
    """Make the step odd in the gradient history (see :class:`LSTMRule`)."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be positive, got {value}"
            for name, value in (
                ("hidden_size", self.hidden_size),
                ("num_layers", self.num_layers),
                ("preprocess_p", self.preprocess_p),
                ("output_scale", self.output_scale),
                ("max_step", 1 if self.max_step is None else self.max_step),
            )
            if not value > 0
        ]
        if problems:
            raise L2LError(f"invalid learned-optimizer configuration: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LSTMRule(UpdateRule):
    """Coordinatewise LSTM update rule ``g_phi`` (Andrychowicz et al. 2016, arXiv 1606.04474).

    Every scalar coordinate of every parameter is one row of a batch: its preprocessed gradient
    (2 features) goes through a ``num_layers`` LSTM with its own memory, then a linear head and
    ``output_scale`` give that coordinate's additive step. The head starts at zero, so a fresh
    rule leaves parameters unchanged until ``phi`` has been trained -- an untrained ``g_phi``
    must not kick a GAIL discriminator around -- while the meta-gradient still reaches the head
    and, through it, the LSTM. (On random quadratics this start also meta-trained to a lower
    loss than PyTorch's default head initialisation.)

    With ``sign_symmetric``, the LSTM also reads every coordinate's mirrored stream, the same
    gradients negated, with a memory of its own, and the step is ``(f(g) - f(-g)) / 2``: negating
    every gradient a coordinate has seen negates its step exactly, and a zero gradient stream
    gives a zero step, so the rule can learn no drift independent of the gradient. The memory
    then holds both streams (``hidden_size`` doubled in its last dimension), and each step costs
    two LSTM passes.

    Args:
        config: the network's shape; defaults to 2 x 20 units, output scale 0.1.
        step_units: ``absolute`` (default; what meta-training trains) or ``lr``.
    """

    file_format = "l2l_gail.LSTMOptimizer"
    name = "lstm"
    config_type = LSTMRuleConfig
    memory_keys = ("h", "c")
    config: LSTMRuleConfig

    def __init__(self, config: LSTMRuleConfig | None = None, *,
                 step_units: StepUnits = "absolute") -> None:
        super().__init__(config or LSTMRuleConfig(), step_units=step_units)
        self.lstm = nn.LSTM(2, self.config.hidden_size, self.config.num_layers)
        self.head = nn.Linear(self.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _like(self) -> dict[str, Any]:
        weight = self.head.weight
        return {"device": weight.device, "dtype": weight.dtype}

    def init_memory(self, n_coords: int) -> Hidden:
        """Zero LSTM memory ``(h, c)`` for ``n_coords`` coordinates, on ``phi``'s device: each
        ``(num_layers, n_coords, hidden_size)``, or twice ``hidden_size`` wide with
        ``sign_symmetric`` (the mirrored stream's memory in the second half)."""
        streams = 2 if self.config.sign_symmetric else 1
        shape = (self.config.num_layers, n_coords, streams * self.config.hidden_size)
        return torch.zeros(shape, **self._like()), torch.zeros(shape, **self._like())

    @property
    def never_steps(self) -> bool:
        """True while the output head is all zero (a fresh rule): every step is then zero."""
        return not (bool(self.head.weight.any()) or bool(self.head.bias.any()))

    def forward(self, grad: Tensor, hidden: Hidden) -> tuple[Tensor, Hidden]:
        """Steps for a flat batch of coordinates.

        Args:
            grad: ``(n,)`` gradient coordinates.
            hidden: their memory, ``(num_layers, n, hidden_size)`` each.

        Returns:
            ``(step, hidden)``: the ``(n,)`` additive steps and the new memory.
        """
        features = preprocess_gradients(grad, self.config.preprocess_p).to(**self._like())
        out, new_hidden = self.lstm(features.unsqueeze(0), hidden)
        step = self.head(out[0]).squeeze(-1) * self.config.output_scale
        if self.config.max_step is not None:
            step = self.config.max_step * torch.tanh(step / self.config.max_step)
        return step, new_hidden

    def steps(self, grads: Sequence[Tensor], memory: Sequence[Memory],
              params: Sequence[Tensor]) -> tuple[list[Tensor], list[Memory]]:
        """Steps for several tensors at once, run as one flattened batch (one LSTM call, or two
        with ``sign_symmetric``); the LSTM does not read ``params``.

        Returns one step per gradient (same shape, dtype and device as the gradient) and each
        tensor's new memory.
        """
        if not grads:
            return [], []
        sizes = [g.numel() for g in grads]
        like = self._like()
        flat = torch.cat([g.reshape(-1).to(like["device"]) for g in grads])
        h = torch.cat([hc[0].to(**like) for hc in memory], dim=1)
        c = torch.cat([hc[1].to(**like) for hc in memory], dim=1)
        if self.config.sign_symmetric:
            step, (h, c) = self._mirrored(flat, h, c)
        else:
            step, (h, c) = self(flat, (h, c))
        steps = [
            s.view(g.shape).to(device=g.device, dtype=g.dtype)
            for s, g in zip(step.split(sizes), grads, strict=True)
        ]
        new_memory: list[Memory] = list(zip(h.split(sizes, dim=1), c.split(sizes, dim=1),
                                            strict=True))
        return steps, new_memory

    def _mirrored(self, flat: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Hidden]:
        """``(f(g) - f(-g)) / 2`` with each stream's memory in one half of ``h`` and ``c``.

        Two separate LSTM calls, so that each coordinate of the mirrored history is computed at
        the same batch position as the original: that is what makes the symmetry exact.
        """
        size = self.config.hidden_size
        step, (h_pos, c_pos) = self(flat, (h[..., :size].contiguous(), c[..., :size].contiguous()))
        mirror, (h_neg, c_neg) = self(-flat, (h[..., size:].contiguous(), c[..., size:].contiguous()))
        return (step - mirror) / 2, (torch.cat((h_pos, h_neg), -1), torch.cat((c_pos, c_neg), -1))
