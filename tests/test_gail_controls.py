"""The controls of the learned discriminator optimizer and the v2 configurations of l2l-gail.

Controls (issue 12): ``l2l-frozen`` (phi stays the Adam clone), ``adam-matched`` (Adam's
direction at the learned step's norm) and ``sign-sgd``. v2 (issue 13): phi's direction at Adam's
norm or a fixed one, the constrained meta-objective with its dual-ascent multiplier, and the
held-out batch of the next round. The trainer contract (training rounds, exact resume from
``state_dict``) runs over all of them in ``tests/test_gail_contract.py``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from imitation.data import types
from imitation.util import networks

from l2l_gail.errors import L2LError
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.factory import prepare
from l2l_gail.gail.loop import train
from l2l_gail.gail.steps import AdamReference, SignSGD, output_shift, shape_step
from l2l_gail.gail.tasks import load_task
from l2l_gail.runs import RunDir

BATCH = 16
NORM_RTOL = 1e-3
"""Tolerance of a per-tensor norm measured as ``theta_after - theta_before`` in float32: the
rounding of ``theta + step`` is at most half an ulp of ``theta`` per coordinate, about 1e-4 of a
1e-3 step for parameters of order 1 (the shaped step itself is exact to 1e-6, see
``test_shape_step_sets_norm_and_direction``)."""


def fixed_samples(trainer: Any, demos: types.Transitions) -> tuple[dict[str, Any], dict[str, Any]]:
    """One batch of expert rows and of the (untrained) generator's rows, in imitation's form."""
    from imitation.data import rollout

    gen = rollout.generate_transitions(trainer.gen_algo, trainer.venv, n_timesteps=BATCH, truncate=True,
                                       rng=np.random.default_rng(0))
    idx = np.random.default_rng(0).choice(len(demos), BATCH, replace=False)
    expert = {k: v[idx] for k, v in types.dataclass_quick_asdict(demos).items() if k != "infos"}
    return expert, dict(types.dataclass_quick_asdict(gen))


def params_of(trainer: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.discriminator.named_parameters()}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum() / (a.double().norm() * b.double().norm()))


# ----------------------------------------------------------------------------- the pieces
def test_adam_reference_is_torch_adam() -> None:
    """The reference's step is the step torch's Adam (default settings) takes on the same gradients."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(5, 3))
    adam = torch.optim.Adam([param], lr=1e-3)
    reference = AdamReference(1e-3)
    for _ in range(4):
        grad = torch.randn(5, 3)
        before = param.detach().clone()
        param.grad = grad.clone()
        adam.step()
        step = reference.step({"w": grad, "unused": None})
        assert set(step) == {"w"}
        torch.testing.assert_close(before + step["w"], param.detach(), rtol=0, atol=1e-9)
    restored = AdamReference(1e-3)
    restored.load_state_dict(reference.state_dict())
    grad = torch.randn(5, 3)
    assert torch.equal(restored.step({"w": grad})["w"], reference.step({"w": grad})["w"])


@pytest.mark.parametrize(("norm", "direction"), [("adam", "learned"), ("ttur", "learned"),
                                                 ("learned", "adam"), ("learned", "learned")])
def test_shape_step_sets_norm_and_direction(norm: Any, direction: Any) -> None:
    torch.manual_seed(0)
    learned, adam = torch.randn(7, 4) * 3e-3, torch.randn(7, 4) * 1e-3
    step = shape_step(learned, adam, norm=norm, direction=direction, lr=1e-3)
    target = {"learned": learned.norm(), "adam": adam.norm(), "ttur": torch.tensor(1e-3)}[norm]
    torch.testing.assert_close(step.norm(), target, rtol=1e-6, atol=0)
    assert cosine(step, learned if direction == "learned" else adam) == pytest.approx(1, abs=1e-6)
    assert torch.equal(shape_step(torch.zeros(3), adam[0, :3], norm=norm, direction="learned", lr=1e-3),
                       torch.zeros(3))


def test_shape_step_is_differentiable_in_the_learned_step() -> None:
    learned = (torch.randn(6) * 1e-3).requires_grad_()
    adam = torch.randn(6) * 1e-3
    (grad,) = torch.autograd.grad(shape_step(learned, adam, norm="adam", direction="learned", lr=1e-3).sum(),
                                  [learned])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_output_shift() -> None:
    old, new = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 2.0, -3.0])
    assert float(output_shift(old, new, "logit")) == pytest.approx(1.0)
    p, q = torch.sigmoid(old).double(), torch.sigmoid(new).double()
    kl = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean()
    assert float(output_shift(old, new, "kl")) == pytest.approx(float(kl), rel=1e-5)
    assert float(output_shift(new, new, "kl")) == 0.0


