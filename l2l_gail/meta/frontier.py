"""Robustness at matched clean accuracy: Adam's frontier and a learned optimizer's margin over it.

Comparing a learned optimizer's model with *one* Adam model mixes robustness with how far each
is trained: on these small models an under-trained network is smoother, hence more robust at a
small eps, so whichever optimizer trains more slowly looks more robust. The frontier benchmark
(``scripts/bench_meta.py --frontier``) therefore records whole training curves -- clean and
attacked accuracy at checkpoints along training -- for Adam at several learning rates and for
each learned optimizer, and asks: at the same clean accuracy, is the learned optimizer's model
more robust than the best Adam model?

**Adam's frontier** at a seed is the upper concave envelope (upper convex hull) of that seed's
Adam points -- every learning rate and every checkpoint -- in the plane (clean accuracy, attacked
accuracy), as a piecewise-linear function of clean accuracy over the range of clean accuracies
Adam reached. A point below it is matched or beaten by an Adam checkpoint, or by the line
between two of them; so a learned point above it is more robust than every Adam model of the
same clean accuracy, and than every interpolation between them.

**The margin** of a learned optimizer at a seed is the mean, over its checkpoints after step 0,
of ``attacked accuracy - frontier(clean accuracy)`` in percentage points; ``above_frontier`` is
its mean over seeds and ``spread`` its sample standard deviation over seeds. Step 0 is left out:
at a seed every optimizer starts from the same initialisation, so that point is Adam's as much
as the learned optimizer's. Points whose clean accuracy lies outside Adam's range at their seed
have no frontier value; they are excluded and counted (``excluded``), never extrapolated. Points
below :data:`DEGENERATE_CLEAN` clean accuracy are left out too and counted (``degenerate``): a
network that outputs one class has attacked accuracy equal to its clean accuracy, about chance,
which puts it above an untrained network's point (attacked accuracy near 0) without any
robustness -- the collapse of meta-training to constant outputs produces exactly such rules. So
is every point of a run that *ends* below it (:func:`drop_degenerate_runs`): such a run is a
degenerate optimizer's, whose passing checkpoints a little above the threshold are still
near-constant classifiers.

Why one frontier per seed: at a seed every arm starts from the same initial network and sees the
same batches, so the comparison is paired and the seed-to-seed variation of the initialisation
cancels. An envelope of all seeds' Adam points pooled takes the maximum over seed noise as well
as over learning rates and is biased against the learned optimizer; an envelope of the seed-mean
curves has no spread over seeds, which the verdict needs. The pooled margin is reported beside
the paired one (``pooled`` in :func:`setting_margins`), to show how much a result depends on
this choice.

**The verdict** (issue 15's criterion): a learned optimizer transfers robustness in a setting
only if ``above_frontier`` is positive and exceeds its spread over seeds.

**gap_closed at matched clean accuracy.** The transfer benchmark's ``gap_closed``
(:mod:`l2l_gail.meta.report`) divides the learned optimizer's robustness gain over clean Adam
training by adversarial training's. Here both gains are margins over Adam's frontier:
:func:`gap_closed` is ``above_frontier`` of the learned optimizer over that of PGD adversarial
training (its checkpoints scored exactly like a learned optimizer's), at its best learning rate
-- the stronger reference, so that an under-trained one cannot inflate the ratio.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2l_gail.runs import atomic_write

Point = tuple[float, float]
"""(clean accuracy, attacked accuracy), in percent."""
DEGENERATE_CLEAN = 15.0
"""Clean accuracy (%) below which a learned optimizer's point is not scored: 1.5 x chance on ten
classes, the threshold at which :func:`l2l_gail.meta.report.setting_entry` calls a model degenerate."""


def upper_envelope(points: Iterable[Point]) -> list[Point]:
    """The vertices of the upper concave envelope of ``points``, by increasing clean accuracy.

    Andrew's monotone chain, upper half: points on or below a chord between two other points
    are dropped (collinear ones too: they do not change the envelope). Of points with the same
    clean accuracy only the most robust can be a vertex.
    """
    hull: list[Point] = []
    for p in sorted(set(points)):
        while hull and hull[-1][0] == p[0]:  # sorted: p is the more robust of the two
            hull.pop()
        while len(hull) >= 2 and _turn(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    return hull


def _turn(o: Point, a: Point, b: Point) -> float:
    """> 0 for a left (counter-clockwise) turn o -> a -> b, 0 when collinear."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def envelope_at(envelope: Sequence[Point], clean: float) -> float | None:
    """The envelope's attacked accuracy at ``clean``, linearly interpolated between its vertices;
    ``None`` outside ``[first vertex, last vertex]`` (no extrapolation)."""
    if not envelope or not envelope[0][0] <= clean <= envelope[-1][0]:
        return None
    i = bisect.bisect_left(envelope, (clean, float("-inf")))
    x1, y1 = envelope[i]
    if x1 == clean:
        return y1
    x0, y0 = envelope[i - 1]
    return y0 + (y1 - y0) * (clean - x0) / (x1 - x0)


