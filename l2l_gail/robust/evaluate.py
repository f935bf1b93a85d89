"""Robustness evaluation: clean accuracy, accuracy under each attack, and the per-example worst case.

The model runs in eval mode. An example counts as robust under a set of attacks only if it is
classified correctly on the clean input and on every attack's output; reporting that worst case
(and AutoAttack from an independent library beside our own PGD) is what exposes gradient masking.
:func:`robust_evaluation` is the protocol that does not flatter a defence: PGD-50 with 5 restarts
keeping each example's worst iterate, AutoAttack's APGD-CE + APGD-T on every image and full
AutoAttack on the first few, combined per example.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from l2l_gail.errors import L2LError
from l2l_gail.robust.attacks import Attack, AutoAttack, build_attack
from l2l_gail.robust.data import batches
from l2l_gail.robust.models import eval_mode


def evaluate_per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[Attack], *,
                         batch_size: int = 256, device: torch.device | str = "cpu", progress: bool = False,
                         subset_sizes: Mapping[str, int] | None = None,
                         ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Which examples ``model`` classifies correctly, clean (``clean``) and under each attack.

    Returns one boolean tensor per name -- over all ``len(y)`` images for ``clean``, over the first
    ``subset_sizes[attack.name]`` images for an attack named there (an expensive attack on a prefix
    of the evaluation set), over all of them otherwise -- and the seconds each attack took. As in
    AutoAttack, only the examples classified correctly on the clean input are attacked; the others
    count as broken by every attack. Raises if an attack leaves the eps-ball or [0, 1] (a bug, not
    a result).
    """
    if batch_size < 1:
        raise L2LError(f"--batch-size must be >= 1, got {batch_size}")
    n = len(y)
    sizes = {a.name: min(n, (subset_sizes or {}).get(a.name, n)) for a in attacks}
    if len(sizes) < len(attacks):
        raise L2LError(f"two attacks share a name ({', '.join(a.name for a in attacks)}); give each its own")
    correct = {"clean": torch.zeros(n, dtype=torch.bool)}
    correct.update({name: torch.zeros(size, dtype=torch.bool) for name, size in sizes.items()})
    seconds = dict.fromkeys(sizes, 0.0)
    start = 0
    with eval_mode(model):
        for xb, yb in tqdm(batches(x, y, batch_size, generator=None, device=device),
                           total=-(-n // batch_size), desc="evaluate", disable=not progress, leave=False):
            sl = slice(start, start + len(yb))
            with torch.no_grad():
                clean_ok = model(xb).argmax(1) == yb
            correct["clean"][sl] = clean_ok.cpu()
            for attack in attacks:
                keep = max(0, min(len(yb), sizes[attack.name] - start))
                idx = clean_ok[:keep].nonzero().squeeze(1)
                if len(idx) == 0:
                    continue
                xa, ya = xb[idx], yb[idx]
                t0 = time.perf_counter()
                x_adv = attack(model, xa, ya)
                seconds[attack.name] += time.perf_counter() - t0
                if (x_adv - xa).abs().max() > attack.eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
                    raise L2LError(f"attack {attack.name} left the eps-ball or [0, 1]: this is a bug, "
                                   "please report it")
                with torch.no_grad():
                    correct[attack.name][start + idx.cpu()] = (model(x_adv).argmax(1) == ya).cpu()
            start += len(yb)
    return correct, seconds


def worst_case(correct: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per example: correct under every entry of ``correct`` that covers it.

    The first entry (``clean``) covers the whole evaluation set; an attack run on a prefix of it
    (:func:`evaluate_per_example`'s ``subset_sizes``) only constrains the examples of that prefix.
    """
    flags = list(correct.values())
    out = flags[0].clone()
    for f in flags[1:]:
        out[: len(f)] &= f
    return out


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[Attack], *,
             batch_size: int = 256, device: torch.device | str = "cpu",
             progress: bool = False, subset_sizes: Mapping[str, int] | None = None) -> dict[str, float]:
    """Accuracies (in [0, 1]) of ``model`` on uint8 images ``x`` under each attack.

    Returns ``clean_acc``, ``<attack>_acc`` for each attack (on the images it ran on),
    ``worst_case_acc`` (per example over every attack that ran on it, on all ``n`` images),
    ``<attack>_seconds``, ``n`` and, for an attack run on a prefix (``subset_sizes``, see
    :func:`evaluate_per_example`), ``<attack>_n`` and ``worst_case_acc_first_<m>`` (the worst case
    over every attack on that prefix). Raises if an attack leaves the eps-ball or [0, 1].
    """
    correct, seconds = evaluate_per_example(model, x, y, attacks, batch_size=batch_size, device=device,
                                            progress=progress, subset_sizes=subset_sizes)
    return summarise(correct, seconds)


def summarise(correct: Mapping[str, torch.Tensor], seconds: Mapping[str, float]) -> dict[str, float]:
    """:func:`evaluate`'s dict from :func:`evaluate_per_example`'s flags and seconds."""
    n = len(correct["clean"])
    worst = worst_case(correct)
    out: dict[str, float] = {f"{k}_acc": float(v.float().mean()) if len(v) else float("nan")
                             for k, v in correct.items()}
    out["worst_case_acc"] = float(worst.float().mean())
    out.update({f"{k}_seconds": v for k, v in seconds.items()})
    out["n"] = n
    for name, flags in correct.items():
        if len(flags) < n:
            out[f"{name}_n"] = len(flags)
            out[f"worst_case_acc_first_{len(flags)}"] = float(worst[: len(flags)].float().mean())
    return out


def robust_evaluation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                      pgd_steps: int = 50, pgd_restarts: int = 5, pgd_step: float | None = None,
                      apgd: bool = True, autoattack_n: int = 0, seed: int = 0, batch_size: int = 256,
                      device: torch.device | str = "cpu", progress: bool = False) -> dict[str, float]:
    """The evaluation that does not flatter: robust accuracy is the per-example worst case over

    * PGD-``pgd_steps`` with ``pgd_restarts`` random restarts, keeping each example's worst iterate
      (``pgd<K>x<R>``; a single PGD-20 run with the last iterate overstated a learned attacker's
      classifier by points on Fashion-MNIST),
    * AutoAttack's APGD-CE + APGD-T (``apgd``, Croce & Hein 2020) on every image, and
    * the full standard AutoAttack (``autoattack``: APGD-CE, APGD-T, FAB-T, Square) on the first
      ``autoattack_n`` images (0: not run),

    on the ``len(y)`` images given. Returns :func:`evaluate`'s dict; ``worst_case_acc`` is the
    robust accuracy. ``seed`` fixes PGD's random starts and AutoAttack's.
    """
    attacks, sizes = robust_attacks(eps, pgd_steps=pgd_steps, pgd_restarts=pgd_restarts, pgd_step=pgd_step,
                                    apgd=apgd, autoattack_n=autoattack_n, seed=seed)
    torch.manual_seed(seed)
    return evaluate(model, x, y, attacks, batch_size=batch_size, device=device, progress=progress,
                    subset_sizes=sizes)


def robust_attacks(eps: float, *, pgd_steps: int = 50, pgd_restarts: int = 5, pgd_step: float | None = None,
                   apgd: bool = True, autoattack_n: int = 0, seed: int = 0,
                   ) -> tuple[list[Attack], dict[str, int]]:
    """:func:`robust_evaluation`'s attacks and the prefix sizes (``subset_sizes``) they run on."""
    if pgd_steps < 1 or pgd_restarts < 1 or autoattack_n < 0:
        raise L2LError(f"PGD needs steps and restarts >= 1 and the AutoAttack subset >= 0, got "
                       f"{pgd_steps}, {pgd_restarts} and {autoattack_n}")
    attacks = [build_attack(f"pgd{pgd_steps}x{pgd_restarts}", eps, pgd_step=pgd_step)]
    if apgd:
        attacks.append(build_attack("apgd", eps, seed=seed))
    sizes = {}
    if autoattack_n:
        attacks.append(AutoAttack(eps, "standard", seed))
        sizes["autoattack"] = autoattack_n
    return attacks, sizes