def test_sign_sgd_optimizer() -> None:
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    param.grad = torch.tensor([0.3, -1e-6, 0.0, -7.0])
    SignSGD([param], lr=0.1).step()
    expected = torch.tensor([1.0, -2.0, 3.0, 0.5]) - 0.1 * torch.tensor([1.0, -1, 0, -1])
    assert torch.equal(param.detach(), expected)


# ----------------------------------------------------------------------------- the controls
def test_sign_sgd_trainer_steps_lr_times_sign(make_gail_trainer: Callable[..., Any],
                                              pendulum_demos: types.Transitions) -> None:
    """Each discriminator coordinate moves by exactly -disc_lr * sign(grad), on the gradient of
    the batch's cross-entropy (computed here on a copy that sees the same batch)."""
    trainer = make_gail_trainer("sign-sgd", demo_batch_size=BATCH, disc_lr=1e-2)
    expert, gen = fixed_samples(trainer, pendulum_demos)
    batch = trainer.disc_batch(expert, gen)
    twin = copy.deepcopy(trainer.discriminator)
    before = params_of(trainer)
    with networks.training(trainer.discriminator), networks.training(twin):
        trainer.train_disc(expert_samples=expert, gen_samples=gen)
        args = (batch["state"], batch["action"], batch["next_state"], batch["done"])
        torch.nn.functional.binary_cross_entropy_with_logits(
            twin(*args), batch["labels_expert_is_one"].float()).backward()
    for name, p in twin.named_parameters():
        assert p.grad is not None
        expected = before[name].add(p.grad.sign(), alpha=-1e-2)
        assert torch.equal(dict(trainer.discriminator.named_parameters())[name].detach(), expected), name


def test_frozen_phi_never_changes_and_draws_no_heldout_batch(make_gail_trainer: Callable[..., Any]) -> None:
    trainer = make_gail_trainer("l2l-frozen", demo_batch_size=BATCH)
    phi = copy.deepcopy(trainer.learned.state_dict())
    drawn: list[int] = []
    draw = trainer.next_expert_batch

    def counting() -> Mapping[str, np.ndarray]:
        drawn.append(1)
        return draw()

    trainer.next_expert_batch = counting
    for _ in range(2):
        trainer.train_gen()
        with networks.training(trainer.reward_train):
            stats = [trainer.train_disc() for _ in range(2)]
    assert len(drawn) == 4  # the training batches only
    assert all(torch.equal(v, trainer.learned.state_dict()[k]) for k, v in phi.items())
    assert all("l2l/meta_loss" not in s and s["l2l/learned_norm"] > 0 for s in stats)
    moved = max(float(t.abs().max()) for t in trainer.last_steps["applied"].values())
    assert moved > 0


@pytest.mark.parametrize(("method", "norm_of", "direction_of"), [
    ("adam-matched", "learned", "adam"),
    ("l2l-adam-norm", "adam", "learned"),
    ("l2l-ttur", "ttur", "learned"),
])
def test_applied_step_has_the_reference_norm(method: str, norm_of: str, direction_of: str,
                                             make_gail_trainer: Callable[..., Any]) -> None:
    """Per tensor, the step the discriminator takes has the norm of the reference (phi's step,
    Adam's on the same gradient, or disc_lr) and the direction of the other, on meta steps and
    plain ones alike."""
    disc_lr = 1e-3
    trainer = make_gail_trainer(method, demo_batch_size=BATCH, disc_lr=disc_lr)
    trainer.meta_every = 2
    trainer.train_gen()
    phi = copy.deepcopy(trainer.learned.state_dict())
    for _ in range(3):
        before = params_of(trainer)
        with networks.training(trainer.reward_train):
            trainer.train_disc()
        steps = trainer.last_steps
        for name, after in trainer.discriminator.named_parameters():
            applied = after.detach() - before[name]
            assert torch.allclose(applied, steps["applied"][name])
            target = disc_lr if norm_of == "ttur" else float(steps[norm_of][name].norm())
            assert float(applied.norm()) == pytest.approx(target, rel=NORM_RTOL), name
            assert cosine(applied, steps[direction_of][name]) == pytest.approx(1, abs=NORM_RTOL), name
    # phi is meta-trained as in l2l-gail
    assert any(not torch.equal(v, trainer.learned.state_dict()[k]) for k, v in phi.items())


