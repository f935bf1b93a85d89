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


def clean_small_cnn(train_x: Tensor, train_y: Tensor, *, channels: int, classes: int, width: int,
                    image_size: int) -> nn.Module:
    """A small CNN trained for 5 epochs on clean batches (Adam 1e-2, seed 0), in eval mode: the
    fixed classifier that the vision tests attack."""
    import torch.nn.functional as F

    from l2l_gail.robust import data as D
    from l2l_gail.robust.models import build_model

    torch.manual_seed(0)
    model = build_model("small-cnn", channels, classes, width=width, image_size=image_size)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(5):
        for x, y in D.batches(train_x, train_y, 64, generator=torch.Generator().manual_seed(0)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()
