"""The core's public surface: what it imports, the deprecated names, the learned attacker's verbs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import l2l_gail.core
from l2l_gail.core import LearnedAttacker, LSTMRule, LSTMRuleConfig
from l2l_gail.errors import L2LError

CORE = Path(l2l_gail.core.__file__).parent


def test_core_imports_only_torch_the_standard_library_and_the_error_type() -> None:
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: relative import"
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = (top in ("torch", "__future__") or top in sys.stdlib_module_names
                      or name == "l2l_gail.errors" or name.startswith("l2l_gail.core"))
                assert ok, f"{path.name} imports {name}"


def test_core_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CORE.glob("*.py")}
    assert max(sizes.values()) <= 400, sizes


@pytest.mark.parametrize(("old", "new"), [("LSTMOptimizer", LSTMRule),
                                          ("LSTMOptimizerConfig", LSTMRuleConfig)])
def test_old_names_still_import_with_a_deprecation_warning(old: str, new: type) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated .* use l2l_gail.core.{new.__name__}"):
        assert getattr(l2l_gail.core, old) is new
    with pytest.raises(AttributeError):
        _ = l2l_gail.core.NoSuchName  # type: ignore[attr-defined]


def _classifier_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 10)).eval()
    return model, torch.rand(8, 3, 8, 8), torch.randint(0, 10, (8,))


def test_learned_attacker_has_the_shared_attack_signature() -> None:
    model, x, y = _classifier_and_batch()
    attacker = LearnedAttacker(3, 0.1, variant="grad", steps=2, width=0.1)
    x_adv = attacker(model, x, y)  # attack(model, x, y) -> x_adv, as every vision attack
    assert not x_adv.requires_grad and (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert torch.equal(x_adv, attacker.generate(model, x, y)) and attacker.training
    with pytest.warns(DeprecationWarning, match="update is deprecated"):
        assert torch.equal(attacker.update(model, x, y), x_adv)


def test_learned_attacker_trains_through_the_core_meta_step() -> None:
    model, x, y = _classifier_and_batch()
    attacker = LearnedAttacker(3, 0.1, variant="grad", width=0.1, max_grad_norm=1e-3)
    before = [p.detach().clone() for p in attacker.net.parameters()]
    loss = attacker.attack_step(model, x, y)
    assert loss > 0 and all(p.grad is None for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, attacker.net.parameters(), strict=True))
    grads = [p.grad for p in attacker.net.parameters() if p.grad is not None]
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
    assert norm <= 1e-3 * 1.01  # clipped by the core's meta_step
    with pytest.raises(L2LError, match="diverged"):  # and checked for finiteness
        attacker.attack_step(model, x, y, loss_fn=lambda logits, target: logits.sum() * float("nan"))
