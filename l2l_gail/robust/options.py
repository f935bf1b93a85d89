"""Range checks shared by the configurations of the robustness modes (vision, meta)."""

from __future__ import annotations

from typing import Any

from l2l_gail.errors import L2LError


def check_numbers(config: Any, *, at_least_one: tuple[str, ...] = (), positive: tuple[str, ...] = (),
                  non_negative: tuple[str, ...] = ()) -> None:
    """A one-line error naming the first option of ``config`` out of its range (``None``: unset, skipped).

    Sizes, counts and step numbers must be >= 1 (a zero or negative one is a typo that would
    otherwise crash deep inside torch, or silently fall back to a default); learning rates, step
    sizes and width multipliers > 0; loss weights and decays >= 0.
    """
    for names, ok, rule in ((at_least_one, lambda v: v >= 1, ">= 1"), (positive, lambda v: v > 0, "> 0"),
                            (non_negative, lambda v: v >= 0, ">= 0")):
        for name in names:
            value = getattr(config, name)
            if value is not None and not ok(value):
                raise L2LError(f"--{name.replace('_', '-')} must be {rule}, got {value}")
