"""Optimizees of the meta mode: the models a learned optimizer trains, and the limit on their size.

Serban et al. (arXiv 2008.05247) meta-train on a 784-20-10 MNIST multi-layer perceptron, the
size of Andrychowicz et al.'s (arXiv 1606.04474, sec. 3.2, whose hidden units are sigmoid), and
transfer to other architectures. The authors' code (``xserban/Learning2LearnAdv``,
``l2l/constants.py``) uses ReLU hidden units with Xavier (Glorot) initialisation, the default
here; ``activation="sigmoid"`` with PyTorch's default initialisation is this library's
optimizee before issue 15, kept to reproduce and resume those runs. The optimizee family is that
MLP plus every classifier of the robustness toolkit (:data:`l2l_gail.robust.models.MODELS`).
"""

from __future__ import annotations

import torch
from torch import nn

from l2l_gail.core import UpdateRule
from l2l_gail.errors import L2LError
from l2l_gail.robust.models import MODELS, build_model, check_width

OPTIMIZEES = ("mlp", *MODELS)
ACTIVATIONS = ("relu", "sigmoid")
"""Hidden activations of the MLP optimizee (see the module docstring)."""
BENCHMARK_WIDTHS: dict[str, int | None] = {"mlp": None, "small-cnn": 8}
"""The optimizees the meta benchmarks train (``scripts/bench_meta.py``'s frontier,
``scripts/bench_rule_cost.py``) and their widths (:func:`build_optimizee`; None: the MLP's default
20 hidden units)."""


def check_activation(activation: str) -> None:
    """The one check of ``--activation``, for the configurations and the MLP."""
    if activation not in ACTIVATIONS:
        raise L2LError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")


DEFAULT_MAX_PARAMS = 1_000_000
"""Largest optimizee the coordinatewise optimizer serves by default (see :func:`check_servable`)."""


class MLP(nn.Module):
    """``in -> hidden -> classes``, one hidden layer (the meta papers' MNIST optimizee).

    Args:
        in_features: flattened input size (784 for MNIST).
        num_classes: output units.
        hidden: hidden units (20 in both papers).
        activation: ``relu`` (2008.05247's code), with Xavier-uniform weights and zero biases
            (TensorFlow's ``glorot_uniform`` default, which that code inherits), or ``sigmoid``
            (1606.04474's units) with PyTorch's default initialisation (see the module docstring).
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10, hidden: int = 20,
                 activation: str = "relu") -> None:
        super().__init__()
        check_activation(activation)
        act = nn.ReLU() if activation == "relu" else nn.Sigmoid()
        layers = (nn.Linear(in_features, hidden), nn.Linear(hidden, num_classes))
        if activation == "relu":
            for layer in layers:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.net = nn.Sequential(nn.Flatten(), layers[0], act, layers[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_optimizee(name: str, shape: tuple[int, int, int], num_classes: int,
                    width: int | None = None, activation: str = "relu") -> nn.Module:
    """An optimizee by name (one of :data:`OPTIMIZEES`) for images of ``shape`` (C, H, W).

    ``width`` is the MLP's hidden units (default 20) or the vision model's width; ``activation``
    the MLP's hidden activation (:data:`ACTIVATIONS`; the vision models have their own).
    """
    c, h, w = shape
    if name == "mlp":
        return MLP(c * h * w, num_classes, check_width(width) or 20, activation)
    if name not in MODELS:
        raise L2LError(f"unknown model {name!r}; choose one of {', '.join(OPTIMIZEES)}")
    return build_model(name, c, num_classes, width=width, image_size=h)


def bytes_per_param(rule: UpdateRule) -> int:
    """Memory the rule keeps per optimizee coordinate (the LSTM's ``(h, c)`` of every layer, the
    MLP rule's momenta and second moment), measured on the memory of one coordinate."""
    return sum(t.numel() * t.element_size() for t in rule.init_memory(1))


def check_servable(model: nn.Module, rule: UpdateRule,
                   max_params: int = DEFAULT_MAX_PARAMS) -> int:
    """The model's trainable parameter count, or an error if the learned optimizer cannot serve it.

    A coordinatewise optimizer has no architectural limit -- one network serves any number of
    coordinates -- so "cannot serve" is a resource limit: it runs its network over *every*
    coordinate at *every* step (for the 2 x 20 LSTM about 0.5-0.8 us per coordinate per step on one
    CPU core, 10-20x an Adam step) and keeps ``bytes_per_param`` bytes of memory per coordinate,
    plus the network's activations for all coordinates during the step. Above ``max_params``
    coordinates (default one million: >= 0.3 GB of memory and ~0.5-1 s per step for the LSTM) the
    run is refused rather than left to crawl or exhaust memory; raise ``--max-params`` deliberately
    to go beyond.
    A model with no trainable parameter is refused too (there is nothing to optimize).
    """
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        raise L2LError("the model has no trainable parameter: there is nothing for the optimizer to train")
    if n > max_params:
        mb = n * bytes_per_param(rule) / 2**20
        raise L2LError(
            f"{type(model).__name__} has {n:,} parameters, above the learned optimizer's limit of "
            f"{max_params:,} (its memory alone would take {mb:,.0f} MB and every step runs the "
            f"{rule.name} over all coordinates): use a smaller --width or raise --max-params")
    return n

