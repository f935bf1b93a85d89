"""The cost-robustness frontier of adversarial training: its configurations and its arithmetic.

A *point* is one training configuration, named so that the name alone rebuilds it:

* ``pgd-<k>`` -- PGD-k adversarial training; ``pgd-1`` is FGSM with a random start (FGSM-RS,
  Wong et al. 2020), the one-step member of the family;
* ``trades`` -- TRADES (its inner PGD-10);
* ``l2l-grad-w<W>`` / ``l2l-2step-w<W>`` -- a learned attacker (1811.01213) of width multiplier
  ``W``, optionally ``-it<N>`` (N attacker updates per classifier update, the official
  ``--att_iter``), and the official code's details as suffixes: ``+tmg`` (train-mode input
  gradient), ``+oinit`` (the official attacker initialisation).

The PGD-k points are the reference family: its Pareto front over (training FLOPs per step,
robust accuracy) says how much robustness each budget buys with hand-designed attacks, and a
learned attacker is judged by where it lies against that front at its own cost
(:func:`frontier_summary`).
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from l2l_gail.errors import L2LError

PGD_KS = (1, 2, 3, 5, 10)
L2L_WIDTHS = (0.041, 0.125, 0.25)
ATT_ITERS = (2, 4)
ATT_ITER_WIDTH = 0.041
"""The attacker width of the ``-it<N>`` points: the narrowest, where extra attacker updates cost least."""
OPTION_SUFFIXES: dict[str, dict[str, Any]] = {"tmg": {"train_mode_grad": True},
                                              "oinit": {"attacker_init": "official"}}

_NAME = re.compile(r"(?P<base>pgd-(?P<k>\d+)|trades|(?P<l2l>l2l-grad|l2l-2step)-w(?P<w>[0-9.]+)"
                   r"(?:-it(?P<it>\d+))?)(?P<opts>(?:\+[a-z]+)*)")


def frontier_points(l2l_options: Sequence[str] = ()) -> list[str]:
    """The issue's point set; ``l2l_options`` (keys of :data:`OPTION_SUFFIXES`) apply to every L2L point."""
    suffix = "".join(f"+{o}" for o in l2l_options)
    names = [f"pgd-{k}" for k in PGD_KS] + ["trades"]
    names += [f"{m}-w{w}{suffix}" for m in ("l2l-grad", "l2l-2step") for w in L2L_WIDTHS]
    names += [f"l2l-grad-w{ATT_ITER_WIDTH}-it{n}{suffix}" for n in ATT_ITERS]
    return names


def option_points(width: float = ATT_ITER_WIDTH) -> list[str]:
    """The options study: l2l-grad at ``width`` alone, with each official detail, and with both.
    (Best-epoch selection needs no run of its own: every run records its last and best epoch.)"""
    base = f"l2l-grad-w{width}"
    return [base, f"{base}+tmg", f"{base}+oinit", f"{base}+tmg+oinit"]


OPTION_TIE = 0.005
"""Option configurations whose validation accuracy is within this of the best count as tied;
the one with fewer official details wins (results/vision/options-plan.md)."""
OVERFIT_GAP = 0.01
"""The frontier judges each point by its best-validation epoch when the chosen configuration's
validation accuracy ends this far below its peak on average, else by its last epoch."""


