"""The parameter-space learned inner optimizer: a coordinatewise LSTM ``g_phi``.

Andrychowicz et al., *Learning to learn by gradient descent by gradient descent* (NeurIPS
2016, arXiv 1606.04474) replace a hand-designed update rule by a small LSTM that reads each
gradient coordinate (log-magnitude and sign, :func:`preprocess_gradients`) and proposes that
coordinate's step: ``theta_{t+1} = theta_t + g_phi(grad_t, memory_t)``. The same two-layer LSTM
is shared by every coordinate of every parameter, so one ``phi`` serves a model of any size.
Serban et al., *Learning to Learn from Mistakes* (arXiv 2008.05247) meta-train it on
adversarial batches; L2L-GAIL trains it online on the discriminator's held-out loss.

Three layers of API, from the inside out:

* :class:`LSTMOptimizer` -- the network and its functional verbs ``init_state`` / ``update``
  over ``dict[str, Tensor]`` parameters, differentiable in ``phi`` so a loss computed with
  :func:`torch.func.functional_call` on the updated parameters trains ``phi``; ``save`` /
  ``load`` of its weights with their configuration.
* Meta-training helpers: :func:`meta_step` (one clipped step on ``phi``), :func:`unroll`
  (truncated back-propagation through ``T`` learned updates) and :func:`lookahead_step` (one
  learned update trained on a held-out batch, for online training).
* :class:`LearnedOptimizer` -- a ``torch.optim.Optimizer`` that applies the frozen (or
  separately trained) ``g_phi``, so it drops into stable-baselines3's ``optimizer_class`` and
  imitation's ``disc_opt_cls``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from l2l_gail.core.preprocess import preprocess_gradients
from l2l_gail.errors import L2LError
from l2l_gail.core.files import atomic_write

Params = dict[str, Tensor]
"""Parameters by name, as ``torch.func.functional_call`` takes them."""
Hidden = tuple[Tensor, Tensor]
"""The LSTM memory ``(h, c)`` of some coordinates, each ``(num_layers, n_coords, hidden_size)``."""
State = dict[str, Hidden]
"""The learned optimizer's memory for each parameter, by name."""

FORMAT = "l2l_gail.LSTMOptimizer"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class LSTMOptimizerConfig:
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


@dataclasses.dataclass(frozen=True)
class UpdateStats:
    """Norms of one learned update over all coordinates it touched."""

    update_norm: float
    grad_norm: float


@dataclasses.dataclass(frozen=True)
class MetaStepStats:
    """What one step on ``phi`` saw: the objective and the (pre-clipping) gradient norm."""

    meta_loss: float
    grad_norm: float


@dataclasses.dataclass(frozen=True)
class LookaheadStats:
    """One online look-ahead step: train loss before, held-out loss after, step sizes."""

    train_loss: float
    meta_loss: float
    update_norm: float
    meta_grad_norm: float


@dataclasses.dataclass
class UnrollResult:
    """The outcome of :func:`unroll`.

    ``meta_loss`` and the final ``params`` / ``state`` still carry the graph back to ``phi``,
    so the caller may add terms (e.g. a final clean-batch loss) before :func:`meta_step`; the
    next :func:`unroll` detaches them, which is what truncates back-propagation.
    """

    meta_loss: Tensor
    params: Params
    state: State
    losses: list[float]
    """The optimizee's loss after each of the ``T`` updates."""