def margins(envelope: Sequence[Point], points: Iterable[Point]) -> tuple[list[float], int]:
    """``attacked - envelope(clean)`` of each point within the envelope's clean-accuracy range,
    and how many points lay outside it."""
    out, excluded = [], 0
    for clean, attacked in points:
        level = envelope_at(envelope, clean)
        if level is None:
            excluded += 1
        else:
            out.append(attacked - level)
    return out, excluded


@dataclass
class Margin:
    """A learned optimizer's margin over Adam's frontier in one setting, in percentage points."""

    mean: float | None
    """mean over seeds of the per-seed margin (None: no point inside Adam's range at any seed)"""
    spread: float | None
    """sample standard deviation of the per-seed margins (None with fewer than two seeds scored)"""
    per_seed: dict[int, float | None] = field(default_factory=dict)
    """each seed's mean margin over its scored points (None: all of them were excluded)"""
    scored: int = 0
    """points inside Adam's clean-accuracy range, over all seeds"""
    excluded: int = 0
    """points outside it (no frontier value there)"""
    degenerate: int = 0
    """points below ``min_clean`` (not scored)"""

    @property
    def transfers(self) -> bool:
        """The verdict: above the frontier by more than the spread over seeds."""
        return self.mean is not None and self.spread is not None and self.mean > self.spread

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "spread": self.spread,
                "per_seed": {str(k): v for k, v in self.per_seed.items()},
                "scored": self.scored, "excluded": self.excluded, "degenerate": self.degenerate,
                "transfers_robustness": self.transfers}


def _not_degenerate(points: Iterable[Point], min_clean: float) -> tuple[list[Point], int]:
    """The points at or above ``min_clean`` clean accuracy, and how many were below."""
    given = list(points)
    kept = [p for p in given if p[0] >= min_clean]
    return kept, len(given) - len(kept)


def paired_margin(adam: Mapping[int, Sequence[Point]], learned: Mapping[int, Sequence[Point]],
                  min_clean: float = DEGENERATE_CLEAN) -> Margin:
    """The margin of ``learned``'s points over Adam's frontier, seed by seed (module docstring).

    ``adam[seed]`` holds every Adam point of the seed (all learning rates and checkpoints),
    ``learned[seed]`` the learned optimizer's points after step 0; those below ``min_clean``
    are not scored. Seeds missing from ``adam`` are refused.
    """
    result = Margin(None, None)
    for seed, all_points in sorted(learned.items()):
        if seed not in adam:
            raise ValueError(f"seed {seed} has learned points but no Adam point")
        points, degenerate = _not_degenerate(all_points, min_clean)
        result.degenerate += degenerate
        found, excluded = margins(upper_envelope(adam[seed]), points)
        result.per_seed[seed] = statistics.fmean(found) if found else None
        result.scored += len(found)
        result.excluded += excluded
    values = [v for v in result.per_seed.values() if v is not None]
    result.mean = statistics.fmean(values) if values else None
    result.spread = statistics.stdev(values) if len(values) > 1 else None
    return result


def pooled_margin(adam: Iterable[Point], learned: Iterable[Point],
                  min_clean: float = DEGENERATE_CLEAN) -> tuple[float | None, int, int]:
    """The mean margin of all ``learned`` points (those below ``min_clean`` left out) over the
    envelope of all ``adam`` points, seeds pooled; with the numbers of points scored and excluded."""
    found, excluded = margins(upper_envelope(adam), _not_degenerate(learned, min_clean)[0])
    return (statistics.fmean(found) if found else None), len(found), excluded


def gap_closed(margin: float | None, references: Iterable[float | None]) -> float | None:
    """``margin / max(references)``: the share of adversarial training's margin over Adam's frontier
    that a learned optimizer's margin reaches; ``None`` when either is unknown or no reference lies
    above the frontier (there is no gap to close)."""
    known = [r for r in references if r is not None]
    if margin is None or not known or max(known) <= 0:
        return None
    return margin / max(known)


