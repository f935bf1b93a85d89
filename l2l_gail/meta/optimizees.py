"""Optimizees of the meta mode: the models a learned optimizer trains, and the limit on their size.

Serban et al. (arXiv 2008.05247) meta-train on the MNIST multi-layer perceptron of Andrychowicz
et al. (arXiv 1606.04474, sec. 3.2: one hidden layer of 20 sigmoid units, 784-20-10) and
transfer to other architectures. Here the optimizee family is that MLP plus every classifier of
the robustness toolkit (:data:`l2l_gail.robust.models.MODELS`).
"""

from __future__ import annotations

import torch
from torch import nn

from l2l_gail.core import LSTMRuleConfig
from l2l_gail.errors import L2LError
from l2l_gail.robust.models import MODELS, build_model, check_width

OPTIMIZEES = ("mlp", *MODELS)
DEFAULT_MAX_PARAMS = 1_000_000
"""Largest optimizee the coordinatewise optimizer serves by default (see :func:`check_servable`)."""


class MLP(nn.Module):
    """``in -> hidden -> classes`` with a sigmoid hidden layer (1606.04474's MNIST optimizee).

    Args:
        in_features: flattened input size (784 for MNIST).
        num_classes: output units.
        hidden: hidden units (20 in both papers).
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10, hidden: int = 20) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.Sigmoid(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_optimizee(name: str, shape: tuple[int, int, int], num_classes: int,
                    width: int | None = None) -> nn.Module:
    """An optimizee by name (one of :data:`OPTIMIZEES`) for images of ``shape`` (C, H, W).

    ``width`` is the MLP's hidden units (default 20) or the vision model's width.
    """
    c, h, w = shape
    if name == "mlp":
        return MLP(c * h * w, num_classes, check_width(width) or 20)
    if name not in MODELS:
        raise L2LError(f"unknown model {name!r}; choose one of {', '.join(OPTIMIZEES)}")
    return build_model(name, c, num_classes, width=width, image_size=h)


def bytes_per_param(config: LSTMRuleConfig) -> int:
    """Float32 memory the optimizer keeps per optimizee coordinate: ``(h, c)`` of every layer."""
    return 2 * config.num_layers * config.hidden_size * 4


def check_servable(model: nn.Module, config: LSTMRuleConfig,
                   max_params: int = DEFAULT_MAX_PARAMS) -> int:
    """The model's trainable parameter count, or an error if the learned optimizer cannot serve it.

    A coordinatewise optimizer has no architectural limit -- one LSTM serves any number of
    coordinates -- so "cannot serve" is a resource limit: it runs its LSTM over *every*
    coordinate at *every* step (about 0.5-0.8 us per coordinate per step on one CPU core for 2 x 20
    units, 10-20x an Adam step) and keeps ``bytes_per_param`` bytes of memory per coordinate, plus
    the LSTM's activations for all coordinates during the step. Above ``max_params`` coordinates
    (default one million: >= 0.3 GB of memory and ~0.5-1 s per step) the run is refused rather
    than left to crawl or exhaust memory; raise ``--max-params`` deliberately to go beyond.
    A model with no trainable parameter is refused too (there is nothing to optimize).
    """
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        raise L2LError("the model has no trainable parameter: there is nothing for the optimizer to train")
    if n > max_params:
        mb = n * bytes_per_param(config) / 2**20
        raise L2LError(
            f"{type(model).__name__} has {n:,} parameters, above the learned optimizer's limit of "
            f"{max_params:,} (its LSTM state alone would take {mb:,.0f} MB and every step runs the LSTM "
            f"over all coordinates): use a smaller --width or raise --max-params")
    return n

