"""Arithmetic and tables of the transfer benchmark (``scripts/bench_meta.py``).

The benchmark's headline number is how much of the robustness gap between clean training and
adversarial training the learned optimizer closes while training on clean data only::

    gap_closed = (learned_clean PGD-20 - adam_clean PGD-20) / (pgd_at PGD-20 - adam_clean PGD-20)

0 means no robustness transferred, 1 means as robust as PGD adversarial training; it is
undefined (``None``) when adversarial training is not more robust than clean training. A
constant classifier is "robust" on the examples of its one class -- chance accuracy under
every attack -- so a learned optimizer that never moved its model can score a positive
``gap_closed`` against a non-robust ``adam_clean``; such settings are flagged ``degenerate``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

WAYS = ("adam_clean", "learned_clean", "pgd_at")
METRICS = ("clean_acc", "pgd20_acc", "autoattack_acc", "train_seconds")


def gap_closed(adam_clean: float, learned_clean: float, pgd_at: float) -> float | None:
    """The fraction of the PGD-20 accuracy gap (adam_clean -> pgd_at) that learned_clean closes."""
    gap = pgd_at - adam_clean
    if gap <= 0:
        return None
    return (learned_clean - adam_clean) / gap


def summarise(runs: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Mean of each metric over seeds, with the sample standard deviation and the per-seed values."""
    out: dict[str, Any] = {"seeds": len(runs)}
    for key in METRICS:
        values = [float(r[key]) for r in runs if key in r]
        if not values:
            continue
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[f"{key}_per_seed"] = values
    return out


def setting_entry(setting: Mapping[str, Any], ways: Mapping[str, Sequence[Mapping[str, float]]],
                  chance: float = 0.1) -> dict[str, Any]:
    """One ``settings`` entry of ``transfer.json``: the setting, each way's summary, ``gap_closed``,
    the learned optimizer's training time relative to Adam's, and ``degenerate`` -- true when
    ``learned_clean``'s clean accuracy is below 1.5 x ``chance`` (its model learned nothing, so its
    attacked accuracy is chance, not robustness)."""
    entry: dict[str, Any] = dict(setting)
    for way in WAYS:
        entry[way] = summarise(ways.get(way, []))
    adam, learned, pgd = (entry[w].get("pgd20_acc") for w in WAYS)
    entry["gap_closed"] = None if None in (adam, learned, pgd) else gap_closed(adam, learned, pgd)
    ta, tl = entry["adam_clean"].get("train_seconds"), entry["learned_clean"].get("train_seconds")
    entry["learned_time_ratio"] = tl / ta if ta and tl is not None else None
    clean = entry["learned_clean"].get("clean_acc")
    entry["degenerate"] = clean is not None and clean < 1.5 * chance
    return entry


def markdown_table(settings: Sequence[Mapping[str, Any]]) -> str:
    """One row per setting and way: clean / PGD-20 / AutoAttack accuracy (mean +- std, %) and seconds."""

    def pct(d: Mapping[str, Any], key: str) -> str:
        if key not in d:
            return "-"
        return f"{100 * d[key]:.1f} ± {100 * d[f'{key}_std']:.1f}"

    lines = ["| setting | data (train size) | model | eps | way | clean % | PGD-20 % | AutoAttack % "
             "| train s | gap closed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in settings:
        gap = "n/a" if s.get("gap_closed") is None else f"{s['gap_closed']:.2f}"
        if s.get("degenerate"):
            gap += " (degenerate: constant classifier)"
        for way in WAYS:
            d = s[way]
            secs = f"{d['train_seconds']:.1f}" if "train_seconds" in d else "-"
            accs = " | ".join(pct(d, k) for k in ("clean_acc", "pgd20_acc", "autoattack_acc"))
            lines.append(f"| {s['name']} | {s['dataset']} ({s['train_size']}) | {s['model']} | {s['eps']:g} "
                         f"| {way} | {accs} | {secs} | {gap if way == 'learned_clean' else ''} |")
    return "\n".join(lines) + "\n"