# ----------------------------------------------------------------------------- curves -> summary
Checkpoint = Mapping[str, float]
"""One evaluation along a training run: ``{"step", "clean", "pgd20", "fgsm", "seed"}``, accuracies in
[0, 1]; an arm's curves are the list of its checkpoints over all seeds (``frontier.json``'s shape)."""


def curve_points(checkpoints: Iterable[Checkpoint], attack: str, *,
                 skip_start: bool) -> dict[int, list[Point]]:
    """Points ``(clean, attack)`` in percent, by seed (after step 0 only, with ``skip_start``)."""
    out: dict[int, list[Point]] = {}
    for c in checkpoints:
        if not (skip_start and c["step"] == 0):
            out.setdefault(int(c["seed"]), []).append((100 * c["clean"], 100 * c[attack]))
    return out


def drop_degenerate_runs(points: Mapping[int, Sequence[Point]],
                         min_clean: float = DEGENERATE_CLEAN) -> tuple[dict[int, list[Point]], int]:
    """``points`` (by seed, each run's in training order) with the runs whose last point lies below
    ``min_clean`` emptied, and the number of points they held."""
    out: dict[int, list[Point]] = {}
    dropped = 0
    for seed, run in points.items():
        if run and run[-1][0] < min_clean:
            out[seed], dropped = [], dropped + len(run)
        else:
            out[seed] = list(run)
    return out, dropped


def setting_margins(curves: Mapping[str, Sequence[Checkpoint]], adam_arms: Sequence[str],
                    rules: Sequence[str], attacks: Sequence[str] = ("pgd20", "fgsm")) -> dict[str, Any]:
    """Each rule's margins over Adam's frontier in one setting, for each attack:
    ``{attack: {rule: {"paired": Margin.to_dict(), "pooled": mean, "pooled_scored": n,
    "pooled_excluded": n}}}``; the points of runs that end degenerate are counted as degenerate."""
    out: dict[str, Any] = {}
    for attack in attacks:
        adam = curve_points((c for arm in adam_arms for c in curves[arm]), attack, skip_start=False)
        out[attack] = {}
        for rule in rules:
            learned, dropped = drop_degenerate_runs(curve_points(curves[rule], attack, skip_start=True))
            pooled, scored, excluded = pooled_margin((p for ps in adam.values() for p in ps),
                                                     (p for ps in learned.values() for p in ps))
            paired = paired_margin(adam, learned)
            paired.degenerate += dropped
            out[attack][rule] = {"paired": paired.to_dict(), "pooled": pooled, "pooled_scored": scored,
                                 "pooled_excluded": excluded}
    return out


def mean_curve(checkpoints: Sequence[Checkpoint], keys: Sequence[str] = ("clean", "pgd20", "fgsm"),
               ) -> list[dict[str, float]]:
    """The curve of the means over seeds, step by step: ``{"step", key: mean, key_std: sample std}``
    in percent (std 0 with one seed)."""
    steps: dict[float, list[Checkpoint]] = {}
    for c in checkpoints:
        steps.setdefault(c["step"], []).append(c)
    out = []
    for step, group in sorted(steps.items()):
        row = {"step": step}
        for key in keys:
            values = [100 * c[key] for c in group]
            row[key] = statistics.fmean(values)
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(row)
    return out