# ----------------------------------------------------------------------------- v2
def test_dual_multiplier_rises_when_violated_and_falls_to_zero_when_slack(
        make_gail_trainer: Callable[..., Any]) -> None:
    trainer = make_gail_trainer("l2l-logit", demo_batch_size=BATCH, disc_lr=1e-2)
    trainer.budget, trainer.dual_lr = 0.0, 1.0  # every step that moves a logit violates it
    trainer.train_gen()
    multipliers = []
    with networks.training(trainer.reward_train):
        for _ in range(3):
            stats = trainer.train_disc()
            multipliers.append(trainer.multiplier)
            assert stats["l2l/multiplier"] == trainer.multiplier and stats["l2l/shift"] > 0
        assert multipliers[0] > 0 and multipliers == sorted(multipliers) and multipliers[-1] > multipliers[0]
        trainer.budget = 1e6  # slack: one step sends it to 0, where it stays
        for _ in range(2):
            trainer.train_disc()
            assert trainer.multiplier == 0.0
    state = trainer.state_dict()
    assert state["l2l"]["multiplier"] == 0.0


@pytest.mark.parametrize("constraint", ["logit", "kl"])
def test_constraint_measures_the_step(constraint: str, make_gail_trainer: Callable[..., Any]) -> None:
    """The measured shift is 0 for no step and grows with the step."""
    trainer = make_gail_trainer(f"l2l-{constraint}", demo_batch_size=BATCH)
    trainer.train_gen()
    trainer.multiplier = 1.0
    batch = trainer.disc_batch()
    before = params_of(trainer)
    shifts = []
    for scale in (0.0, 1e-3, 1e-2):
        after = {n: p + scale * torch.ones_like(p) for n, p in before.items()}
        loss, shift = trainer.meta_loss(batch, before, after, {})
        assert shift is not None and torch.isfinite(loss)
        shifts.append(float(shift))
    assert shifts[0] == pytest.approx(0, abs=1e-7) and 0 < shifts[1] < shifts[2]


def rows(batch: Mapping[str, Any]) -> set[tuple[float, ...]]:
    return {tuple(r) for r in torch.cat([batch["state"], batch["action"]], dim=1).tolist()}


def test_next_round_heldout_batch_holds_no_training_row(make_gail_trainer: Callable[..., Any]) -> None:
    """Steps of round r are scored after round r + 1's rollout, on its new generator rows and on
    expert rows none of round r's training batches held."""
    trainer = make_gail_trainer("l2l-next-round", demo_batch_size=BATCH,
                                gen_replay_buffer_capacity=4 * trainer_rollout())
    trained: list[tuple[int, Mapping[str, Any]]] = []
    heldout: list[tuple[int, Mapping[str, Any]]] = []
    update, next_round_batch = trainer.disc_update, trainer.next_round_batch

    def recording_update(batch: Any, heldout_batch: Any) -> Any:
        trained.append((trainer.global_step, batch))
        return update(batch, heldout_batch)

    def recording_heldout(gen_rows: Any, free: Any) -> Any:
        batch = next_round_batch(gen_rows, free)
        heldout.append((trainer.global_step, batch))
        return batch

    trainer.disc_update, trainer.next_round_batch = recording_update, recording_heldout
    phi = copy.deepcopy(trainer.learned.state_dict())
    for _ in range(3):
        trainer.train_gen()
        with networks.training(trainer.reward_train):
            for _ in range(2):
                trainer.train_disc()
    assert [round_ for round_, _ in heldout] == [2, 2, 3, 3]
    assert any(not torch.equal(v, trainer.learned.state_dict()[k]) for k, v in phi.items())
    for round_, batch in heldout:
        scored = [rows(b) for r, b in trained if r == round_ - 1]
        assert len(scored) == 2 and not rows(batch) & set().union(*scored)
    assert len(trainer.pending) == 2  # the last round's steps, in the state dict until scored
    assert len(trainer.state_dict()["l2l"]["pending"]) == 2


def trainer_rollout() -> int:
    """PPO's rollout in ``make_gail_trainer`` (one env x ``n_steps`` 32)."""
    return 32