class LSTMOptimizer(nn.Module):
    """Coordinatewise LSTM optimizer ``g_phi`` (Andrychowicz et al. 2016, arXiv 1606.04474).

    Every scalar coordinate of every parameter is one row of a batch: its preprocessed gradient
    (2 features) goes through a ``num_layers`` LSTM with its own memory, then a linear head and
    ``output_scale`` give that coordinate's additive step. The head starts at zero, so a fresh
    optimizer leaves parameters unchanged until ``phi`` has been trained -- an untrained
    ``g_phi`` must not kick a GAIL discriminator around -- while the meta-gradient still reaches
    the head and, through it, the LSTM. (On random quadratics this start also meta-trained to a
    lower loss than PyTorch's default head initialisation.)

    Args:
        config: the network's shape; defaults to 2 x 20 units, output scale 0.1.
    """

    def __init__(self, config: LSTMOptimizerConfig | None = None) -> None:
        super().__init__()
        self.config = config or LSTMOptimizerConfig()
        self.lstm = nn.LSTM(2, self.config.hidden_size, self.config.num_layers)
        self.head = nn.Linear(self.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _like(self) -> dict[str, Any]:
        weight = self.head.weight
        return {"device": weight.device, "dtype": weight.dtype}

    def zero_hidden(self, n_coords: int) -> Hidden:
        """Fresh LSTM memory for ``n_coords`` coordinates, on ``phi``'s device."""
        shape = (self.config.num_layers, n_coords, self.config.hidden_size)
        return torch.zeros(shape, **self._like()), torch.zeros(shape, **self._like())

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

    def steps(
        self, grads: Sequence[Tensor], hidden: Sequence[Hidden]
    ) -> tuple[list[Tensor], list[Hidden]]:
        """Steps for several tensors at once, run as one flattened batch (one LSTM call).

        Returns one step per gradient (same shape, dtype and device as the gradient) and each
        tensor's new memory.
        """
        if not grads:
            return [], []
        sizes = [g.numel() for g in grads]
        like = self._like()
        flat = torch.cat([g.reshape(-1).to(like["device"]) for g in grads])
        h = torch.cat([hc[0].to(**like) for hc in hidden], dim=1)
        c = torch.cat([hc[1].to(**like) for hc in hidden], dim=1)
        step, (h, c) = self(flat, (h, c))
        steps = [
            s.view(g.shape).to(device=g.device, dtype=g.dtype)
            for s, g in zip(step.split(sizes), grads, strict=True)
        ]
        new_hidden = list(zip(h.split(sizes, dim=1), c.split(sizes, dim=1), strict=True))
        return steps, new_hidden

    def init_state(self, params: Mapping[str, Tensor]) -> State:
        """Zero memory for every coordinate of ``params``."""
        return {name: self.zero_hidden(p.numel()) for name, p in params.items()}

    def update(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Tensor | None],
        state: Mapping[str, Hidden],
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
                2008.05247 and the first-order variant of Andrychowicz et al.: the gradients
                are detached, which drops the Hessian terms and most of the cost.
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
            steps, hidden = self.steps(grad_list, [state[n] for n in names])
            new_params = {n: p if create_graph else p.detach() for n, p in params.items()}
            new_state = dict(state)
            for i, (n, hc) in enumerate(zip(names, hidden, strict=True)):
                factor = scale[n] if isinstance(scale, Mapping) else scale
                if factor != 1.0:
                    steps[i] = steps[i] * factor
                new_params[n] = new_params[n] + steps[i]
                new_state[n] = hc
        stats = UpdateStats(update_norm=_norm(steps), grad_norm=_norm(grad_list))
        return new_params, new_state, stats

    # -- persistence ------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        """Configuration, weights and format version as one ``torch.save``-able dict."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`payload` to ``path`` atomically (an interrupted save keeps the old file)."""
        path = Path(path)
        payload = self.payload()
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
        return path

    @classmethod
    def from_payload(
        cls, payload: Any, *, source: str, config: LSTMOptimizerConfig | None = None
    ) -> LSTMOptimizer:
        """Rebuild an optimizer from :meth:`payload`; ``source`` names it in error messages.

        Raises:
            L2LError: the payload is not a learned optimizer, is from another format version,
                does not match ``config`` (when given), or its weights do not fit its shape.
        """
        if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
            raise L2LError(
                f"{source} is not a learned-optimizer file: pass a file written by "
                "LSTMOptimizer.save (e.g. by `l2l meta train`)"
            )
        if payload.get("version") != FORMAT_VERSION:
            raise L2LError(
                f"{source} has learned-optimizer format version {payload.get('version')!r}, "
                f"this l2l_gail reads version {FORMAT_VERSION}: re-train it with this version"
            )
        try:
            stored = LSTMOptimizerConfig(**payload["config"])
        except (TypeError, KeyError) as exc:
            raise L2LError(
                f"{source} has an unreadable learned-optimizer configuration ({_one_line(exc)}): "
                "re-train it with this version"
            ) from exc
        if config is not None and config != stored:
            diff = ", ".join(
                f"{k}={v!r} (wanted {getattr(config, k)!r})"
                for k, v in stored.to_dict().items()
                if getattr(config, k) != v
            )
            raise L2LError(
                f"{source} holds a learned optimizer with another configuration: {diff}; "
                "pass matching options or another file"
            )
        learned = cls(stored)
        try:
            learned.load_state_dict(payload["state_dict"])
        except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
            raise L2LError(
                f"{source} has weights that do not fit its configuration "
                f"({_one_line(exc)}): the file is corrupted; re-save or re-train it"
            ) from exc
        return learned

    @classmethod
    def load(
        cls, path: str | Path, *, config: LSTMOptimizerConfig | None = None
    ) -> LSTMOptimizer:
        """Load an optimizer written by :meth:`save` (on the CPU; move it with ``.to``).

        Args:
            path: the file.
            config: if given, the file must hold exactly this configuration.

        Raises:
            L2LError: the file is missing, unreadable, from another format version or
                configuration, or its weights are damaged.
        """
        path = Path(path)
        if not path.is_file():
            raise L2LError(
                f"learned-optimizer file {path} does not exist: check the path or train one "
                "with `l2l meta train`"
            )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unpickling failure means a damaged file
            raise L2LError(
                f"{path} is not a readable learned-optimizer file ({type(exc).__name__}): "
                "it is truncated or corrupted; re-save or re-train it"
            ) from exc
        return cls.from_payload(payload, source=str(path), config=config)


def _norm(tensors: Iterable[Tensor]) -> float:
    squares = [t.detach().double().square().sum() for t in tensors]
    return math.sqrt(float(torch.stack(squares).sum())) if squares else 0.0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- meta-training helpers ----------------------------------------------------------------


def meta_step(
    objective: Tensor, meta_opt: torch.optim.Optimizer, *, max_grad_norm: float | None = 1.0
) -> MetaStepStats:
    """One step of ``meta_opt`` on the objective measured after the learned update(s).

    Only the tensors ``meta_opt`` holds receive gradients (``torch.autograd.grad``, not
    ``backward``), so the optimizee's parameters and any module the objective touched keep
    their ``.grad`` untouched. Their ``.grad`` is replaced, not accumulated. The gradient is
    clipped to ``max_grad_norm`` because unrolled meta-gradients are heavy-tailed (a single
    bad unroll otherwise wrecks ``phi``). Works for any learned inner optimizer.

    Raises:
        L2LError: the objective or its gradient is not finite (the meta-training diverged).
    """
    value = float(objective.detach())
    if not math.isfinite(value):
        raise L2LError(
            f"the meta-loss is {value}: meta-training diverged; lower the meta learning rate "
            "or the learned optimizer's output_scale / set max_step"
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
        norm = _norm(grads)
    else:
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    if not math.isfinite(norm):
        raise L2LError(
            "the meta-gradient is not finite: meta-training diverged; lower the meta learning "
            "rate or the learned optimizer's output_scale / set max_step"
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


def detach_state(state: Mapping[str, Hidden]) -> State:
    """The same memory cut from the graph: the truncation point of truncated BPTT."""
    return {name: (h.detach(), c.detach()) for name, (h, c) in state.items()}


def unroll(
    learned: LSTMOptimizer,
    params: Mapping[str, Tensor],
    loss_fn: Callable[[Params, int], Tensor],
    steps: int,
    *,
    state: Mapping[str, Hidden] | None = None,
    start: int = 0,
    second_order: bool = False,
) -> UnrollResult:
    """One truncation of back-propagation through time over ``steps`` learned updates.

    ``loss_fn(params, t)`` is the optimizee's loss at optimizer step ``t`` on a batch the caller
    picks (clean, FGSM or PGD against the current parameters, ...), usually via
    ``torch.func.functional_call(module, params, x)``. The loss at the incoming parameters only
    supplies the first gradient; each later loss is both a meta-loss term and the next
    gradient's source, so an unroll costs ``steps + 1`` forward and backward passes. The
    meta-loss is the sum of the ``steps`` losses after each update (Andrychowicz et al. 2016,
    eq. 3 with ``w_t = 1``).

    Args:
        learned: the optimizer being meta-trained.
        params: the optimizee's parameters; detached here, which truncates the previous unroll.
        loss_fn: ``(params, step) -> scalar loss``.
        steps: the truncation length ``T`` (20 in 2008.05247).
        state: the optimizer's memory (detached here); fresh when omitted.
        start: the index of the first step, so that ``loss_fn`` can pick batches across
            consecutive truncations.
        second_order: differentiate through the optimizee's gradients (costly; off in the
            papers' default setting).
    """
    if steps < 1:
        raise ValueError(f"an unroll needs at least one step, got {steps}")
    current: Params = {n: p.detach().requires_grad_() for n, p in params.items()}
    memory = learned.init_state(current) if state is None else detach_state(state)
    loss = loss_fn(current, start)
    meta_loss = torch.zeros((), device=loss.device, dtype=loss.dtype)
    losses: list[float] = []
    for t in range(steps):
        names = list(current)
        grads = torch.autograd.grad(
            loss, [current[n] for n in names], retain_graph=t > 0,
            create_graph=second_order, allow_unused=True,
        )
        current, memory, _ = learned.update(
            current, dict(zip(names, grads, strict=True)), memory,
            create_graph=True, second_order=second_order,
        )
        loss = loss_fn(current, start + t + 1)
        meta_loss = meta_loss + loss
        losses.append(float(loss.detach()))
    return UnrollResult(meta_loss=meta_loss, params=current, state=memory, losses=losses)


def lookahead_step(
    learned: LSTMOptimizer,
    module: nn.Module,
    state: Mapping[str, Hidden] | None,
    train_loss: Callable[[Params], Tensor],
    heldout_loss: Callable[[Params], Tensor],
    meta_opt: torch.optim.Optimizer,
    *,
    names: Iterable[str] | None = None,
    scale: float | Mapping[str, float] = 1.0,
    max_grad_norm: float | None = 1.0,
    second_order: bool = False,
) -> tuple[State, LookaheadStats]:
    """One online learned step whose ``phi`` is trained on a held-out batch after the step.

    The L2L-GAIL discriminator update (DESIGN.md, section 3): gradients of ``train_loss`` at the
    module's current parameters, one learned update, ``heldout_loss`` of the updated parameters
    on a fresh batch, one :func:`meta_step` on ``phi``, then the updated parameters (the ones
    just evaluated) are written back into ``module``, detached. Measuring the objective on
    held-out data is what keeps ``phi`` from learning to over-fit the training batch.

    Online, ``phi`` chases a moving optimizee, so it needs a smaller meta learning rate than
    offline unrolled meta-training: on a small MLP regression, Adam at 1e-3 on ``phi`` trained
    the MLP steadily, while 3e-3 and 1e-2 first sped up and then diverged (steps grew until
    they overshot), with or without ``max_step``.

    Args:
        learned: the learned optimizer (``meta_opt`` holds its parameters).
        module: the optimizee, updated in place.
        state: the optimizer's memory for ``module``'s parameters; fresh when ``None``.
        train_loss: ``params -> loss`` on the training batch (via ``functional_call``).
        heldout_loss: ``params -> loss`` on the held-out batch.
        meta_opt: the optimizer of ``phi`` (Adam in both papers).
        names: the parameters to update (default: every trainable parameter).
        scale: a factor on the learned step (see :meth:`LSTMOptimizer.update`).
        max_grad_norm: clipping of the meta-gradient.
        second_order: differentiate through the training gradients.

    Returns:
        The new (detached) memory and the step's statistics.
    """
    params = trainable_params(module, names)
    memory = learned.init_state(params) if state is None else detach_state(state)
    loss = train_loss(params)
    names_list = list(params)
    grads = torch.autograd.grad(
        loss, [params[n] for n in names_list], create_graph=second_order, allow_unused=True
    )
    new_params, memory, update = learned.update(
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


# -- torch.optim wrapper ------------------------------------------------------------------


class LearnedOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose step is the learned ``g_phi``.

    The constructor matches what stable-baselines3 (``optimizer_class(params, lr=...,
    **optimizer_kwargs)``) and imitation (``disc_opt_cls(params, **disc_opt_kwargs)``) call,
    so the learned optimizer is injected, not forked in::

        PPO("MlpPolicy", env, policy_kwargs={"optimizer_class": LearnedOptimizer,
                                             "optimizer_kwargs": {"learned": "phi.pt"}})

    Each parameter's LSTM memory lives in ``self.state[p]`` (``"h"``, ``"c"``), and
    ``state_dict()`` also carries ``phi`` (under ``"learned"``), so a checkpoint resumes
    bit-for-bit even while ``phi`` is being trained online. ``step()`` never builds a graph;
    to train ``phi`` use :meth:`lookahead_step` or the functional helpers.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        lr: the learning rate; stored so schedulers can set it, and used only through
            ``reference_lr``.
        learned: an :class:`LSTMOptimizer` (shared, not copied: training it elsewhere changes
            this optimizer's steps), a path to one saved with :meth:`LSTMOptimizer.save`, or
            ``None`` for a fresh one -- which makes zero steps until ``phi`` is trained, e.g.
            online with :meth:`lookahead_step` and ``Adam(opt.learned.parameters())``. It is
            moved to the parameters' device.
        reference_lr: if set, each group's learned step is multiplied by ``lr / reference_lr``,
            so stable-baselines3's learning-rate schedule still acts; if ``None`` the learned
            step is used as is.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        *,
        learned: LSTMOptimizer | str | Path | None = None,
        reference_lr: float | None = None,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"invalid learning rate {lr}")
        if reference_lr is not None and not reference_lr > 0:
            raise ValueError(f"reference_lr must be positive, got {reference_lr}")
        super().__init__(params, {"lr": lr, "reference_lr": reference_lr})
        if learned is None:
            learned = LSTMOptimizer()
        elif not isinstance(learned, LSTMOptimizer):
            learned = LSTMOptimizer.load(learned)
        first = next(p for group in self.param_groups for p in group["params"])
        self.learned = learned.to(first.device)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "learned": self.learned}

    @staticmethod
    def _factor(group: Mapping[str, Any]) -> float:
        ref = group["reference_lr"]
        return 1.0 if ref is None else group["lr"] / ref

    def _memory(self, p: Tensor) -> Hidden:
        state = self.state[p]
        if "h" not in state:
            state["h"], state["c"] = self.learned.zero_hidden(p.numel())
        return state["h"], state["c"]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Apply the learned step to every parameter with a gradient (one LSTM call in all)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads, factors = [], [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LearnedOptimizer does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
                factors.append(self._factor(group))
        steps, hidden = self.learned.steps(grads, [self._memory(p) for p in params])
        for p, s, factor, (h, c) in zip(params, steps, factors, hidden, strict=True):
            p.add_(s, alpha=factor)
            self.state[p]["h"], self.state[p]["c"] = h, c
        return loss

    def lookahead_step(
        self,
        module: nn.Module,
        train_loss: Callable[[Params], Tensor],
        heldout_loss: Callable[[Params], Tensor],
        meta_opt: torch.optim.Optimizer,
        *,
        max_grad_norm: float | None = 1.0,
        second_order: bool = False,
    ) -> LookaheadStats:
        """:func:`lookahead_step` on this optimizer's parameters within ``module``.

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
        for n, (h, c) in state.items():
            self.state[named[n][0]]["h"], self.state[named[n][0]]["c"] = h, c
        return stats

    def state_dict(self) -> dict[str, Any]:
        """The ``torch.optim`` state dict plus ``phi`` (``"learned"``), for exact resumption."""
        return {**super().state_dict(), "learned": self.learned.payload()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore memory and param groups, and ``phi`` in place (so a meta-optimizer holding
        ``phi`` keeps working). A state dict without ``"learned"`` keeps the current ``phi``.

        Raises:
            L2LError: the stored ``phi`` has another configuration than this optimizer's.
        """
        state_dict = dict(state_dict)
        payload = state_dict.pop("learned", None)
        if payload is not None:
            stored = LSTMOptimizer.from_payload(
                payload, source="the optimizer state dict", config=self.learned.config
            )
            self.learned.load_state_dict(stored.state_dict())
        super().load_state_dict(state_dict)
