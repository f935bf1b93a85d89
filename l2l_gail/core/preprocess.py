"""Gradient preprocessing for coordinatewise learned optimizers.

Gradients of different parameters span many orders of magnitude, which an LSTM with
saturating gates cannot read directly. Andrychowicz et al., *Learning to learn by gradient
descent by gradient descent* (NeurIPS 2016, arXiv 1606.04474, appendix A) feed it two
features per coordinate instead: the log-magnitude and the sign, switching to a scaled linear
read-out below ``exp(-p)`` where the logarithm would blow up.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def preprocess_gradients(g: Tensor, p: float = 10.0) -> Tensor:
    """Map each gradient coordinate to two features (Andrychowicz et al. 2016, appendix A).

    ``(log|g| / p, sign g)`` if ``|g| >= exp(-p)``, else ``(-1, exp(p) * g)``.

    Args:
        g: gradients of any shape.
        p: the cut-off exponent; 10 in the paper.

    Returns:
        A tensor of shape ``(*g.shape, 2)`` with values in about ``[-1, 1]`` for gradients of
        magnitude at most ``1``. Differentiable in ``g`` (both branches are finite), so
        second-order meta-gradients may flow through it.
    """
    if p <= 0:
        raise ValueError(f"preprocess exponent p must be positive, got {p}")
    cutoff = math.exp(-p)
    magnitude = g.abs()
    large = magnitude >= cutoff
    # The clamp keeps log() finite on the small branch, so torch.where's unused branch
    # cannot leak inf/nan gradients into a second-order meta-gradient.
    log_feature = torch.where(large, magnitude.clamp_min(cutoff).log() / p, -torch.ones_like(g))
    sign_feature = torch.where(large, torch.sign(g), g * math.exp(p))
    return torch.stack((log_feature, sign_feature), dim=-1)