# ----------------------------------------------------------------------------- configuration
def test_config_checks_and_old_runs_resume() -> None:
    task = load_task("inverted-pendulum")
    default = GAILConfig(method="l2l-gail").resolved(task)
    assert not {"l2l_step_norm", "l2l_step_direction", "l2l_constraint", "l2l_budget", "l2l_dual_lr",
                "l2l_heldout"} & set(default.to_dict())  # older runs' config.yaml compare equal
    ttur = GAILConfig(method="l2l-gail", l2l_step_norm="ttur", l2l_constraint="kl", l2l_budget=0.01,
                      l2l_heldout="next-round").resolved(task).to_dict()
    assert (ttur["l2l_step_norm"], ttur["l2l_constraint"], ttur["l2l_budget"], ttur["l2l_heldout"]) == (
        "ttur", "kl", 0.01, "next-round")
    assert GAILConfig(method="sign-sgd").resolved(task).method == "sign-sgd"
    bad_options: list[tuple[dict[str, Any], str]] = [
        ({"l2l_step_norm": "big"}, "unknown --l2l-step-norm 'big'"),
        ({"l2l_step_direction": "adam", "l2l_step_norm": "adam"}, "adam-matched"),
        ({"l2l_constraint": "logit"}, "--l2l-budget goes with"),
        ({"l2l_budget": 0.1}, "--l2l-budget goes with"),
        ({"l2l_constraint": "kl", "l2l_budget": -1.0}, "--l2l-budget must be a non-negative"),
        ({"l2l_heldout": "later"}, "unknown --l2l-heldout")]
    for bad, match in bad_options:
        with pytest.raises(L2LError, match=match):
            GAILConfig(method="l2l-gail", **bad).resolved(task)


# ----------------------------------------------------------------------------- end to end
TINY: dict[str, Any] = {
    "timesteps": 768, "eval_every": 256, "eval_episodes": 1, "n_envs": 2, "demo_batch_size": 64,
    "gen_replay_buffer_capacity": 256, "n_disc_updates_per_round": 2,
    "ppo": {"n_steps": 128, "batch_size": 64}}


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"] if "time/" not in tag}


@pytest.mark.parametrize(("options", "tags"), [
    ({"method": "sign-sgd"}, set()),
    ({"method": "l2l-gail", "l2l_meta_lr": 0.0}, {"l2l/learned_norm", "l2l/adam_norm", "l2l/norm_ratio"}),
    ({"method": "l2l-gail", "l2l_step_direction": "adam", "l2l_step_norm": "learned", "l2l_constraint": "kl",
      "l2l_budget": 1e-4, "l2l_heldout": "next-round"},
     {"l2l/learned_norm", "l2l/adam_norm", "l2l/meta_loss", "l2l/multiplier", "l2l/shift"}),
    ({"method": "l2l-gail", "l2l_step_norm": "adam", "l2l_constraint": "logit", "l2l_budget": 0.01},
     {"l2l/learned_norm", "l2l/adam_norm", "l2l/meta_loss", "l2l/multiplier", "l2l/shift"}),
])
def test_resume_reproduces_an_uninterrupted_run(options: dict[str, Any], tags: set[str],
                                                tmp_path: Path) -> None:
    """Each configuration trains and logs its diagnostics, and a run resumed from its first
    checkpoint (with learned steps pending for the next round, a multiplier, Adam's moments)
    ends exactly as the uninterrupted one."""
    torch.set_num_threads(1)
    prepared = prepare(GAILConfig(task="inverted-pendulum", seed=1, **options, **TINY))

    def run_dir(name: str, resume: bool = False) -> RunDir:
        return RunDir(tmp_path / name, dataclasses.asdict(prepared.config), resume=resume)

    whole = train(prepared, run_dir("whole"), progress=False)

    class Interrupt(Exception):
        pass

    def stop(step: int) -> None:
        if step == 256:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(prepared, run_dir("cut"), progress=False, on_checkpoint=stop)
    resumed = train(prepared, run_dir("cut", resume=True), resume=True, progress=False)
    assert resumed["history"] == whole["history"]
    series = scalars(tmp_path / "whole")
    assert tags | {"disc/logit_expert", "disc/logit_gen", "disc/update_norm", "reward/mean",
                   "disc/gen_logit_shift", "disc/gen_kl_shift"} <= set(series)
    assert scalars(tmp_path / "cut") == series
    a, b = (torch.load(tmp_path / name / "discriminator.pt") for name in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
