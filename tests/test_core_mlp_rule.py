"""The per-parameter MLP rule: its memory, its steps, its symmetry, its file, and its uses."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tiny_problems import regression
from torch import Tensor, nn
from torch.func import functional_call

from l2l_gail.core import (
    RULE_NAMES,
    LearnedOptimizer,
    LSTMRule,
    LSTMRuleConfig,
    MLPRule,
    MLPRuleConfig,
    UpdateRule,
    meta_step,
    rule_type,
    trainable_params,
    unroll,
)
from l2l_gail.core.rule_file import FORMAT_VERSION
from l2l_gail.errors import L2LError

SHIPPED = Path(__file__).resolve().parents[1] / "results" / "meta" / "optimizers" / "mnist-mlp-fgsm-eps0.1.pt"
"""A meta-trained LSTM written by an earlier version (format 1, no architecture but its format)."""


def tensors(seed: int, scale: float = 1.0) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    params = {"w": torch.randn(6, 5, generator=gen), "b": 0.1 * torch.randn(5, generator=gen)}
    grads = {k: scale * torch.randn(v.shape, generator=gen) for k, v in params.items()}
    return params, grads


def adam_reference(grads: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8) -> list[Tensor]:
    """Adam's steps for a fixed gradient sequence, in float64 (Kingma & Ba, algorithm 1)."""
    m = v = torch.zeros_like(grads[0], dtype=torch.float64)
    steps = []
    for t, g in enumerate(grads, start=1):
        m = betas[0] * m + (1 - betas[0]) * g.double()
        v = betas[1] * v + (1 - betas[1]) * g.double() ** 2
        steps.append(-lr * (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps))
    return steps


# -- memory and steps ------------------------------------------------------------------------


def test_memory_shapes_and_the_count_advance_per_tensor() -> None:
    torch.manual_seed(0)
    rule = MLPRule()
    params, grads = tensors(0)
    state = rule.init_state(params)
    assert rule.memory_keys == ("momenta", "second_moment", "step")
    assert [tuple(t.shape) for t in state["w"]] == [(5, 30), (30,), (1,)]
    first, state, stats = rule.update(params, {"w": grads["w"], "b": None}, state, create_graph=False)
    assert torch.equal(first["b"], params["b"]) and not torch.equal(first["w"], params["w"])
    assert float(state["w"][2]) == 1.0 and float(state["b"][2]) == 0.0  # b had no gradient
    assert state["w"][2].device.type == "cpu" and stats.update_norm > 0
    # Tensors with different counts, stepped together, step as they would alone.
    second, state, _ = rule.update(first, grads, state, create_graph=False)
    _, w_alone, _ = rule.update({"w": params["w"]}, {"w": grads["w"]}, rule.init_state({"w": params["w"]}),
                                create_graph=False)
    for name, alone in (("w", w_alone), ("b", rule.init_state({"b": params["b"]}))):
        new, alone, _ = rule.update({name: first[name]}, {name: grads[name]}, alone, create_graph=False)
        torch.testing.assert_close(new[name], second[name])
        torch.testing.assert_close(alone[name][0], state[name][0])
        assert float(alone[name][2]) == float(state[name][2])


def test_steps_keep_the_parameters_dtype_and_shape() -> None:
    torch.manual_seed(0)
    rule = MLPRule()
    params = {"w": torch.randn(3, 2, 2, dtype=torch.float64), "s": torch.randn((), dtype=torch.float64)}
    grads = {k: torch.randn_like(v) for k, v in params.items()}
    new, _, _ = rule.update(params, grads, rule.init_state(params), create_graph=False)
    assert all(new[k].dtype == torch.float64 and new[k].shape == params[k].shape for k in params)


@pytest.mark.parametrize("config", [MLPRuleConfig(sign_symmetric=True),
                                    MLPRuleConfig(hidden_layers=3, sign_symmetric=True)])
