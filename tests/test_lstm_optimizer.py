"""The parameter-space learned optimizer (l2l_gail.core.lstm_optimizer)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from l2l_gail.core import (
    LearnedOptimizer,
    LSTMOptimizer,
    LSTMOptimizerConfig,
    lookahead_step,
    meta_step,
    preprocess_gradients,
    trainable_params,
    unroll,
)
from l2l_gail.errors import L2LError

torch.set_num_threads(1)

Problem = tuple[dict[str, Tensor], Callable[[dict[str, Tensor], int], Tensor]]


def quadratics(gen: torch.Generator, batch: int = 16, dim: int = 10) -> Problem:
    """A batch of random quadratics ``||W theta - y||^2`` (Andrychowicz et al. 2016, sec. 3.1)."""
    w = torch.randn(batch, dim, dim, generator=gen)
    y = torch.randn(batch, dim, generator=gen)

    def loss_fn(params: dict[str, Tensor], step: int) -> Tensor:
        residual = torch.einsum("bij,bj->bi", w, params["theta"]) - y
        return residual.square().sum(-1).mean()

    return {"theta": torch.randn(batch, dim, generator=gen)}, loss_fn


def meta_train(learned: LSTMOptimizer, meta_steps: int, *, seed: int = 0, unroll_len: int = 20,
               per_problem: int = 5) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    meta_opt = torch.optim.Adam(learned.parameters(), lr=1e-2)
    history: list[float] = []
    while len(history) < meta_steps:
        params, loss_fn = quadratics(gen)
        state = None
        for k in range(min(per_problem, meta_steps - len(history))):
            result = unroll(learned, params, loss_fn, unroll_len, state=state, start=k * unroll_len)
            history.append(meta_step(result.meta_loss / unroll_len, meta_opt).meta_loss)
            params, state = result.params, result.state
    return history


def held_out_meta_loss(learned: LSTMOptimizer, seeds: range = range(100, 104)) -> float:
    total = 0.0
    for seed in seeds:
        params, loss_fn = quadratics(torch.Generator().manual_seed(seed))
        total += float(unroll(learned, params, loss_fn, 20).meta_loss.detach())
    return total


def deploy(learned: LSTMOptimizer, seed: int, steps: int = 100) -> tuple[float, float]:
    """Loss of a fresh quadratic before and after ``steps`` learned updates (no meta-training)."""
    params, loss_fn = quadratics(torch.Generator().manual_seed(seed))
    state = learned.init_state(params)
    before = float(loss_fn(params, 0))
    for t in range(steps):
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(loss_fn(params, t), list(params.values()))
        params, state, _ = learned.update(params, dict(zip(params, grads, strict=True)), state,
                                          create_graph=False)
    return before, float(loss_fn(params, steps))


@pytest.fixture(scope="module")
def trained() -> tuple[LSTMOptimizer, float, float]:
    """An optimizer meta-trained for 80 steps on quadratics; held-out meta-loss before, after."""
    torch.manual_seed(0)
    learned = LSTMOptimizer()
    before = held_out_meta_loss(learned)
    meta_train(learned, 80)  # with 40 steps, after / before reached 0.55 over seeds (0.5 asserted)
    return learned, before, held_out_meta_loss(learned)


def regression(seed: int) -> tuple[nn.Module, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=gen)
    y = torch.sin(x.sum(1, keepdim=True))
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)), x, y


# -- preprocessing ------------------------------------------------------------------------


def test_preprocess_matches_andrychowicz_appendix_a() -> None:
    g = torch.tensor([1.0, -math.exp(-5), 1e-6, 0.0, -2e-5])
    features = preprocess_gradients(g, p=10)
    expected = torch.tensor([
        [0.0, 1.0], [-0.5, -1.0], [-1.0, math.exp(10) * 1e-6], [-1.0, 0.0],
        [-1.0, -2e-5 * math.exp(10)],
    ])
    torch.testing.assert_close(features, expected)
    g = g.clone().requires_grad_()
    (grad,) = torch.autograd.grad(preprocess_gradients(g).sum(), g)
    assert torch.isfinite(grad).all()  # zero gradients must not poison second-order terms


# -- functional verbs ---------------------------------------------------------------------


def test_fresh_optimizer_leaves_parameters_unchanged() -> None:
    learned = LSTMOptimizer()
    params = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    grads = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    new, state, stats = learned.update(params, grads, learned.init_state(params),
                                       create_graph=False)
    assert all(torch.equal(new[k], params[k]) for k in params)
    assert stats.update_norm == 0.0 and stats.grad_norm > 0
    assert state["w"][0].shape == (2, 12, 20)


def test_gradients_reach_phi_through_functional_call() -> None:
    torch.manual_seed(0)
    learned = LSTMOptimizer()
    nn.init.normal_(learned.head.weight)  # a zero head would block the LSTM's meta-gradient
    module, x, y = regression(0)
    params = trainable_params(module)
    state = learned.init_state(params)
    for _ in range(2):  # from a zero memory, the recurrent weights matter from the 2nd step on
        loss = nn.functional.mse_loss(functional_call(module, params, (x,)), y)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()),
                                                     retain_graph=True), strict=True))
        params, state, _ = learned.update(params, grads, state, create_graph=True)
    after = nn.functional.mse_loss(functional_call(module, params, (x,)), y)
    meta_grads = torch.autograd.grad(after, list(learned.parameters()))
    assert all(g.abs().sum() > 0 for g in meta_grads)
    detached, _, _ = learned.update(params, grads, state, create_graph=False)
    assert not any(t.requires_grad for t in detached.values())


def test_second_order_keeps_the_hessian_path() -> None:
    torch.manual_seed(0)
    learned = LSTMOptimizer()
    nn.init.normal_(learned.head.weight)
    params = {"x": torch.randn(5, requires_grad=True)}
    loss = (params["x"] ** 4).sum()

    def meta_grad_wrt_x(second_order: bool) -> Tensor | None:
        (g,) = torch.autograd.grad(loss, [params["x"]], create_graph=True)
        new, _, _ = learned.update(params, {"x": g}, learned.init_state(params),
                                   create_graph=True, second_order=second_order)
        (out,) = torch.autograd.grad((new["x"] ** 2).sum(), [g], allow_unused=True)
        return out

    assert meta_grad_wrt_x(False) is None  # first order: the gradient is a constant
    second = meta_grad_wrt_x(True)
    assert second is not None and second.abs().sum() > 0


def test_meta_training_lowers_held_out_meta_loss(trained) -> None:
    _, before, after = trained
    # after / before over seeds 0-9 x ATEN_CPU_CAPABILITY default/avx2/avx512, one thread: 0.195-0.29
    assert after < 0.5 * before, (before, after)


def test_few_meta_steps_make_an_optimizer_that_lowers_a_quadratic() -> None:
    torch.manual_seed(1)
    learned = LSTMOptimizer()
    meta_train(learned, 16, seed=1)  # after / before, seeds 0-9 x 3 ISA settings: 0.015-0.14 (8: up to 0.23)
    for seed in (200, 201):
        before, after = deploy(learned, seed)
        assert after < 0.25 * before, (seed, before, after)


def test_unroll_truncates_between_calls() -> None:
    torch.manual_seed(0)
    learned = LSTMOptimizer()
    nn.init.normal_(learned.head.weight, std=0.1)
    params, loss_fn = quadratics(torch.Generator().manual_seed(0), batch=2)
    first = unroll(learned, params, loss_fn, 3)
    meta_step(first.meta_loss, torch.optim.SGD(learned.parameters(), lr=0.0))  # frees its graph
    second = unroll(learned, first.params, loss_fn, 3, state=first.state, start=3)
    assert len(second.losses) == 3 and second.params["theta"].requires_grad
    torch.autograd.grad(second.meta_loss, list(learned.parameters()))  # no "backward twice"


def test_meta_step_refuses_a_diverged_objective() -> None:
    learned = LSTMOptimizer()
    meta_opt = torch.optim.Adam(learned.parameters())
    with pytest.raises(L2LError, match="diverged"):
        meta_step(learned.head.bias.sum() * float("nan"), meta_opt)


def test_lookahead_step_trains_phi_online_on_held_out_data() -> None:
    module, x, y = regression(0)
    gen = torch.Generator().manual_seed(0)
    learned = LSTMOptimizer()
    meta_opt = torch.optim.Adam(learned.parameters(), lr=1e-3)  # online: 1e-2 diverges

    def loss_on(rows: Tensor) -> Callable[[dict[str, Tensor]], Tensor]:
        return lambda p: nn.functional.mse_loss(functional_call(module, p, (x[rows],)), y[rows])

    before = nn.functional.mse_loss(module(x), y).item()
    phi_before = [p.detach().clone() for p in learned.parameters()]
    state, stats = None, None
    for _ in range(400):  # after / before, seeds 0-9 x 3 ISA settings: 0.03-0.08 (200: up to 0.66)
        perm = torch.randperm(64, generator=gen)
        state, stats = lookahead_step(learned, module, state, loss_on(perm[:32]),
                                      loss_on(perm[32:]), meta_opt)
    after = nn.functional.mse_loss(module(x), y).item()
    assert after < 0.5 * before, (before, after)
    assert stats is not None and stats.update_norm > 0 and math.isfinite(stats.meta_loss)
    assert any(not torch.equal(a, b) for a, b in zip(phi_before, learned.parameters(),
                                                     strict=True))
    assert all(p.grad is None for p in module.parameters())  # meta_step touches phi only
    assert not any(h.requires_grad for h, _ in state.values())


# -- persistence ----------------------------------------------------------------------------


def test_save_load_round_trips_exactly(trained, tmp_path: Path) -> None:
    learned = trained[0]
    path = learned.save(tmp_path / "phi.pt")
    loaded = LSTMOptimizer.load(path, config=LSTMOptimizerConfig())
    assert loaded.config == learned.config
    for (k, a), (_, b) in zip(learned.state_dict().items(), loaded.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    params = {"w": torch.randn(7)}
    grads = {"w": torch.randn(7)}
    out = [m.update(params, grads, m.init_state(params), create_graph=False)[0]["w"]
           for m in (learned, loaded)]
    assert torch.equal(*out)


def _bad_files(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    payload = torch.load(good, weights_only=True)
    cases: dict[str, tuple[Path, str]] = {}

    def add(name: str, write: Callable[[Path], None], match: str) -> None:
        path = tmp_path / name
        write(path)
        cases[name] = (path, match)

    add("missing.pt", lambda p: None, "does not exist")
    add("garbage.pt", lambda p: p.write_bytes(b"\x00not a checkpoint" * 10), "not a readable")
    add("truncated.pt", lambda p: p.write_bytes(good.read_bytes()[:300]), "not a readable")
    add("tensor.pt", lambda p: torch.save(torch.zeros(3), p), "not a learned-optimizer file")
    add("v99.pt", lambda p: torch.save({**payload, "version": 99}, p), "format version 99")
    add("shape.pt", lambda p: torch.save(
        {**payload, "config": {**payload["config"], "hidden_size": 8}}, p), "do not fit")
    add("config.pt", lambda p: torch.save(
        {**payload, "config": {**payload["config"], "flavour": 1}}, p), "configuration")
    return cases


def test_load_refuses_bad_files_with_one_line(tmp_path: Path) -> None:
    good = LSTMOptimizer().save(tmp_path / "good.pt")
    for name, (path, match) in _bad_files(tmp_path, good).items():
        with pytest.raises(L2LError, match=match) as info:
            LSTMOptimizer.load(path)
        assert "\n" not in str(info.value), name
    with pytest.raises(L2LError, match="another configuration: hidden_size=20"):
        LSTMOptimizer.load(good, config=LSTMOptimizerConfig(hidden_size=32))
    with pytest.raises(L2LError, match="output_scale must be positive"):
        LSTMOptimizerConfig(output_scale=0)


# -- torch.optim wrapper --------------------------------------------------------------------


def test_wrapper_trains_a_module_like_the_functional_update(trained) -> None:
    learned = trained[0]
    module, x, y = regression(0)
    twin = {k: v.detach().clone() for k, v in module.named_parameters()}
    state = learned.init_state(twin)
    opt = LearnedOptimizer(module.parameters(), learned=learned)
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
    # seeds 0-9 x 3 ISA settings: 0.05-0.46 with the 80-step fixture (up to 1.72 with 40 steps)
    assert sum(losses[-10:]) / 10 < 0.75 * losses[0], losses
    for name, p in module.named_parameters():
        torch.testing.assert_close(p, twin[name], rtol=1e-5, atol=1e-6)


def test_wrapper_closure_groups_and_reference_lr(trained) -> None:
    learned = trained[0]
    a, b, idle = (nn.Parameter(torch.randn(4)) for _ in range(3))
    opt = LearnedOptimizer(
        [{"params": [a]}, {"params": [b, idle], "lr": 0.0}], lr=1e-3, learned=learned,
        reference_lr=1e-3,
    )
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


def test_wrapper_state_dict_resumes_identically(trained) -> None:
    module, x, y = regression(1)

    def train(opt: torch.optim.Optimizer, model: nn.Module, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    opt = LearnedOptimizer(module.parameters(), learned=trained[0])
    train(opt, module, 5)
    buffer = io.BytesIO()
    torch.save({"model": module.state_dict(), "opt": opt.state_dict()}, buffer)
    train(opt, module, 5)

    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed, _, _ = regression(2)
    resumed.load_state_dict(ckpt["model"])
    opt2 = LearnedOptimizer(resumed.parameters())  # fresh phi: the state dict carries phi
    opt2.load_state_dict(ckpt["opt"])
    train(opt2, resumed, 5)
    for p, q in zip(module.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(L2LError, match="another configuration"):
        LearnedOptimizer(resumed.parameters(), learned=LSTMOptimizer(
            LSTMOptimizerConfig(hidden_size=8))).load_state_dict(ckpt["opt"])


def test_wrapper_is_a_stable_baselines3_optimizer_class(trained) -> None:
    from stable_baselines3 import PPO

    model = PPO(
        "MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu",
        policy_kwargs={"optimizer_class": LearnedOptimizer,
                       "optimizer_kwargs": {"learned": trained[0], "reference_lr": 3e-4}},
    )
    opt = model.policy.optimizer
    assert isinstance(opt, LearnedOptimizer)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(128)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(),
                                                     strict=True))
    assert all(set(opt.state[p]) == {"h", "c"} for p in model.policy.parameters())
