"""Classifiers for 1- or 3-channel images: a small CNN, PreActResNet-18 and WideResNet.

Inputs are in [0, 1]; none of the models normalises its input, so the attacks' eps-balls
are in pixel units, as in the papers' code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from l2l_gail.errors import L2LError

MODELS = ("small-cnn", "preact-resnet18", "wide-resnet")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``model`` in eval mode (attacks see inference-time batch norm)."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


class SmallCNN(nn.Module):
    """Two conv layers and two linear layers (the usual MNIST model of adversarial-training papers,
    e.g. Madry et al. 2018), with ``width`` scaling the channel counts."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 2 * width * (image_size // 4) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 4 * width), nn.ReLU(),
                                  nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016, "Identity mappings in deep residual networks")."""

    def __init__(self, cin: int, cout: int, stride: int = 1, drop: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = drop
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = F.relu(self.bn2(out))
        if self.drop:
            out = F.dropout(out, self.drop, self.training)
        return self.conv2(out) + skip


class _PreActNet(nn.Module):
    """A stem conv, stages of pre-activation blocks (the first block of every stage but the first
    downsamples), then BN-ReLU, global average pooling and a linear head."""

    def __init__(self, in_channels: int, num_classes: int, stem: int, stages: list[tuple[int, int]],
                 drop: float = 0.0):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        layers, cin = [], stem
        for i, (cout, n) in enumerate(stages):
            for j in range(n):
                layers.append(PreActBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1, drop=drop))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class PreActResNet(_PreActNet):
    """Pre-activation ResNet: PreActResNet-18 is ``blocks=(2, 2, 2, 2)`` with ``width=64``.

    Used by Wong et al. 2020 and Rice et al. 2020 for CIFAR-10; ``width`` shrinks it for CPU runs.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64,
                 blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__(in_channels, num_classes, width, [(width * 2**i, n) for i, n in enumerate(blocks)])


def check_depth(depth: int) -> int:
    """``depth`` if it is a WideResNet depth, 6n+4 with n >= 1 blocks per stage, else a one-line error."""
    if depth < 10 or (depth - 4) % 6:
        raise L2LError(f"--depth of a WideResNet must be 6n+4 with n >= 1 (e.g. 16, 28, 34), got {depth}")
    return depth


class WideResNet(_PreActNet):
    """WideResNet-``depth``-``widen`` (Zagoruyko & Komodakis 2016); WRN-34-10 is the classifier
    of Madry et al., TRADES and the L2L paper's CIFAR experiments."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, depth: int = 34, widen: int = 10,
                 drop: float = 0.0):
        n = (check_depth(depth) - 4) // 6
        super().__init__(in_channels, num_classes, 16, [(16 * widen, n), (32 * widen, n), (64 * widen, n)],
                         drop)


def check_width(width: int | None) -> int | None:
    """``width`` if it is unset (the model's default) or >= 1, else a one-line error."""
    if width is not None and width < 1:
        raise L2LError(f"--width must be >= 1, got {width}")
    return width


def build_model(name: str, in_channels: int, num_classes: int, *, width: int | None = None,
                depth: int = 34, image_size: int = 32) -> nn.Module:
    """Construct a classifier by name (one of :data:`MODELS`).

    ``width`` is the base channel count (small-cnn: 32, preact-resnet18: 64) or the widen factor
    (wide-resnet: 10); ``depth`` applies to wide-resnet only.
    """
    check_width(width)
    if name == "small-cnn":
        return SmallCNN(in_channels, num_classes, width or 32, image_size)
    if name == "preact-resnet18":
        return PreActResNet(in_channels, num_classes, width or 64)
    if name == "wide-resnet":
        return WideResNet(in_channels, num_classes, depth, width or 10)
    raise L2LError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
