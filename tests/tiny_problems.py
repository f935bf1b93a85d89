"""Tiny, seeded training problems shared by the core tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def regression(seed: int) -> tuple[nn.Module, Tensor, Tensor]:
    """A 4-16-1 tanh MLP (initialised from ``seed``) and 64 points of ``sin(sum(x))``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=gen)
    y = torch.sin(x.sum(1, keepdim=True))
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)), x, y
