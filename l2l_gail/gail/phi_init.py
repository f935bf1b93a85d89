"""A starting point for the learned optimizer's ``phi``: imitate Adam.

A fresh :class:`~l2l_gail.core.LSTMRule` has a zero output head, so it makes no steps until
``phi`` is trained; online look-ahead training alone (``docs/design.md``, "The GAIL mode") would
then spend its first rounds discovering that steps should be taken at all, while the generator
already learns against a frozen discriminator. Instead, ``phi`` starts as a behaviour clone of Adam (Kingma &
Ba 2015, arXiv 1412.6980), the baselines' optimizer: it is regressed onto Adam's per-coordinate
steps on synthetic gradient streams. So L2L-GAIL begins as the ``gail`` baseline, and any
difference between the two is caused by the online training of ``phi`` on held-out data.

Adam's step divided by its learning rate depends only on the gradient history of the
coordinate, not on the model, so one clone serves every discriminator and policy: the clone is
trained with ``output_scale = 1`` to output Adam's step in units of the learning rate (its
``step_units`` are ``lr``), and the :class:`~l2l_gail.core.LearnedOptimizer` multiplies it by
``lr`` (``reference_lr = 1``), which also keeps stable-baselines3's learning-rate schedule in force.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import Tensor

from l2l_gail.core import LSTMRule, LSTMRuleConfig, preprocess_gradients


@dataclasses.dataclass(frozen=True)
class AdamCloneConfig:
    """How :func:`adam_clone` fits ``phi`` (defaults take a few seconds on one CPU thread)."""

    iterations: int = 200
    """Adam steps on ``phi``."""
    coords: int = 128
    """Synthetic gradient coordinates per iteration."""
    horizon: int = 40
    """Steps per synthetic gradient stream (back-propagated through in full)."""
    lr: float = 2e-2
    """Learning rate of the Adam that fits ``phi``."""
    betas: tuple[float, float] = (0.9, 0.999)
    """The imitated Adam's betas (PyTorch's defaults, which the baselines use)."""
    seed: int = 0
    """Seed of the synthetic streams and of ``phi``'s initial LSTM weights."""


def gradient_streams(coords: int, horizon: int, gen: torch.Generator) -> Tensor:
    """``(horizon, coords)`` synthetic gradients: a drifting signal plus noise, over six decades.

    Each coordinate has a scale (log-uniform in ``[1e-6, 1]``), a signal-to-noise ratio
    (uniform in ``[0, 2]``) and a sinusoidal drift of random period and phase, so the streams
    span steady, noisy and sign-flipping gradients as a discriminator's do.
    """
    scale = 10.0 ** (-6.0 * torch.rand(coords, generator=gen))
    snr = 2.0 * torch.rand(coords, generator=gen)
    period = 10.0 ** (1.0 + 2.0 * torch.rand(coords, generator=gen))
    phase = 2.0 * math.pi * torch.rand(coords, generator=gen)
    t = torch.arange(horizon, dtype=torch.float32).unsqueeze(1)
    signal = snr * torch.cos(2.0 * math.pi * t / period + phase)
    noise = torch.randn(horizon, coords, generator=gen)
    return scale * (signal + noise)


def adam_steps(grads: Tensor, betas: tuple[float, float], eps: float = 1e-8) -> Tensor:
    """Adam's bias-corrected steps for unit learning rate, per step and coordinate."""
    b1, b2 = betas
    m = torch.zeros_like(grads[0])
    v = torch.zeros_like(grads[0])
    steps = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        steps.append(-(m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps))
    return torch.stack(steps)


def clone_error(learned: LSTMRule, grads: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference between the learned steps and ``target`` along ``grads``.

    Runs the whole ``(horizon, coords)`` stream through the LSTM in one call, which is what
    :meth:`LSTMRule.forward` does one step at a time (same preprocessing, head and scale).
    """
    cfg = learned.config
    features = preprocess_gradients(grads, cfg.preprocess_p)
    out, _ = learned.lstm(features, learned.init_memory(grads.shape[1]))
    steps = learned.head(out).squeeze(-1) * cfg.output_scale
    return (steps - target).square().mean()


@functools.lru_cache(maxsize=4)
def _fitted_state(config: AdamCloneConfig, lstm: LSTMRuleConfig) -> tuple[dict[str, Tensor], float]:
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng():  # the network's initialisation must not move the caller's RNG
        torch.manual_seed(config.seed)
        learned = LSTMRule(lstm)
    opt = torch.optim.Adam(learned.parameters(), lr=config.lr)
    for _ in range(config.iterations):
        grads = gradient_streams(config.coords, config.horizon, gen)
        loss = clone_error(learned, grads, adam_steps(grads, config.betas))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(learned.parameters(), 1.0)
        opt.step()
    grads = gradient_streams(4 * config.coords, 4 * config.horizon, gen)
    with torch.no_grad():
        final = float(clone_error(learned, grads, adam_steps(grads, config.betas)))
    return {k: v.detach().clone() for k, v in learned.state_dict().items()}, final


def adam_clone(config: AdamCloneConfig | None = None,
               lstm: LSTMRuleConfig | None = None) -> tuple[LSTMRule, float]:
    """A learned optimizer fitted to imitate Adam (steps in units of the learning rate).

    Deterministic for a given configuration (at a fixed number of torch threads) and cached
    within the process, so every run and seed of an experiment starts from the same ``phi``.

    Args:
        config: the fit's settings.
        lstm: the network's shape; its ``output_scale`` must be 1 (steps in units of ``lr``).

    Returns:
        ``(learned, error)``: a fresh copy of the fitted optimizer, and its mean squared step
        error (in units of ``lr``, squared) on held-out streams four times longer than those
        it was fitted on.
    """
    config = config or AdamCloneConfig()
    lstm = lstm or LSTMRuleConfig(output_scale=1.0)
    if lstm.output_scale != 1.0:
        raise ValueError("an Adam clone outputs steps in units of lr: use output_scale=1")
    state, error = _fitted_state(config, lstm)
    learned = LSTMRule(lstm, step_units="lr")
    learned.load_state_dict(state)
    return learned, error
