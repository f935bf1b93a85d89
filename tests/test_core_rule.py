"""The learned update rule: preprocessing, the functional update, and its versioned file."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from l2l_gail.core import LSTMRule, LSTMRuleConfig, UpdateRule, preprocess_gradients, trainable_params
from l2l_gail.core.rule_file import FORMAT_VERSION
from l2l_gail.errors import L2LError

SHIPPED = Path(__file__).resolve().parents[1] / "results" / "meta" / "optimizers"


def random_head(config: LSTMRuleConfig | None = None, **kwargs: object) -> LSTMRule:
    """A rule that takes non-zero steps (a fresh one has a zero head)."""
    torch.manual_seed(0)
    rule = LSTMRule(config, **kwargs)  # type: ignore[arg-type]
    nn.init.normal_(rule.head.weight)
    return rule


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


def test_fresh_rule_leaves_parameters_unchanged_and_says_so() -> None:
    learned = LSTMRule()
    assert learned.never_steps
    params = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    grads = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    new, state, stats = learned.update(params, grads, learned.init_state(params),
                                       create_graph=False)
    assert all(torch.equal(new[k], params[k]) for k in params)
    assert stats.update_norm == 0.0 and stats.grad_norm > 0
    assert state["w"][0].shape == (2, 12, 20)
    assert not random_head().never_steps


def test_gradients_reach_phi_through_functional_call() -> None:
    learned = random_head()  # a zero head would block the LSTM's meta-gradient
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = torch.sin(x.sum(1, keepdim=True))
    module = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
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
    learned = random_head()
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


# -- the versioned file ---------------------------------------------------------------------


@pytest.mark.parametrize("units", ["absolute", "lr"])
def test_save_load_round_trips_exactly(tmp_path: Path, units: str) -> None:
    learned = random_head(step_units=units)
    path = learned.save(tmp_path / "phi.pt")
    loaded = LSTMRule.load(path, config=LSTMRuleConfig())
    assert torch.load(path, weights_only=True)["version"] == FORMAT_VERSION
    assert loaded.config == learned.config and loaded.step_units == units
    for (k, a), (_, b) in zip(learned.state_dict().items(), loaded.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    params = {"w": torch.randn(7)}
    grads = {"w": torch.randn(7)}
    out = [m.update(params, grads, m.init_state(params), create_graph=False)[0]["w"]
           for m in (learned, loaded)]
    assert torch.equal(*out)
    assert type(UpdateRule.load(path)) is LSTMRule  # the generic loader finds the rule by format


def test_version_1_files_still_load_with_absolute_steps(tmp_path: Path) -> None:
    shipped = SHIPPED / "mnist-mlp-fgsm-eps0.1.pt"
    assert torch.load(shipped, weights_only=True)["version"] == 1  # written before step units
    rule = LSTMRule.load(shipped)
    assert rule.step_units == "absolute" and not rule.never_steps
    payload = random_head(step_units="lr").payload()
    v1 = {k: v for k, v in payload.items() if k != "step_units"} | {"version": 1}
    torch.save(v1, tmp_path / "v1.pt")
    old = LSTMRule.load(tmp_path / "v1.pt")
    assert old.step_units == "absolute"
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(),
                                                 payload["state_dict"].values(), strict=True))


def _bad_files(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    payload = torch.load(good, weights_only=True)
    cases: dict[str, tuple[Path, str]] = {}

    def add(name: str, write: Callable[[Path], object], match: str) -> None:
        path = tmp_path / name
        write(path)
        cases[name] = (path, match)

    add("missing.pt", lambda p: None, "does not exist")
    add("garbage.pt", lambda p: p.write_bytes(b"\x00not a checkpoint" * 10), "not a readable")
    add("truncated.pt", lambda p: p.write_bytes(good.read_bytes()[:300]), "not a readable")
    add("tensor.pt", lambda p: torch.save(torch.zeros(3), p), "not a learned-optimizer file")
    add("format.pt", lambda p: torch.save({**payload, "format": "other"}, p),
        "not a learned-optimizer file")
    add("v99.pt", lambda p: torch.save({**payload, "version": 99}, p), "format version 99")
    add("units.pt", lambda p: torch.save({**payload, "step_units": "lr2"}, p), "step units 'lr2'")
    add("shape.pt", lambda p: torch.save(
        {**payload, "config": {**payload["config"], "hidden_size": 8}}, p), "do not fit")
    add("config.pt", lambda p: torch.save(
        {**payload, "config": {**payload["config"], "flavour": 1}}, p), "configuration")
    return cases


def test_load_refuses_bad_files_with_one_line(tmp_path: Path) -> None:
    good = LSTMRule().save(tmp_path / "good.pt")
    for name, (path, match) in _bad_files(tmp_path, good).items():
        with pytest.raises(L2LError, match=match) as info:
            LSTMRule.load(path)
        assert "\n" not in str(info.value), name
    with pytest.raises(L2LError, match="another configuration: hidden_size=20"):
        LSTMRule.load(good, config=LSTMRuleConfig(hidden_size=32))
    with pytest.raises(L2LError, match="output_scale must be positive"):
        LSTMRuleConfig(output_scale=0)
    with pytest.raises(L2LError, match="step_units must be one of absolute, lr"):
        LSTMRule(step_units="relative")  # type: ignore[arg-type]