def choose_options(val_last: Mapping[str, Sequence[float]],
                   val_peak: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """The options study's choice, by the rule results/vision/options-plan.md fixed before its runs.

    ``val_last`` and ``val_peak`` map each point of :func:`option_points` to its seeds' PGD-10
    accuracy on the validation split at the last epoch and at the best one. The chosen point is
    the one with the highest mean last-epoch accuracy, where points within :data:`OPTION_TIE`
    of it go to the one with fewest details (then the first in ``val_last``'s order); the
    checkpoint is ``best`` if the chosen point's mean drop from peak to last is at least
    :data:`OVERFIT_GAP`, else ``last``. Only validation numbers enter: the test set is left to
    the frontier.
    """
    if not val_last:
        raise L2LError("the options study has no finished point to choose from")
    means = {p: statistics.fmean(v) for p, v in val_last.items()}
    top = max(means.values())
    tied = [p for p in val_last if means[p] >= top - OPTION_TIE]
    chosen = min(tied, key=lambda p: len(p.split("+")))
    gap = statistics.fmean(peak - last for peak, last in zip(val_peak[chosen], val_last[chosen], strict=True))
    return {"point": chosen, "l2l_options": chosen.split("+")[1:], "val_last_mean": means,
            "peak_minus_last": gap, "select": "best" if gap >= OVERFIT_GAP else "last"}


def is_l2l(name: str) -> bool:
    return name.startswith("l2l-")


def point_config(name: str) -> dict[str, Any]:
    """The :class:`~l2l_gail.vision.train.VisionConfig` fields that make point ``name``."""
    m = _NAME.fullmatch(name)
    if m is None:
        raise L2LError(f"unknown frontier point {name!r}: expected pgd-<k>, trades or "
                       "l2l-grad|l2l-2step-w<width>[-it<n>][+tmg][+oinit]")
    out: dict[str, Any]
    if m["k"] is not None:
        k = int(m["k"])
        if k < 1:
            raise L2LError(f"frontier point {name!r}: PGD needs k >= 1")
        out = {"method": "fgsm-rs"} if k == 1 else {"method": "pgd", "pgd_steps": k}
    elif m["base"] == "trades":
        out = {"method": "trades"}
    else:
        out = {"method": m["l2l"], "attacker_width": float(m["w"])}
        if m["it"] is not None:
            out["att_iter"] = int(m["it"])
    for opt in filter(None, m["opts"].split("+")):
        if opt not in OPTION_SUFFIXES or m["l2l"] is None:
            raise L2LError(f"frontier point {name!r}: unknown or misplaced option +{opt} "
                           f"(L2L points take {', '.join('+' + o for o in OPTION_SUFFIXES)})")
        out.update(OPTION_SUFFIXES[opt])
    return out


@dataclass(frozen=True)
class Measured:
    """One point's cost and its robust accuracy over seeds."""

    cost: float
    robust: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.robust)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for one seed)."""
        return statistics.stdev(self.robust) if len(self.robust) > 1 else 0.0


def pareto_front(points: Mapping[str, Measured]) -> list[str]:
    """The names of the points no other point dominates (as cheap or cheaper and at least as
    robust, strictly better in one), ordered by cost; of two points equal in both, the name that
    sorts first."""
    front = []
    for name, p in points.items():
        dominated = any((q.cost <= p.cost and q.mean >= p.mean and (q.cost < p.cost or q.mean > p.mean))
                        or (q.cost == p.cost and q.mean == p.mean and other < name)
                        for other, q in points.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n].cost)


def front_at(front: Sequence[Measured], cost: float) -> tuple[float, float]:
    """The front's robust accuracy and its seeds' std at ``cost``: linear interpolation between
    the neighbouring front points (in cost, like the plot), the cheapest point's value below the
    front's range (a cheaper method must still match it) and the most robust point's above it
    (more budget can always buy that point)."""
    if not front:
        raise L2LError("the front is empty: no reference point has been measured")
    pts = sorted(front, key=lambda p: p.cost)
    if cost <= pts[0].cost:
        return pts[0].mean, pts[0].std
    if cost >= pts[-1].cost:
        return pts[-1].mean, pts[-1].std
    for a, b in itertools.pairwise(pts):
        if a.cost <= cost <= b.cost:
            t = (cost - a.cost) / (b.cost - a.cost)
            return a.mean + t * (b.mean - a.mean), a.std + t * (b.std - a.std)
    raise AssertionError("unreachable: cost lies within the front's range")


def frontier_summary(points: Mapping[str, Measured]) -> dict[str, Any]:
    """The PGD-k front and where every other point lies against it.

    ``margin`` is a point's mean robust accuracy minus the front's at its cost; ``margin_std``
    combines the seeds' standard deviations of both (``sqrt(s_point^2 + s_front^2)``). A point is
    ``on_or_above`` the front when it is not below it by more than that noise
    (``margin >= -margin_std``) and ``above`` when it beats it by more (``margin > margin_std``).
    """
    ref = {n: p for n, p in points.items() if n.startswith("pgd-")}
    front = pareto_front(ref)
    line = [ref[n] for n in front]
    placed = {}
    for name, p in points.items():
        if name in front:
            continue
        value, std = front_at(line, p.cost)
        margin, noise = p.mean - value, math.hypot(p.std, std)
        placed[name] = {"front_at_cost": value, "margin": margin, "margin_std": noise,
                        "on_or_above": margin >= -noise, "above": margin > noise}
    l2l = {n: v for n, v in placed.items() if is_l2l(n)}
    return {"front": front, "versus_front": placed,
            "l2l_on_or_above_front": any(v["on_or_above"] for v in l2l.values()),
            "l2l_above_front": any(v["above"] for v in l2l.values()),
            "best_l2l": max(l2l, key=lambda n: l2l[n]["margin"]) if l2l else None}
