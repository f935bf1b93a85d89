"""Every GAIL trainer keeps imitation's trainer contract.

Modelled on imitation 1.0.1's own ``tests/algorithms/test_adversarial.py``, run against
``GAILTrainer``, ``GAILGPTrainer``, ``L2LGAILTrainer`` and ``L2LGAILTrainer`` with the learned
policy optimizer (``tests/conftest.py``'s ``make_gail_trainer``, on Pendulum-v1 with an
energy-pumping "expert"). Two differences from imitation's are deliberate and tested here too:
demonstrations must be ``Transitions`` and a discriminator update takes the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from imitation.data import rollout, types
from imitation.util import networks
from torch.utils.data import DataLoader

from l2l_gail.gail.loop import start_segment
from l2l_gail.runs import global_rng_state, safe_torch_load, set_global_rng_state

BATCH = 16
FIT_STEPS = 5
"""Steps (learning rate 1e-3) after which the objective on fixed samples must have fallen: it
fell by 2% or more for every trainer and each of the seeds 0-47."""
SEPARATE_STEPS, SEPARATE_LR = 30, 1e-2
"""Steps and learning rate after which the expert's mean logit must be the higher: the smallest
gap was 0.95 (gail-gp) over the seeds 0-47; the gradient penalty makes gail-gp the slowest."""


def generator_samples(trainer: Any, n: int, seed: int = 0) -> Mapping[str, np.ndarray]:
    """``n`` transitions of the (untrained) generator, in imitation's dictionary form."""
    transitions = rollout.generate_transitions(trainer.gen_algo, trainer.venv, n_timesteps=n,
                                               truncate=True, rng=np.random.default_rng(seed))
    return types.dataclass_quick_asdict(transitions)


def expert_samples(demos: types.Transitions, n: int, seed: int = 0) -> Mapping[str, np.ndarray]:
    idx = np.random.default_rng(seed).choice(len(demos), n, replace=False)
    return {k: v[idx] for k, v in types.dataclass_quick_asdict(demos).items() if k != "infos"}


def test_no_generator_samples_is_an_error(gail_method: str, make_gail_trainer: Callable[..., Any]) -> None:
    with pytest.raises(RuntimeError, match="No generator samples"):
        make_gail_trainer(gail_method).train_disc()


def test_unequal_sample_counts_are_refused(gail_method: str, make_gail_trainer: Callable[..., Any],
                                           pendulum_demos: types.Transitions) -> None:
    trainer = make_gail_trainer(gail_method, demo_batch_size=BATCH)
    with pytest.raises(ValueError, match="n_expert"):
        trainer.train_disc(expert_samples=expert_samples(pendulum_demos, BATCH),
                           gen_samples=generator_samples(trainer, BATCH - 1))


@pytest.mark.parametrize("batch_size", [1, BATCH])
def test_step_with_supplied_generator_samples(gail_method: str, batch_size: int,
                                              make_gail_trainer: Callable[..., Any]) -> None:
    """An empty replay buffer is no obstacle when the caller brings the generator samples
    (L2L-GAIL used to draw its held-out rows from the buffer regardless)."""
    trainer = make_gail_trainer(gail_method, demo_batch_size=batch_size)
    stats = trainer.train_disc(gen_samples=generator_samples(trainer, batch_size))
    assert np.isfinite(stats["disc_loss"]) and stats["n_generated"] == batch_size
    assert trainer.disc_step == 1


def test_supplied_samples_are_the_only_data(gail_method: str, make_gail_trainer: Callable[..., Any],
                                            pendulum_demos: types.Transitions) -> None:
    """With the caller's samples, no update (nor L2L-GAIL's held-out batch) reads the replay
    buffer (sampled with numpy's global RNG) or draws expert rows (the trainer's ``rng``)."""
    trainer = make_gail_trainer(gail_method, demo_batch_size=BATCH)
    trainer.train_gen()
    gen = generator_samples(trainer, BATCH)
    numpy_state = global_rng_state()["numpy"]
    trainer.train_disc(gen_samples=gen)  # fresh expert rows, but no buffer rows
    assert global_rng_state()["numpy"] == numpy_state
    expert_state = trainer.rng.bit_generator.state
    for _ in range(2):
        trainer.train_disc(expert_samples=expert_samples(pendulum_demos, BATCH), gen_samples=gen)
    assert global_rng_state()["numpy"] == numpy_state
    assert trainer.rng.bit_generator.state == expert_state


def test_generator_and_discriminator_rounds(gail_method: str, make_gail_trainer: Callable[..., Any]) -> None:
    trainer = make_gail_trainer(gail_method, demo_batch_size=BATCH)
    for _ in range(2):
        trainer.train_gen(2 * trainer.gen_train_timesteps)
        with networks.training(trainer.reward_train):
            stats = [trainer.train_disc() for _ in range(2)]
    assert trainer.global_step == 2 and trainer.disc_step == 4
    assert trainer.gen_algo.num_timesteps == 4 * trainer.gen_train_timesteps
    assert all(np.isfinite(s["disc_loss"]) and s["gen_logit_shift"] > 0 for s in stats)
    learned = gail_method not in ("gail", "gail-gp", "sign-sgd")
    meta_losses = [s["l2l/meta_loss"] for s in stats if "l2l/meta_loss" in s]
    assert bool(meta_losses) == (learned and gail_method != "l2l-frozen")  # next-round: a round late
    assert all(np.isfinite(meta_losses))
    assert not learned or all(np.isfinite(s["l2l/adam_norm"]) for s in stats)


