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
normalisers, Adam's bias corrections) and bias (the time embedding), and the Adam directions'
division comes after the product (:func:`~l2l_gail.core.mlp_buffers.fold`), so the features are
never rescaled and the directions never stored. At this size a step costs memory passes and
per-operation overhead rather than arithmetic, so the optimizer's path
(:meth:`MLPRule.step_in_place`) keeps the memory in flat buffers
(:mod:`~l2l_gail.core.mlp_buffers`) that every step updates in place, keeps what it derives
from ``phi`` until ``phi`` changes, and runs a short fixed sequence of operations.
``scripts/bench_rule_cost.py`` measures a training step against Adam's
(``results/meta/rule_cost.md``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from l2l_gail.core.mlp_buffers import (
    SCHEDULE_ROWS,
    FlatBuffers,
    Folded,
    cat_like,
    first_layer,
    flat,
    fold,
    next_counts,
    segments,
)
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

    def schedules(self, counts: Sequence[float]) -> Tensor:
        """The per-tensor constants after each of ``counts`` earlier updates, one row per count
        (in double): Adam's bias-correction factors of the momenta's Adam directions, the
        bias-corrected eps, and the time embedding."""
        count = torch.tensor(counts, dtype=torch.float64).unsqueeze(1)
        root_v = (1.0 - self.second_moment_decay ** (count + 1)).sqrt()
        decays = torch.tensor(self.decays, dtype=torch.float64)
        scales = torch.tensor(self.time_scales, dtype=torch.float64)
        return torch.cat((root_v / (1.0 - decays ** (count + 1)), ADAM_EPS * root_v,
                          torch.tanh(count / scales - 1.0)), 1)


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
    output_scale: Tensor

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
        self.register_buffer("output_scale", scale, persistent=False)  # folded into the head

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

    def fold(self) -> Folded:
        """``phi`` as the steps use it (:func:`~l2l_gail.core.mlp_buffers.fold`)."""
        return fold(self)

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
        step = self._in_place(buffers, self.fold(), params, grads, counts)
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
        What is derived from ``phi`` alone (:meth:`fold`) is kept until ``phi`` changes
        (trained online between steps, or loaded).
        """
        like = self._like()
        key = (tuple(map(id, params)), like["device"], like["dtype"])
        buffers = workspace.get("mlp")
        if buffers is None or buffers.key != key:
            buffers = workspace["mlp"] = FlatBuffers([p.shape for p in params], self.config, like,
                                                  key=key, schedule_rows=SCHEDULE_ROWS)
        counts = buffers.adopt(states, self.memory_of)
        phi = buffers.folded(tuple(self.parameters()), self.fold)
        self._in_place(buffers, phi, params, grads, counts)
        if len(set(factors)) == 1:
            torch._foreach_add_(list(params), buffers.steps, alpha=factors[0])
        else:
            for p, step, factor in zip(params, buffers.steps, factors, strict=True):
                p.add_(step, alpha=factor)
        buffers.advance(states, counts)

    def _in_place(self, buffers: FlatBuffers, phi: Folded, params: Sequence[Tensor],
                  grads: Sequence[Tensor], counts: Sequence[float]) -> Tensor:
        """Update the memory in ``buffers`` and compute the steps into ``buffers.d``, from
        ``params`` and ``grads`` after ``counts`` earlier updates; no graph."""
        b = buffers
        torch._foreach_copy_(b.inputs, [*params, *grads])
        b.momenta_rows.lerp_(b.g_rows, self._rates)
        b.v.lerp_(torch.mul(b.g, b.g, out=b.d), self._rate_v)
        corrections, time, eps = b.constants(counts)
        denominator = torch.sqrt(b.v, out=b.d)
        if len(set(eps)) == 1:
            denominator.add_(eps[0])
        else:
            for part, tensor_eps in zip(b.denominators, eps, strict=True):
                part.add_(tensor_eps)
        norms = torch.stack([torch.linalg.vector_norm(rows, dim=1) for rows in b.features])
        weights, biases = first_layer(phi, self._norm_eps, norms, b.inv_size, corrections, time, b)
        for bias, weight, features, out in zip(biases, weights, b.features, b.outputs, strict=True):
            torch.addmm(bias, weight, features, out=out)
        return self._combine(phi, b.parts, denominator, b)

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
        shared = len(set(counts)) == 1
        rows = cfg.schedules(counts[:1] if shared else counts)
        corrections, eps_rows, time = rows.to(**like).split((k, 1, len(cfg.time_scales)), 1)
        eps = float(rows[0, k]) if shared else eps_rows[:, 0].index_select(0, seg)
        x = torch.cat((p.unsqueeze(0), g.unsqueeze(0), m))
        chunks = x.split(sizes, 1)
        norms = torch.stack([torch.linalg.vector_norm(c, dim=1) for c in chunks])
        phi = self.fold()
        weights, biases = first_layer(phi, self._norm_eps, norms, inv_size, corrections, time)
        first = torch.cat([torch.addmm(b, w, c) for b, w, c in zip(biases, weights, chunks,
                                                                   strict=True)], 1)
        step = self._combine(phi, first.split(cfg.hidden_size), v.sqrt() + eps)
        if step.dtype != grads[0].dtype or step.device != grads[0].device:
            step = step.to(device=grads[0].device, dtype=grads[0].dtype)
        steps = [s.view(q.shape) for s, q in zip(step.split(sizes), grads, strict=True)]
        return steps, list(zip(m.split(sizes, 1), v.split(sizes), next_counts(counts),
                               strict=True))

    def _combine(self, phi: Folded, parts: Sequence[Tensor], denominator: Tensor,
                 buffers: FlatBuffers | None = None) -> Tensor:
        """The steps from the first layer's product in row blocks ``parts`` (see :meth:`fold`)
        and Adam's denominator; with ``buffers``, computed in them (``parts`` are theirs)."""
        direct, over_d, *even = parts
        # in the buffers: a block already read is the next spare, the steps go into d
        into = [None] * 4 if buffers is None else [direct, over_d, buffers.d, buffers.mirror_step]
        first = torch.addcdiv(direct, over_d, denominator, out=into[0])
        if not self.config.sign_symmetric:
            return self._output(phi, first, buffers, into[1], into[2])
        # the parameter is even, the other rows odd (see the class docstring)
        plus = torch.add(even[0], first, out=into[1])
        minus = torch.sub(even[0], first, out=None if buffers is None else even[0])
        step = self._output(phi, plus, buffers, into[0], into[2])
        return step.sub_(self._output(phi, minus, buffers, into[0], into[3])).div_(2)

    def _output(self, phi: Folded, first: Tensor, buffers: FlatBuffers | None = None,
                spare: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """The steps from the first layer's pre-activations ``(hidden_size, n)``; with
        ``buffers``, computed in them, in ``first`` and ``spare`` and into ``out``."""
        cfg = self.config
        hidden = first.relu_()  # a fresh tensor or a buffer: relu in place saves an allocation
        for bias, weight in phi.hidden:  # in the buffers, each layer's input is the next spare
            hidden, spare = (torch.addmm(bias, weight, hidden, out=spare).relu_(),
                             None if buffers is None else hidden)
        head = torch.addmm(phi.head_bias, phi.head_weight, hidden,
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
