"""Robustness evaluation: clean accuracy, accuracy under each attack, and the per-example worst case.

The model runs in eval mode. An example counts as robust under a set of attacks only if it is
classified correctly on the clean input and on every attack's output; reporting that worst case
(and AutoAttack from an independent library beside our own PGD) is what exposes gradient masking.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from l2l_gail.errors import L2LError
from l2l_gail.robust.attacks import Attack
from l2l_gail.robust.data import batches
from l2l_gail.robust.models import eval_mode


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[Attack], *,
             batch_size: int = 256, device: torch.device | str = "cpu",
             progress: bool = False) -> dict[str, float]:
    """Accuracies (in [0, 1]) of ``model`` on uint8 images ``x`` under each attack.

    Returns ``clean_acc``, ``<attack>_acc`` for each attack, ``worst_case_acc`` and
    ``<attack>_seconds``. Raises if an attack leaves the eps-ball or [0, 1] (a bug, not a result).
    """
    if batch_size < 1:
        raise L2LError(f"--batch-size must be >= 1, got {batch_size}")
    n = len(y)
    correct = {"clean": torch.zeros(n, dtype=torch.bool)}
    correct.update({a.name: torch.zeros(n, dtype=torch.bool) for a in attacks})
    seconds = dict.fromkeys(correct, 0.0)
    start = 0
    with eval_mode(model):
        for xb, yb in tqdm(batches(x, y, batch_size, generator=None, device=device),
                           total=-(-n // batch_size), desc="evaluate", disable=not progress, leave=False):
            sl = slice(start, start + len(yb))
            with torch.no_grad():
                correct["clean"][sl] = (model(xb).argmax(1) == yb).cpu()
            for attack in attacks:
                t0 = time.perf_counter()
                x_adv = attack(model, xb, yb)
                seconds[attack.name] += time.perf_counter() - t0
                if (x_adv - xb).abs().max() > attack.eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
                    raise L2LError(f"attack {attack.name} left the eps-ball or [0, 1]: this is a bug, "
                                   "please report it")
                with torch.no_grad():
                    correct[attack.name][sl] = (model(x_adv).argmax(1) == yb).cpu()
            start += len(yb)
    worst = torch.stack(list(correct.values())).all(0)
    out = {f"{k}_acc": float(v.float().mean()) for k, v in correct.items()}
    out["worst_case_acc"] = float(worst.float().mean())
    out.update({f"{k}_seconds": v for k, v in seconds.items() if k != "clean"})
    out["n"] = n
    return out