def fixed_objective(trainer: Any, batch: Mapping[str, Any]) -> float:
    """What the trainer's update minimises on ``batch`` (cross-entropy, plus the gradient
    penalty for gail-gp at interpolates of a fixed seed), without moving any state."""
    with torch.random.fork_rng(), networks.evaluating(trainer.discriminator):
        torch.manual_seed(0)
        return float(trainer.disc_objective(batch).total.detach())


def fit_fixed_samples(trainer: Any, demos: types.Transitions, steps: int,
                      seed: int = 0) -> tuple[Mapping[str, Any], float, float]:
    """``steps`` updates on one fixed batch; returns it and the objective before and after.

    The input normalisation first sees the batch once (training mode), so that it holds the
    batch's statistics throughout and the objective's change is the steps' alone."""
    expert, gen = expert_samples(demos, BATCH, seed), generator_samples(trainer, BATCH, seed)
    batch = trainer.disc_batch(expert, gen)
    with torch.no_grad(), networks.training(trainer.discriminator):
        trainer.disc_logits(batch)
    before = fixed_objective(trainer, batch)
    for _ in range(steps):
        trainer.train_disc(expert_samples=expert, gen_samples=gen)
    return batch, before, fixed_objective(trainer, batch)


def test_objective_falls_on_fixed_samples(gail_method: str, make_gail_trainer: Callable[..., Any],
                                          pendulum_demos: types.Transitions) -> None:
    """imitation's "discriminator improves" check, on the objective each trainer minimises
    (gail-gp's cross-entropy alone may rise: it minimises cross-entropy plus penalty)."""
    trainer = make_gail_trainer(gail_method, demo_batch_size=BATCH)
    _, before, after = fit_fixed_samples(trainer, pendulum_demos, FIT_STEPS)
    assert after < before


def test_logits_are_high_for_the_expert(gail_method: str, make_gail_trainer: Callable[..., Any],
                                        pendulum_demos: types.Transitions) -> None:
    """``logits_expert_is_high`` (with or without the policy's log-probabilities) is the
    trainer's discriminator, and after training on fixed samples it ranks the expert higher."""
    trainer = make_gail_trainer(gail_method, demo_batch_size=BATCH, disc_lr=SEPARATE_LR)
    batch, _, _ = fit_fixed_samples(trainer, pendulum_demos, SEPARATE_STEPS)
    args = (batch["state"], batch["action"], batch["next_state"], batch["done"])
    with torch.no_grad(), networks.evaluating(trainer.discriminator):
        logits = trainer.disc_logits(batch)
        for log_prob in (None, batch["log_policy_act_prob"]):
            assert torch.equal(trainer.logits_expert_is_high(*args, log_prob), logits)
    expert = batch["labels_expert_is_one"] == 1
    assert logits[expert].mean() > logits[~expert].mean()


def test_state_dict_resumes_exactly(gail_method: str, make_gail_trainer: Callable[..., Any],
                                    tmp_path: Path) -> None:
    """A trainer rebuilt and loaded from ``state_dict`` (through a weights-only file) and the
    global RNG states continues exactly as the original."""
    original = make_gail_trainer(gail_method, demo_batch_size=BATCH)
    original.train_gen()
    for _ in range(2):
        original.train_disc()
    torch.save(original.state_dict(), tmp_path / "state.pt")
    rng = global_rng_state()
    resumed = make_gail_trainer(gail_method, demo_batch_size=BATCH)
    resumed.load_state_dict(safe_torch_load(tmp_path / "state.pt"))
    for trainer in (original, resumed):
        set_global_rng_state(rng)
        start_segment(trainer, seed=0, segment=1)
        trainer.train_gen()
        for _ in range(2):
            trainer.train_disc()
    for a, b in ((original.discriminator, resumed.discriminator),
                 (original.gen_algo.policy, resumed.gen_algo.policy)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                      strict=True))
    assert str(original.state_dict()) == str(resumed.state_dict())


def test_deliberate_differences_from_imitation(make_gail_trainer: Callable[..., Any],
                                               pendulum_demos: types.Transitions) -> None:
    """Expert batches come from a checkpointable numpy generator, so demonstrations must be
    ``Transitions``; updates take whole batches."""
    loader = DataLoader(pendulum_demos, batch_size=BATCH, collate_fn=types.transitions_collate_fn)
    with pytest.raises(TypeError, match="Transitions"):
        make_gail_trainer("gail", demonstrations=loader)
    with pytest.raises(ValueError, match="whole batches"):
        make_gail_trainer("gail", demo_minibatch_size=BATCH // 2)