def test_the_optimizer_path_and_the_differentiable_path_take_the_same_steps(
        config: MLPRuleConfig) -> None:
    torch.manual_seed(0)
    rule = MLPRule(config)
    params, grads = tensors(1)
    state = rule.init_state(params)
    plain, _, _ = rule.update(params, grads, state, create_graph=False)
    graphed, _, _ = rule.update(params, grads, state, create_graph=True)
    assert all(torch.equal(plain[k], graphed[k].detach()) for k in params)


@pytest.mark.parametrize("sign_symmetric", [False, True])
def test_a_fresh_rule_takes_tiny_steps_whatever_the_gradient_scale(sign_symmetric: bool) -> None:
    # Over 200 seeds x 30 steps with gradient scales from 1e-8 to 1e3, the largest step of a fresh
    # rule was 4.3e-3 (step_mult 1e-3); the bound below leaves a factor of more than 10.
    torch.manual_seed(0)
    rule = MLPRule(MLPRuleConfig(sign_symmetric=sign_symmetric))
    assert not rule.never_steps
    steps = []
    for scale in (1e-3, 1.0, 1e3):  # the features are free of the gradient's scale (but for eps)
        params, grads = tensors(2, scale)
        state = rule.init_state(params)
        for _ in range(3):
            new, state, _ = rule.update(params, grads, state, create_graph=False)
        steps.append(new["w"] - params["w"])
    largest = float(steps[1].abs().max())
    assert 0 < largest < 0.05
    for other in (steps[0], steps[2]):
        torch.testing.assert_close(other, steps[1], rtol=0, atol=1e-3 * largest)


# -- sign symmetry ---------------------------------------------------------------------------


def _mirrored_steps(rule: UpdateRule, steps: int = 4) -> tuple[list[Tensor], list[Tensor]]:
    params, _ = tensors(3)
    plus, minus = rule.init_state(params), rule.init_state(params)
    gen = torch.Generator().manual_seed(4)
    out_plus, out_minus = [], []
    with torch.no_grad():
        for _ in range(steps):
            grads = [torch.randn(p.shape, generator=gen) for p in params.values()]
            a, mem_plus = rule.steps(grads, list(plus.values()), list(params.values()))
            b, mem_minus = rule.steps([-g for g in grads], list(minus.values()), list(params.values()))
            plus, minus = dict(zip(params, mem_plus, strict=True)), dict(zip(params, mem_minus, strict=True))
            out_plus += a
            out_minus += b
    return out_plus, out_minus


@pytest.mark.parametrize("max_step", [None, 1e-3])
def test_sign_symmetric_mlp_rule_negates_its_step_exactly(max_step: float | None) -> None:
    torch.manual_seed(0)
    rule = MLPRule(MLPRuleConfig(sign_symmetric=True, max_step=max_step))
    plus, minus = _mirrored_steps(rule)
    assert all(torch.equal(a, -b) for a, b in zip(plus, minus, strict=True))
    params, grads = tensors(5)
    zero = {k: torch.zeros_like(g) for k, g in grads.items()}
    new, _, _ = rule.update(params, zero, rule.init_state(params), create_graph=False)
    assert all(torch.equal(new[k], params[k]) for k in params)  # no gradient, no step
    torch.manual_seed(0)
    plain = _mirrored_steps(MLPRule())
    assert not all(torch.equal(a, -b) for a, b in zip(*plain, strict=True))  # not by accident


def test_sign_symmetric_lstm_rule_negates_its_step_exactly() -> None:
    torch.manual_seed(0)
    rule = LSTMRule(LSTMRuleConfig(sign_symmetric=True, max_step=0.05))
    assert rule.never_steps  # the zero head still starts it at rest
    nn.init.normal_(rule.head.weight)
    nn.init.normal_(rule.head.bias)
    assert rule.init_memory(7)[0].shape == (2, 7, 40)  # both streams' memory
    plus, minus = _mirrored_steps(rule)
    assert all(torch.equal(a, -b) for a, b in zip(plus, minus, strict=True))
    assert any(bool(a.any()) for a in plus)


# -- the file --------------------------------------------------------------------------------


