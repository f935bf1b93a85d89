"""A per-parameter MLP update rule over Adam-like features (learned_optimization's small MLP).

The coordinatewise LSTM (:mod:`~l2l_gail.core.lstm_rule`) costs about 10 kFLOP per coordinate per
step, more than the forward and backward pass of a small model. Metz et al. replace it by a tiny
MLP applied to every coordinate, fed with hand-made accumulators instead of a recurrent state:
*Understanding and correcting pathologies in the training of learned optimizers* (ICML 2019,
arXiv 1810.10180; ``learned_optimization/learned_optimizers/mlp_lopt.py``), with Adam-style
second-moment features and 2 x 4 hidden units in ``adafac_mlp_lopt.py``, and VeLO's
per-parameter network (Metz et al. 2022, arXiv 2211.09760; ``research/general_lopt/hyper_v2.py``).
:class:`MLPRule` follows them:

* **memory**: momenta ``m_k`` at the decays of :attr:`MLPRuleConfig.decays` (0.1 ... 0.999,
  five of ``mlp_lopt``'s six), a second moment ``v`` (decay 0.999, ``adafac_mlp_lopt``'s), and the
  tensor's number of updates so far;
* **features** of each coordinate: the parameter, the gradient and the momenta, each normalised
  over its tensor to a unit second moment (``x * rsqrt(mean(x^2) + eps)`` over the tensor,
  learned_optimization's ``_second_moment_normalizer``); the Adam directions
  ``m_hat_k / (sqrt(v_hat) + 1e-8)`` (``adafac_mlp_lopt``'s ``m * rsqrt(v)``, bias-corrected here
  as Adam does, Kingma & Ba 2015, arXiv 1412.6980); and the training-step embedding
  ``tanh(t / s - 1)`` at the time scales :attr:`MLPRuleConfig.time_scales` (``_tanh_embedding``,
  with ``t`` the number of earlier updates);
* **network**: ``hidden_layers`` ReLU layers of ``hidden_size`` units and two outputs, initialised
  as haiku's MLP there (truncated normal, standard deviation ``1 / sqrt(fan_in)``, zero biases);
* **output**: ``direction * exp(magnitude * exp_mult) * step_mult`` with both multipliers 1e-3
  (``mlp_lopt`` and ``adafac_mlp_lopt``), so a fresh rule takes steps of about 1e-3. The step is
  added to the parameter (learned_optimization subtracts it; the sign is learned either way).

Two choices differ from learned_optimization. The Adam directions are not normalised again over
the tensor: they are already free of the gradient's scale, and normalising them would fix every
tensor's mean step size and hide Adam's shrinking steps under noise -- kept as they are, a
hand-set ``phi`` is Adam exactly (:meth:`MLPRule.adam_clone`). And the normaliser's epsilon is
``1e-16`` (learned_optimization: ``1e-5``), the square of Adam's epsilon, so that the features of a
tensor whose gradients are around 1e-4 (a small MLP's, a GAIL discriminator's) are not scaled
down by the epsilon alone.

Cost: all coordinates of all tensors run as one batch, features as rows and coordinates as
columns (a ``(4, f) @ (f, n)`` product is several times faster than its transpose on a CPU).
What is constant over a tensor is folded into that tensor's first-layer weights (the
normalisers, Adam's bias corrections) and bias (the time embedding), so the features are never
rescaled. At this size a step costs memory passes and per-operation overhead rather than
arithmetic, so the optimizer's path (:meth:`MLPRule.step_in_place`) keeps the memory in flat
buffers (:mod:`~l2l_gail.core.mlp_buffers`) that every step updates in place, and runs a fixed
short sequence of operations on them. ``scripts/bench_rule_cost.py`` measures a training step
against Adam's (``results/meta/rule_cost.md``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from l2l_gail.core.mlp_buffers import SCHEDULE_ROWS, FlatBuffers, cat_like, flat, next_counts, segments
from l2l_gail.core.rule import Memory, UpdateRule
from l2l_gail.core.rule_file import StepUnits
from l2l_gail.errors import L2LError

NORM_EPS = 1e-16
"""Epsilon of the per-tensor second-moment normaliser (see the module docstring)."""
ADAM_EPS = 1e-8
"""Adam's epsilon (PyTorch's default), in the Adam-direction features."""


@dataclasses.dataclass(frozen=True)
class MLPRuleConfig:
    """Features, shape and output transform of the per-parameter MLP; stored with its weights."""

    hidden_size: int = 4
    """Units per hidden layer (4 in ``adafac_mlp_lopt``)."""
    hidden_layers: int = 2
    """Hidden ReLU layers (2 in ``adafac_mlp_lopt`` and ``mlp_lopt``)."""
    decays: tuple[float, ...] = (0.1, 0.5, 0.9, 0.99, 0.999)
    """Decays of the momenta, each a feature as it is and as an Adam direction."""
    second_moment_decay: float = 0.999
    """Decay of the second moment ``v`` (Adam's beta2)."""
    time_scales: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0,
                                      10000.0, 30000.0, 100000.0)
    """Scales ``s`` of the training-step features ``tanh(t / s - 1)`` (``mlp_lopt``'s)."""
    step_mult: float = 1e-3
    """Multiplies the direction output: the step size of a fresh rule (1 for steps in units of
    the learning rate, as the Adam clone's)."""
    exp_mult: float = 1e-3
    """Multiplies the magnitude output inside the exponential."""
    sign_symmetric: bool = False
    """Make the step odd in the gradient history (see :class:`MLPRule`)."""
    max_step: float | None = None
    """If set, each coordinate's step is ``max_step * tanh(step / max_step)``, as the LSTM rule's."""

    def __post_init__(self) -> None:
        # A file or a YAML config gives lists; the config must compare equal to the tuple form.
        object.__setattr__(self, "decays", tuple(float(d) for d in self.decays))
        object.__setattr__(self, "time_scales", tuple(float(s) for s in self.time_scales))
        checks = [
            (self.hidden_size > 0, f"hidden_size must be positive, got {self.hidden_size}"),
            (self.hidden_layers > 0, f"hidden_layers must be positive, got {self.hidden_layers}"),
            (len(self.decays) > 0 and all(0 <= d < 1 for d in self.decays),
             f"decays must be one or more numbers in [0, 1), got {list(self.decays)}"),
            (0 <= self.second_moment_decay < 1,
             f"second_moment_decay must be in [0, 1), got {self.second_moment_decay}"),
            (all(s > 0 for s in self.time_scales),
             f"time_scales must be positive, got {list(self.time_scales)}"),
            (self.step_mult > 0, f"step_mult must be positive, got {self.step_mult}"),
            (self.exp_mult > 0, f"exp_mult must be positive, got {self.exp_mult}"),
            (self.max_step is None or self.max_step > 0,
             f"max_step must be positive, got {self.max_step}"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise L2LError(f"invalid learned-optimizer configuration: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def schedule(self, count: float) -> list[float]:
        """The per-tensor constants after ``count`` earlier updates: Adam's bias-correction
        factors of the momenta's Adam directions, the bias-corrected eps, and the time
        embedding."""
        root_v = math.sqrt(1.0 - self.second_moment_decay ** (count + 1))
        return [*(root_v / (1.0 - d ** (count + 1)) for d in self.decays), ADAM_EPS * root_v,
                *(math.tanh(count / s - 1.0) for s in self.time_scales)]


class MLPRule(UpdateRule):
    """Per-parameter MLP update rule ``g_phi`` over Adam-like features (see the module docstring).

    Each coordinate's step is ``direction * exp(magnitude * exp_mult) * step_mult`` (clipped by
    ``max_step`` if set), with ``(direction, magnitude)`` the MLP's two outputs for that
    coordinate's features. With ``sign_symmetric``, the step is ``(f(h) - f(-h)) / 2``, where
    ``f`` is that step and ``-h`` negates the gradient history: the gradient, the momenta and the
    Adam directions, but not the parameter, the second moment or the time. So negating every
    gradient a coordinate has seen negates its step exactly, and a coordinate that has seen no
    gradient does not move: the rule can learn no drift independent of the gradient, and no
    weight decay either. The mirror costs a second pass through all but the first layer.

    Memory (``memory_keys``) of a tensor of ``n`` coordinates: ``"momenta"`` -- ``(len(decays),
    n)``; ``"second_moment"`` -- ``(n,)``; ``"step"`` -- ``(1,)``, on the CPU, its number of updates
    so far (see :meth:`init_memory`).

    Args:
        config: features, shape and output; defaults to learned_optimization's small MLP.
        step_units: ``absolute`` (default; what meta-training trains) or ``lr``.
    """

    file_format = "l2l_gail.MLPRule"
    name = "mlp"
    config_type = MLPRuleConfig
    memory_keys = ("momenta", "second_moment", "step")
    config: MLPRuleConfig
    _rates: Tensor
    _rate_v: Tensor
    _norm_eps: Tensor
    _output_scale: Tensor

    def __init__(self, config: MLPRuleConfig | None = None, *,
                 step_units: StepUnits = "absolute") -> None:
        super().__init__(config or MLPRuleConfig(), step_units=step_units)
        cfg = self.config
        k, hidden = len(cfg.decays), cfg.hidden_size
        # Input columns: the parameter, then the sign-odd features (the gradient, the momenta,
        # the Adam directions), then the time embedding.
        self.inp = nn.Linear(1 + 1 + 2 * k + len(cfg.time_scales), hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(cfg.hidden_layers - 1))
        self.head = nn.Linear(hidden, 2)
        for layer in (self.inp, *self.hidden, self.head):
            std = 1.0 / math.sqrt(layer.in_features)
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(layer.bias)
        self.register_buffer("_rates", 1.0 - torch.tensor(cfg.decays).unsqueeze(1), persistent=False)
        self.register_buffer("_rate_v", torch.tensor(1.0 - cfg.second_moment_decay),
                             persistent=False)
        self.register_buffer("_norm_eps", torch.tensor(NORM_EPS), persistent=False)
        # exp(a) is taken as exp2(a * log2(e)), the factor folded into the magnitude's scale: on
        # some CPUs torch's float32 exp is several times slower than its exp2.
        scale = torch.tensor([[cfg.step_mult], [cfg.exp_mult * math.log2(math.e)]])
        self.register_buffer("_output_scale", scale, persistent=False)

    def _like(self) -> dict[str, Any]:
        weight = self.head.weight
        return {"device": weight.device, "dtype": weight.dtype}

    def init_memory(self, n_coords: int) -> Memory:
        """Zero momenta and second moment for ``n_coords`` coordinates on ``phi``'s device, and a
        zero count.

        The count stays on the CPU, under the key ``step``, which ``torch.optim`` keeps where it
        is when loading a state dict (as Adam's): the per-tensor quantities that depend on it
        are computed in Python, without a device synchronisation.
        """
        k = len(self.config.decays)
        return (torch.zeros(k, n_coords, **self._like()), torch.zeros(n_coords, **self._like()),
                torch.zeros(1))

    @property
    def never_steps(self) -> bool:
        """True while the direction output is all zero: every step is then zero."""
        return not (bool(self.head.weight[0].any()) or bool(self.head.bias[0].any()))

    def _first_layer(self, norms: Tensor, inv_size: Tensor, constants: Tensor,
                     out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Each tensor's first layer, with what is constant over the tensor folded in.

        Args:
            norms: the Euclidean norm of each tensor's rows of parameter, gradient and momenta,
                ``(tensors, 2 + len(decays))``.
            inv_size: ``1 / numel`` of each tensor, ``(tensors, 1)``.
            constants: each tensor's :meth:`MLPRuleConfig.schedule`, ``(tensors, columns)``.
            out: where to write the weights.

        Returns:
            The weights on the feature rows, ``(tensors, hidden_size, 2 + 2 * len(decays))``,
            the normalisers and Adam's bias corrections folded into their columns, and the
            biases, ``(tensors, hidden_size, 1)``, the time embedding's share folded in.
        """
        k, times = len(self.config.decays), len(self.config.time_scales)
        weight, weight_time = self.inp.weight.split((2 * k + 2, times), 1)
        corrections, _, time = constants.split((k, 1, times), 1)
        normalisers = torch.addcmul(self._norm_eps, norms.square(), inv_size).rsqrt()
        factors = torch.cat((normalisers, corrections), 1).unsqueeze(1)
        weights = torch.mul(weight, factors, out=out)
        return weights, nn.functional.linear(time, weight_time, self.inp.bias).unsqueeze(2)

    def steps(self, grads: Sequence[Tensor], memory: Sequence[Memory],
              params: Sequence[Tensor]) -> tuple[list[Tensor], list[Memory]]:
        """Steps for several tensors at once, run as one flat batch of coordinates (see the
        module docstring): functionally with autograd enabled, else as :meth:`step_in_place`
        does, on buffers made for the call. Returns one step per gradient (same shape, dtype
        and device as the gradient) and each tensor's new memory."""
        if not grads:
            return [], []
        if torch.is_grad_enabled():
            return self._graph_steps(grads, memory, params)
        buffers = FlatBuffers([q.shape for q in grads], self.config, self._like())
        counts = buffers.load(memory)
        step = self._in_place(buffers, params, grads, counts)
        device, dtype = grads[0].device, grads[0].dtype
        steps = (buffers.steps if step.device == device and step.dtype == dtype
                 else [s.view(q.shape) for s, q in zip(
                     step.to(device=device, dtype=dtype).split(buffers.sizes), grads, strict=True)])
        return steps, list(zip(buffers.momenta, buffers.second_moments, next_counts(counts),
                               strict=True))

    def step_in_place(self, params: Sequence[Tensor], grads: Sequence[Tensor],
                      factors: Sequence[float], states: Sequence[dict[str, Any]],
                      workspace: dict[str, Any]) -> None:
        """The optimizer's step, on buffers kept in ``workspace`` from step to step.

        The momenta and second moments of all tensors stay in flat buffers, and each
        parameter's ``torch.optim`` state holds views of its part of them: no memory is gathered
        or scattered from step to step. Memory the state holds otherwise (fresh, loaded from a
        state dict, or left by a look-ahead step) is copied into the buffers first. While all
        tensors have had as many updates, their states share one count, advanced in place.
        """
        like = self._like()
        key = (tuple(map(id, params)), like["device"], like["dtype"])
        buffers = workspace.get("mlp")
        if buffers is None or buffers.key != key:
            buffers = workspace["mlp"] = FlatBuffers([p.shape for p in params], self.config, like,
                                                  key=key, schedule_rows=SCHEDULE_ROWS)
        counts = buffers.adopt(states, self.memory_of)
        self._in_place(buffers, params, grads, counts)
        if len(set(factors)) == 1:
            torch._foreach_add_(list(params), buffers.steps, alpha=factors[0])
        else:
            for p, step, factor in zip(params, buffers.steps, factors, strict=True):
                p.add_(step, alpha=factor)
        buffers.advance(states, counts)

    def _in_place(self, buffers: FlatBuffers, params: Sequence[Tensor], grads: Sequence[Tensor],
                  counts: Sequence[float]) -> Tensor:
        """Update the memory in ``buffers`` and compute the steps into ``buffers.step``, from
        ``params`` and ``grads`` after ``counts`` earlier updates; no graph."""
        b = buffers
        torch._foreach_copy_(b.params, list(params))
        torch._foreach_copy_(b.grads, list(grads))
        b.momenta_rows.lerp_(b.g_rows, self._rates)
        b.v.lerp_(torch.mul(b.g, b.g, out=b.denominator), self._rate_v)
        constants, eps = b.constants(counts)
        denominator = torch.sqrt(b.v, out=b.denominator)
        if len(set(eps)) == 1:
            denominator.add_(eps[0])
        else:
            for part, tensor_eps in zip(b.denominators, eps, strict=True):
                part.add_(tensor_eps)
        torch.div(b.momenta_rows, denominator, out=b.adam_rows)
        norms = torch.stack([torch.linalg.vector_norm(rows, dim=1) for rows in b.normalised])
        _, biases = self._first_layer(norms, b.inv_size, constants, out=b.weights)
        if not self.config.sign_symmetric:
            for bias, weight, features, out in zip(biases.unbind(0), b.tensor_weights, b.features,
                                                   b.firsts, strict=True):
                torch.addmm(bias, weight, features, out=out)
            return self._output(b.first, b, b.step)
        # the parameter is even, the other rows odd (see the class docstring)
        for bias, even_weight, odd_weight, even, odd, out, odd_out in zip(
                biases.unbind(0), b.even_weights, b.odd_weights, b.even_features, b.odd_features,
                b.firsts, b.spares, strict=True):
            torch.addmm(bias, even_weight, even, out=out)
            torch.mm(odd_weight, odd, out=odd_out)
        minus = torch.sub(b.first, b.spare, out=b.mirror)
        step = self._output(b.first.add_(b.spare), b, b.step)
        return step.sub_(self._output(minus, b, b.mirror_step)).div_(2)

    def _graph_steps(self, grads: Sequence[Tensor], memory: Sequence[Memory],
                     params: Sequence[Tensor]) -> tuple[list[Tensor], list[Memory]]:
        """:meth:`steps` with autograd: what :meth:`_in_place` computes, functionally."""
        cfg, like = self.config, self._like()
        k, sizes = len(cfg.decays), [q.numel() for q in grads]
        seg, inv_size = segments(tuple(sizes), like["device"])
        g, p = flat(grads, like), flat(params, like)
        m = cat_like([mem[0] for mem in memory], like, dim=1).lerp(g.expand(k, -1), self._rates)
        v = cat_like([mem[1] for mem in memory], like).lerp(g * g, self._rate_v)
        counts = [float(mem[2]) for mem in memory]
        schedules = {c: cfg.schedule(c) for c in set(counts)}
        constants = torch.tensor([schedules[c] for c in counts], **like)
        eps = (schedules[counts[0]][k] if len(schedules) == 1
               else constants[:, k].index_select(0, seg))
        x = torch.cat((p.unsqueeze(0), g.unsqueeze(0), m, m / (v.sqrt() + eps)))
        chunks = x.split(sizes, 1)
        norms = torch.stack([torch.linalg.vector_norm(c[:k + 2], dim=1) for c in chunks])
        weights, biases = self._first_layer(norms, inv_size, constants)
        tensors = list(zip(biases, weights, chunks, strict=True))
        if cfg.sign_symmetric:
            even = torch.cat([torch.addmm(b, w[:, :1], c[:1]) for b, w, c in tensors], 1)
            odd = torch.cat([w[:, 1:] @ c[1:] for _, w, c in tensors], 1)
            step = (self._output(even + odd) - self._output(even - odd)) / 2
        else:
            step = self._output(torch.cat([torch.addmm(b, w, c) for b, w, c in tensors], 1))
        if step.dtype != grads[0].dtype or step.device != grads[0].device:
            step = step.to(device=grads[0].device, dtype=grads[0].dtype)
        steps = [s.view(q.shape) for s, q in zip(step.split(sizes), grads, strict=True)]
        return steps, list(zip(m.split(sizes, 1), v.split(sizes), next_counts(counts),
                               strict=True))

    def _output(self, first: Tensor, buffers: FlatBuffers | None = None,
                out: Tensor | None = None) -> Tensor:
        """The steps from the first layer's pre-activations ``(hidden_size, n)``; with
        ``buffers``, computed in them into ``out`` (``first`` and ``buffers.spare`` are
        overwritten)."""
        cfg = self.config
        hidden = first.relu_()  # a fresh tensor or a buffer: relu in place saves an allocation
        spare = None if buffers is None else buffers.spare
        for layer in cast(Iterable[nn.Linear], self.hidden):
            hidden, spare = torch.addmm(layer.bias.unsqueeze(1), layer.weight, hidden,
                                        out=spare).relu_(), hidden
        # exp_mult and step_mult are folded into the head's two rows: 2 x hidden products
        # instead of two passes over every coordinate.
        scale = self._output_scale
        head = torch.addmm(self.head.bias.unsqueeze(1) * scale, self.head.weight * scale, hidden,
                           out=None if buffers is None else buffers.head)
        if buffers is None:
            step = head[0] * torch.exp2(head[1])
            if cfg.max_step is not None:
                step = cfg.max_step * torch.tanh(step / cfg.max_step)
            return step
        step = torch.mul(buffers.direction, buffers.magnitude.exp2_(), out=out)
        if cfg.max_step is not None:
            step.div_(cfg.max_step).tanh_().mul_(cfg.max_step)
        return step

    @classmethod
    def adam_clone(cls, config: MLPRuleConfig | None = None, *, step_units: StepUnits = "lr",
                   beta1: float = 0.9, seed: int = 0) -> MLPRule:
        """A rule whose steps are Adam's, exactly, by construction (no fitting).

        Adam's step is one of the features, ``m_hat / (sqrt(v_hat) + eps)`` for the decay
        ``beta1``: two first-layer units read it as ``relu(a)`` and ``relu(-a)``, the next layers
        pass them on, and the direction output is their difference, ``-a``; the magnitude output
        is zero. So the step is ``-step_mult * a``: Adam (betas ``(beta1, second_moment_decay)``,
        eps 1e-8) with learning rate ``step_mult``, or in units of the learning rate when
        ``step_mult`` is 1 -- the default here, with ``step_units="lr"``, as the GAIL trainers
        want. The other units keep their random initialisation (``seed``) with zero weights into
        the clone's path, so they take no part in the step until training gives them some.

        Raises:
            L2LError: ``beta1`` is not one of ``config.decays``, the network is narrower than 2,
                or steps in units of ``lr`` are asked for with ``step_mult`` other than 1.
        """
        config = config or MLPRuleConfig(step_mult=1.0 if step_units == "lr" else 1e-3)
        if beta1 not in config.decays:
            raise L2LError(f"an Adam clone needs beta1={beta1} among the decays {list(config.decays)}")
        if config.hidden_size < 2:
            raise L2LError("an Adam clone needs hidden_size >= 2")
        if step_units == "lr" and config.step_mult != 1.0:
            raise L2LError("an Adam clone in units of lr outputs Adam's step: use step_mult=1")
        with torch.random.fork_rng():  # the random units must not move the caller's RNG
            torch.manual_seed(seed)
            rule = cls(config, step_units=step_units)
        column = 2 + len(config.decays) + config.decays.index(beta1)
        with torch.no_grad():
            rule.inp.weight[:2] = 0.0
            rule.inp.weight[0, column], rule.inp.weight[1, column] = 1.0, -1.0
            for layer in cast(Iterable[nn.Linear], rule.hidden):
                layer.weight[:2] = 0.0
                layer.weight[0, 0] = layer.weight[1, 1] = 1.0
            rule.head.weight.zero_()
            rule.head.weight[0, 0], rule.head.weight[0, 1] = -1.0, 1.0
        return rule
