"""Meta-training of the robust learned optimizer (l2l_gail.meta.train)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from l2l_gail.core import LSTMRule
from l2l_gail.errors import L2LError
from l2l_gail.meta.train import MetaConfig, build_train_attack, config_dict, meta_train
from l2l_gail.runs import RunDir

torch.set_num_threads(1)


def tiny(**overrides: object) -> MetaConfig:
    """A meta-training problem that runs in seconds: the offline MNIST images, an 8-unit MLP, FGSM at
    eps 0.01, 9 episodes of 20 steps. (On the generated data set the optimizee itself learns too
    slowly for a few meta-steps to show; at larger eps the optimizer first collapses to doing nothing.)"""
    base: dict[str, object] = {"dataset": "mnist-5k", "width": 8, "batch_size": 32, "unroll": 5,
                               "episode_steps": 20, "episodes": 9, "eps": 0.01, "eps_warmup": 0,
                               "eval_size": 64}
    base.update(overrides)
    return MetaConfig(**base)  # type: ignore[arg-type]


def test_meta_training_lowers_the_meta_loss(tmp_path: Path) -> None:
    config = tiny()
    m = meta_train(config, RunDir(tmp_path / "run", config_dict(config)), progress=False)
    losses = [h["meta_loss"] for h in m["history"]]
    # a fresh optimizer (zero head) leaves the optimizee where it is; a trained one descends
    assert losses[-1] < 0.8 * losses[0], losses
    assert (tmp_path / "run" / "optimizer.pt").is_file()
    assert LSTMRule.load(tmp_path / "run" / "optimizer.pt").config == config.optimizer_config()


def test_resume_continues_bit_for_bit(tmp_path: Path) -> None:
    config = tiny(dataset="synthetic", episodes=3, episode_steps=10, attack="pgd", attack_steps=2)
    meta_train(config, RunDir(tmp_path / "straight", config_dict(config)), progress=False)
    short = tiny(dataset="synthetic", episodes=2, episode_steps=10, attack="pgd", attack_steps=2)
    meta_train(short, RunDir(tmp_path / "resumed", config_dict(short)), progress=False)
    run = RunDir(tmp_path / "resumed", config_dict(config), resume=True, resume_ignore=("episodes",))
    meta_train(config, run, resume=True, progress=False)
    a = LSTMRule.load(tmp_path / "straight" / "optimizer.pt").state_dict()
    b = LSTMRule.load(tmp_path / "resumed" / "optimizer.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eps_warmup_ramps_from_zero() -> None:
    config = tiny(eps=0.3, eps_warmup=3)
    assert [round(build_train_attack(config, e).eps, 6) for e in range(5)] == [0.0, 0.1, 0.2, 0.3, 0.3]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"eps": 1.5}, "--eps must lie in [0, 1]"),
    ({"eps": -0.1}, "--eps must lie in [0, 1]"),
    ({"attack": "cw"}, "--attack must be one of"),
    ({"gradient": "both"}, "--gradient must be one of"),
    ({"episode_steps": 7}, "multiple of --unroll"),
    ({"model": "resnet-9000"}, "unknown model"),
    ({"hidden_size": 0}, "invalid learned-optimizer configuration"),
])
def test_bad_configuration_is_one_line_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(L2LError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        tiny(**overrides).validate()
    assert "\n" not in str(info.value)


def test_train_size_larger_than_the_data_set(tmp_path: Path) -> None:
    config = tiny(dataset="synthetic", train_size=10_000)
    with pytest.raises(L2LError, match="--train-size 10000 is out of range: synthetic has 512"):
        meta_train(config, RunDir(tmp_path / "run", config_dict(config)), progress=False)


def test_optimizee_above_the_parameter_limit(tmp_path: Path) -> None:
    config = tiny(dataset="synthetic", max_params=1000)
    with pytest.raises(L2LError, match="above the learned optimizer's limit of 1,000"):
        meta_train(config, RunDir(tmp_path / "run", config_dict(config)), progress=False)
