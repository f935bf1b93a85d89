"""LearnedOptimizer: the drop-in torch.optim optimizer, its step units and its refusals."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_problems import regression
from torch import Tensor, nn
from torch.func import functional_call

from l2l_gail.core import LearnedOptimizer, LSTMRule, LSTMRuleConfig
from l2l_gail.errors import L2LError

SHIPPED = Path(__file__).resolve().parents[1] / "results" / "meta" / "optimizers" / "mnist-mlp-fgsm-eps0.1.pt"
"""A meta-trained phi written by an earlier version (format 1: absolute steps)."""


def in_lr_units() -> LSTMRule:
    """A rule with non-zero steps in units of the learning rate (as an l2l-gail phi)."""
    torch.manual_seed(0)
    rule = LSTMRule(LSTMRuleConfig(output_scale=1.0), step_units="lr")
    nn.init.normal_(rule.head.weight)
    return rule


def one_step(opt: torch.optim.Optimizer, p: nn.Parameter) -> Tensor:
    before = p.detach().clone()
    opt.zero_grad()
    (p**2).sum().backward()
    opt.step()
    return p.detach() - before


def test_wrapper_trains_a_module_like_the_functional_update() -> None:
    learned = LSTMRule.load(SHIPPED)
    module, x, y = regression(0)
    twin = {k: v.detach().clone() for k, v in module.named_parameters()}
    state = learned.init_state(twin)
    opt = LearnedOptimizer(module.parameters(), learned=SHIPPED)  # absolute steps: no lr
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.mse_loss(module(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        twin = {k: v.detach().requires_grad_() for k, v in twin.items()}
        twin_loss = nn.functional.mse_loss(functional_call(module, twin, (x,)), y)
        grads = dict(zip(twin, torch.autograd.grad(twin_loss, list(twin.values())), strict=True))
        twin, state, _ = learned.update(twin, grads, state, create_graph=False)
    # last-10 mean / first loss, regression seeds 0-9 x ATEN_CPU_CAPABILITY default/avx2/avx512, one
    # thread: 0.13-0.47
    assert sum(losses[-10:]) / 10 < 0.75 * losses[0], losses
    for name, p in module.named_parameters():
        torch.testing.assert_close(p, twin[name], rtol=1e-5, atol=1e-6)


def test_lr_units_scale_the_learned_step_by_lr() -> None:
    rule = in_lr_units()
    p = nn.Parameter(torch.randn(6))
    reference = rule.update({"p": p.detach()}, {"p": 2 * p.detach()}, rule.init_state({"p": p}),
                            create_graph=False)[0]["p"] - p.detach()
    step = one_step(LearnedOptimizer([p], lr=1e-3, learned=rule), p)
    torch.testing.assert_close(step, 1e-3 * reference)
    with pytest.raises(L2LError, match="needs lr"):
        LearnedOptimizer([p], learned=rule)


def test_absolute_steps_refuse_an_lr_that_would_do_nothing() -> None:
    rule = LSTMRule.load(SHIPPED)
    p = nn.Parameter(torch.randn(6))
    with pytest.raises(L2LError, match=r"absolute steps, so lr=0\.0003 would do nothing") as info:
        LearnedOptimizer([p], lr=3e-4, learned=rule)
    assert "reference_lr=1.0" in str(info.value)  # the way out for an old l2l-gail phi
    plain = one_step(LearnedOptimizer([p], learned=rule), p)
    p.data -= plain
    halved = one_step(LearnedOptimizer([p], lr=1e-3, learned=rule, reference_lr=2e-3), p)
    torch.testing.assert_close(halved, 0.5 * plain)
    opt = LearnedOptimizer([p], learned=rule)
    opt.param_groups[0]["lr"] = 0.1  # e.g. a scheduler or stable-baselines3 setting it later
    with pytest.raises(L2LError, match="would do nothing"):
        one_step(opt, p)


def test_an_untrained_rule_is_refused_unless_allowed(tmp_path: Path) -> None:
    p = nn.Parameter(torch.randn(3))
    fresh = LSTMRule().save(tmp_path / "fresh.pt")
    for learned in (None, LSTMRule(), fresh):
        with pytest.raises(L2LError, match=r"untrained .* would never move the parameters"):
            LearnedOptimizer([p], learned=learned)
    assert torch.equal(one_step(LearnedOptimizer([p], allow_untrained=True), p), torch.zeros(3))


def test_wrapper_closure_groups_and_reference_lr() -> None:
    a, b, idle = (nn.Parameter(torch.randn(4)) for _ in range(3))
    groups: list[dict[str, Any]] = [{"params": [a]}, {"params": [b, idle], "lr": 0.0}]
    opt = LearnedOptimizer(groups, lr=1e-3, learned=SHIPPED, reference_lr=1e-3)
    a0, b0, idle0 = a.detach().clone(), b.detach().clone(), idle.detach().clone()

    def closure() -> float:
        opt.zero_grad()
        loss = (a**2).sum() + (b**2).sum()
        loss.backward()
        return float(loss.detach())

    assert opt.step(closure) == pytest.approx(float((a0**2).sum() + (b0**2).sum()))
    assert not torch.equal(a, a0)
    assert torch.equal(b, b0)  # lr 0 / reference_lr: the schedule can stop a group
    assert torch.equal(idle, idle0) and idle not in opt.state  # no grad: skipped, no memory
    assert set(opt.state[a]) == {"h", "c"}


def test_wrapper_state_dict_resumes_identically() -> None:
    module, x, y = regression(1)

    def train(opt: torch.optim.Optimizer, model: nn.Module, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    opt = LearnedOptimizer(module.parameters(), learned=SHIPPED)
    train(opt, module, 5)
    buffer = io.BytesIO()
    torch.save({"model": module.state_dict(), "opt": opt.state_dict()}, buffer)
    train(opt, module, 5)

    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed, _, _ = regression(2)
    resumed.load_state_dict(ckpt["model"])
    # a fresh phi, allowed because the state dict carries the trained one
    opt2 = LearnedOptimizer(resumed.parameters(), allow_untrained=True)
    opt2.load_state_dict(ckpt["opt"])
    train(opt2, resumed, 5)
    for p, q in zip(module.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(L2LError, match="another configuration"):
        LearnedOptimizer(resumed.parameters(), learned=LSTMRule(LSTMRuleConfig(hidden_size=8)),
                         allow_untrained=True).load_state_dict(ckpt["opt"])


def test_wrapper_is_a_stable_baselines3_optimizer_class() -> None:
    from stable_baselines3 import PPO

    def ppo(learned: object) -> PPO:
        return PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0,
                   device="cpu", policy_kwargs={"optimizer_class": LearnedOptimizer,
                                                "optimizer_kwargs": {"learned": learned}})

    with pytest.raises(L2LError, match="would do nothing"):  # SB3 passes lr; absolute steps
        ppo(SHIPPED)
    model = ppo(in_lr_units())  # steps of lr * g_phi, as with an l2l-gail phi
    opt = model.policy.optimizer
    assert isinstance(opt, LearnedOptimizer) and opt.param_groups[0]["reference_lr"] == 1.0
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(128)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(),
                                                     strict=True))
    assert all(set(opt.state[p]) == {"h", "c"} for p in model.policy.parameters())