def _fmt(value: float | None, spec: str = "+.1f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(settings: Sequence[Mapping[str, Any]], rules: Sequence[str], references: Sequence[str],
             header: str) -> str:
    """The frontier report: per setting, each rule's (and reference's) margin, the rules' verdict and
    gap closed, then each arm's last checkpoint (``settings`` entries as in ``frontier.json``)."""
    lines = [header, ""]
    for s in settings:
        lines += [f"## ({s['name']}) {s['description']}", "",
                  "| arm | PGD-20 margin (points) | spread over seeds | per seed | points scored / outside "
                  "Adam's range / degenerate | pooled-envelope margin | FGSM margin | gap closed | "
                  "transfers robustness |", "|---|---:|---:|---|---|---:|---:|---:|---|"]
        for arm in [*rules, *references]:
            pgd, f = s["margins"]["pgd20"][arm], s["margins"]["fgsm"][arm]["paired"]
            p = pgd["paired"]
            per_seed = ", ".join(_fmt(v) for v in p["per_seed"].values())
            if arm in rules:
                gap = _fmt(s["gap_closed"][arm], ".2f")
                verdict = "**yes**" if p["transfers_robustness"] else "no"
            else:
                gap, verdict = "(reference)", "(adversarial training)"
            lines.append(f"| {arm} | {_fmt(p['mean'])} | {_fmt(p['spread'], '.1f')} | {per_seed} | "
                         f"{p['scored']} / {p['excluded']} / {p['degenerate']} | {_fmt(pgd['pooled'])} | "
                         f"{_fmt(f['mean'])} ± {_fmt(f['spread'], '.1f')} | {gap} | {verdict} |")
        lines += ["", "Last checkpoint (mean ± std over seeds, %):", "",
                  "| arm | step | clean | PGD-20 | FGSM |", "|---|---:|---:|---:|---:|"]
        for arm, points in s["curves"].items():
            f = mean_curve(points)[-1]
            lines.append(f"| {arm} | {f['step']:.0f} | {f['clean']:.1f} ± {f['clean_std']:.1f} | "
                         f"{f['pgd20']:.1f} ± {f['pgd20_std']:.1f} | {f['fgsm']:.1f} ± {f['fgsm_std']:.1f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


ZOOM_CLEAN = (50.0, 100.0)
"""The bottom row's clean-accuracy window, in percent: where trained models lie."""


def zoom_window(curves: Mapping[str, Sequence[Mapping[str, float]]],
                arms: Sequence[str]) -> tuple[float, float]:
    """The bottom row's PGD-20 window, in percent: the range of ``arms``' points inside
    :data:`ZOOM_CLEAN` (Adam's and the learned optimizers'; adversarial training's would squeeze
    them to a sliver), widened to multiples of 5."""
    ys = [100 * c["pgd20"] for arm in arms for c in curves[arm] if 100 * c["clean"] >= ZOOM_CLEAN[0]]
    if not ys:
        return 0.0, 25.0
    return 5 * (min(ys) // 5), 5 * (max(ys) // 5 + 1)


def plot(settings: Sequence[Mapping[str, Any]], adam_arms: Sequence[str], rules: Sequence[str],
         references: Sequence[str], path: Path) -> None:
    """PGD-20 against clean accuracy, one column per setting (the bottom row zoomed to
    :data:`ZOOM_CLEAN` and :func:`zoom_window`): every seed's points (small), each arm's seed-mean
    curve (line; adversarial training dashed), and each seed's Adam frontier (thin grey): the
    envelopes the margins use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(settings), figsize=(5.4 * len(settings), 9.4), squeeze=False)
    blues, others = plt.get_cmap("Blues"), plt.get_cmap("tab20")
    colours: dict[str, Any] = {arm: blues(0.35 + 0.65 * i / max(1, len(adam_arms) - 1))
                               for i, arm in enumerate(adam_arms)}
    # tab20 without its two blues (Adam's), then its lighter shades
    palette = [others(i) for i in (*range(2, 20, 2), *range(3, 20, 2))]
    colours.update({arm: palette[i % len(palette)] for i, arm in enumerate(rules)})
    colours.update({arm: str(0.45 * i / max(1, len(references) - 1)) for i, arm in enumerate(references)})
    for column, s in enumerate(settings):
        curves = s["curves"]
        adam = curve_points((c for arm in adam_arms for c in curves[arm]), "pgd20", skip_start=False)
        for ax in axes[:, column]:
            for i, seed in enumerate(sorted(adam)):
                envelope = upper_envelope(adam[seed])
                ax.plot([p[0] for p in envelope], [p[1] for p in envelope], color="0.6", lw=0.7, zorder=1,
                        label="Adam frontier (one per seed)" if i == 0 else None)
            for arm in [*adam_arms, *rules, *references]:
                ax.scatter([100 * c["clean"] for c in curves[arm]], [100 * c["pgd20"] for c in curves[arm]],
                           s=4, color=colours[arm], alpha=0.3, lw=0, zorder=2)
                mean = mean_curve(curves[arm], ("clean", "pgd20"))
                style: dict[str, Any] = ({"marker": "o", "ms": 2.5, "lw": 1.6} if arm in rules else
                                         {"ls": "--", "lw": 1.3} if arm in references else {"lw": 1.3})
                ax.plot([m["clean"] for m in mean], [m["pgd20"] for m in mean], color=colours[arm], zorder=3,
                        label=arm, **style)
            ax.set_xlabel("clean accuracy (%)")
            ax.set_ylabel(f"PGD-20 accuracy (%), eps {s['eps']:g}")
            ax.grid(alpha=0.3)
        axes[0, column].set_title(f"({s['name']}) {s['description']}", fontsize=9)
        axes[1, column].set_title("zoom", fontsize=9)
        axes[1, column].set_xlim(*ZOOM_CLEAN)
        axes[1, column].set_ylim(*zoom_window(curves, [*adam_arms, *rules]))
    axes[0, 0].legend(fontsize=6.5, loc="upper left", ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