def test_save_and_load_round_trip_finds_the_architecture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    from_lists = MLPRuleConfig(decays=[0.5, 0.9], time_scales=[10, 100])  # type: ignore[arg-type]
    assert from_lists == MLPRuleConfig(decays=(0.5, 0.9), time_scales=(10.0, 100.0))  # as YAML gives
    rule = MLPRule.adam_clone(MLPRuleConfig(decays=(0.5, 0.9), time_scales=(10, 100), step_mult=1.0))
    path = rule.save(tmp_path / "mlp.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "l2l_gail.MLPRule" and payload["version"] == FORMAT_VERSION == 3
    loaded = UpdateRule.load(path)
    assert type(loaded) is MLPRule and loaded.config == rule.config and loaded.step_units == "lr"
    assert all(torch.equal(a, b) for a, b in zip(rule.state_dict().values(),
                                                 loaded.state_dict().values(), strict=True))
    assert MLPRule.load(path, config=rule.config).config == rule.config
    with pytest.raises(L2LError, match="not a learned-optimizer file"):
        LSTMRule.load(path)
    with pytest.raises(L2LError, match="does not know"):
        UpdateRule.from_payload({**payload, "format": "l2l_gail.FutureRule"}, source="x.pt")


def test_files_without_an_architecture_field_are_lstms(tmp_path: Path) -> None:
    old = UpdateRule.load(SHIPPED)  # format 1, written before the MLP rule existed
    assert type(old) is LSTMRule and old.config.sign_symmetric is False
    payload = LSTMRule().payload()
    v2 = {**payload, "version": 2, "config": {k: v for k, v in payload["config"].items()
                                               if k != "sign_symmetric"}}
    assert type(UpdateRule.from_payload(v2, source="v2.pt")) is LSTMRule


def test_rule_names_select_the_class() -> None:
    assert RULE_NAMES == ("lstm", "mlp")
    assert rule_type("lstm") is LSTMRule and rule_type("mlp") is MLPRule
    with pytest.raises(L2LError, match="choose one of lstm, mlp"):
        rule_type("gru")


def test_config_is_checked() -> None:
    with pytest.raises(L2LError, match=r"decays must be .* in \[0, 1\).*step_mult must be positive"):
        MLPRuleConfig(decays=(0.9, 1.0), step_mult=0)
    with pytest.raises(L2LError, match=r"beta1=0\.8"):
        MLPRule.adam_clone(beta1=0.8)
    with pytest.raises(L2LError, match="step_mult=1"):
        MLPRule.adam_clone(MLPRuleConfig())


# -- the Adam clone and the optimizer ---------------------------------------------------------


@pytest.mark.parametrize("sign_symmetric", [False, True])
def test_adam_clone_steps_like_adam(sign_symmetric: bool) -> None:
    rule = MLPRule.adam_clone(MLPRuleConfig(step_mult=1e-2, sign_symmetric=sign_symmetric),
                              step_units="absolute")
    gen = torch.Generator().manual_seed(0)
    grads = [10.0 ** float(torch.empty(1).uniform_(-6, 0, generator=gen)) * torch.randn(40, generator=gen)
             for _ in range(50)]
    params = {"p": torch.zeros(40)}
    state = rule.init_state(params)
    for g, expected in zip(grads, adam_reference(grads, lr=1e-2), strict=True):
        new, state, _ = rule.update(params, {"p": g}, state, create_graph=False)
        torch.testing.assert_close((new["p"] - params["p"]).double(), expected, rtol=1e-5, atol=1e-9)


def test_learned_optimizer_with_an_mlp_rule_file_trains_like_adam(tmp_path: Path) -> None:
    path = MLPRule.adam_clone().save(tmp_path / "phi.pt")  # steps in units of lr
    module, x, y = regression(0)
    twin, _, _ = regression(0)
    opt = LearnedOptimizer(module.parameters(), lr=1e-2, learned=path)
    adam = torch.optim.Adam(twin.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        for model, o in ((module, opt), (twin, adam)):
            loss = nn.functional.mse_loss(model(x), y)
            o.zero_grad()
            loss.backward()
            o.step()
            if o is opt:
                losses.append(float(loss.detach()))
    for a, b in zip(module.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert losses[-1] < 0.5 * losses[0]


def test_optimizer_state_resumes_bit_for_bit() -> None:
    def run(steps: int, resume_at: int | None) -> Tensor:
        module, x, y = regression(1)
        torch.manual_seed(0)
        opt = LearnedOptimizer(module.parameters(), lr=1e-2, learned=MLPRule(step_units="lr"))
        for i in range(steps):
            if i == resume_at:
                saved = opt.state_dict()
                opt = LearnedOptimizer(module.parameters(), lr=1e-2,
                                       learned=MLPRule(step_units="lr"))
                opt.load_state_dict(saved)
                assert opt.state[next(module.parameters())]["step"].device.type == "cpu"
            loss = nn.functional.mse_loss(module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    assert torch.equal(run(6, None), run(6, 3))


@pytest.mark.parametrize("config", [MLPRuleConfig(step_mult=1.0),
                                    MLPRuleConfig(step_mult=1.0, sign_symmetric=True, max_step=0.5,
                                                  hidden_layers=3, decays=(0.5, 0.9))])
def test_the_optimizer_steps_in_place_as_the_functional_update(config: MLPRuleConfig) -> None:
    # Two groups at different learning rates, a float64 tensor, and a tensor that only has a
    # gradient at every other step (so the tensors' counts differ on the steps in between).
    torch.manual_seed(0)
    rule = MLPRule(config, step_units="lr")
    nn.init.normal_(rule.head.weight)  # steps well away from zero
    gen = torch.Generator().manual_seed(1)
    shapes = {"w": (3, 4), "b": (4,), "d": (2, 2), "s": ()}
    module = {k: nn.Parameter(torch.randn(v, generator=gen)) for k, v in shapes.items()}
    module["d"].data = module["d"].data.double()
    lrs = {"w": 1e-2, "b": 1e-2, "d": 3e-2, "s": 3e-2}
    opt = LearnedOptimizer([{"params": [module["w"], module["b"]], "lr": 1e-2},
                            {"params": [module["d"], module["s"]], "lr": 3e-2}], learned=rule)
    params = {k: v.detach().clone() for k, v in module.items()}
    state = rule.init_state(params)
    for i in range(8):
        grads: dict[str, Tensor | None] = {k: torch.randn(v, generator=gen).to(module[k].dtype)
                                           for k, v in shapes.items()}
        grads["b"] = grads["b"] if i % 2 == 0 else None
        for k, p in module.items():
            p.grad = grads[k]
        opt.step()
        params, state, _ = rule.update(params, grads, state, create_graph=False, scale=lrs)
        for k, p in module.items():
            torch.testing.assert_close(p.detach(), params[k], rtol=1e-6, atol=1e-7)
            assert p.dtype == params[k].dtype
        assert [float(opt.state[module[k]]["step"]) for k in shapes] == [i + 1, i // 2 + 1, i + 1, i + 1]


def test_the_optimizer_state_is_its_memory_and_its_state_dict_a_snapshot() -> None:
    torch.manual_seed(0)
    module, x, y = regression(4)
    opt = LearnedOptimizer(module.parameters(), lr=1e-2, learned=MLPRule.adam_clone())

    def train(model: nn.Module, o: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            o.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            o.step()

    train(module, opt, 3)
    saved, snapshot = copy.deepcopy(opt.state_dict()), opt.state_dict()
    twin_module, twin = copy.deepcopy((module, opt))  # as pickling: memory copied to new buffers
    train(module, opt, 1)
    train(twin_module, twin, 1)
    assert all(torch.equal(p, q) for p, q in zip(module.parameters(), twin_module.parameters(),
                                                 strict=True))
    assert all(torch.equal(a, b) for i in saved["state"] for a, b in
               zip(saved["state"][i].values(), snapshot["state"][i].values(), strict=True))
    first = next(module.parameters())
    for key in ("momenta", "second_moment"):  # grad enabled: the state's views can be changed
        opt.state[first][key].zero_()
    opt.zero_grad()
    nn.functional.mse_loss(module(x), y).backward()
    zero = (*opt.learned.init_memory(first.numel())[:2], torch.tensor([4.0]))
    expected, _, _ = opt.learned.update({"p": first.detach()}, {"p": first.grad}, {"p": zero},
                                        create_graph=False, scale=1e-2)
    opt.step()
    torch.testing.assert_close(first.detach(), expected["p"])  # lr applied as add(alpha=) here


def test_the_optimizer_steps_with_phi_as_it_is_at_each_step() -> None:
    # The optimizer keeps what it derives from phi from step to step; phi trained between steps
    # (in place), loaded (copied in place) or given new storage must be taken as it now is.
    torch.manual_seed(0)
    module, x, y = regression(5)
    rule = MLPRule(step_units="lr")
    opt = LearnedOptimizer(module.parameters(), lr=1e-2, learned=rule)
    meta_opt = torch.optim.Adam(rule.parameters(), lr=1e-2)

    def loss(params: dict[str, Tensor]) -> Tensor:
        return nn.functional.mse_loss(functional_call(module, params, (x,)), y)

    def backward() -> dict[str, nn.Parameter]:
        opt.zero_grad()
        nn.functional.mse_loss(module(x), y).backward()
        return dict(module.named_parameters())

    changes = [lambda: opt.lookahead_step(module, loss, loss, meta_opt),
               lambda: rule.load_state_dict(MLPRule(step_units="lr").state_dict()),
               lambda: setattr(rule.head.weight, "data", torch.randn(rule.head.weight.shape))]
    for change in changes:
        backward()
        opt.step()
        before = {k: v.detach().clone() for k, v in rule.state_dict().items()}
        change()
        assert any(not torch.equal(before[k], v) for k, v in rule.state_dict().items())
        params = backward()
        memory = {n: rule.memory_of(opt.state[p], p.numel()) for n, p in params.items()}
        expected, _, _ = rule.update({n: p.detach() for n, p in params.items()},
                                     {n: p.grad for n, p in params.items()}, memory,
                                     create_graph=False, scale=1e-2)
        opt.step()
        for n, p in params.items():
            torch.testing.assert_close(p.detach(), expected[n], rtol=1e-6, atol=1e-7)


# -- meta-training -----------------------------------------------------------------------------


@pytest.mark.parametrize("second_order", [False, True])
def test_meta_step_through_an_unroll_trains_every_layer(second_order: bool) -> None:
    torch.manual_seed(0)
    rule = MLPRule(MLPRuleConfig(sign_symmetric=second_order))
    module, x, y = regression(2)
    meta_opt = torch.optim.Adam(rule.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in rule.named_parameters()}

    def loss_fn(params: dict[str, Tensor], step: int) -> Tensor:
        return nn.functional.mse_loss(functional_call(module, params, (x,)), y)

    result = unroll(rule, trainable_params(module), loss_fn, 5, second_order=second_order)
    stats = meta_step(result.meta_loss, meta_opt)
    assert torch.isfinite(torch.tensor([stats.meta_loss, stats.grad_norm])).all() and stats.grad_norm > 0
    assert all(not torch.equal(before[k], v) for k, v in rule.named_parameters())
    assert all(p.grad is None for p in module.parameters())
    # first-order: the memory depends on the (detached) gradients only, so it carries no graph
    assert second_order or not any(t.requires_grad for mem in result.state.values() for t in mem)


def test_lookahead_step_trains_phi_online() -> None:
    torch.manual_seed(0)
    module, x, y = regression(3)
    rule = MLPRule.adam_clone()
    opt = LearnedOptimizer(module.parameters(), lr=1e-2, learned=rule)
    meta_opt = torch.optim.Adam(rule.parameters(), lr=1e-3)
    head = rule.head.weight.detach().clone()

    def loss(params: dict[str, Tensor]) -> Tensor:
        return nn.functional.mse_loss(functional_call(module, params, (x,)), y)

    first = opt.lookahead_step(module, loss, loss, meta_opt)
    for _ in range(20):
        last = opt.lookahead_step(module, loss, loss, meta_opt)
    assert last.meta_loss < first.train_loss and not torch.equal(head, rule.head.weight)
