"""The MLP rule wherever the LSTM works (meta train, meta apply, l2l-gail), the meta defaults of
issue 15 (ReLU/Xavier optimizee, sign-symmetric and bounded rules), and resume of runs recorded
before these options existed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from l2l_gail.cli import main
from l2l_gail.core import LSTMRule, MLPRule, MLPRuleConfig, UpdateRule
from l2l_gail.errors import L2LError
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.factory import initial_phi
from l2l_gail.gail.tasks import load_task
from l2l_gail.meta.optimizees import MLP, bytes_per_param, check_servable
from l2l_gail.meta.train import MetaConfig, config_dict, meta_train
from l2l_gail.runs import RunDir

torch.set_num_threads(1)

TINY_META = ["--dataset", "synthetic", "--width", "4", "--batch-size", "16", "--unroll", "2",
             "--episode-steps", "4", "--episodes", "2", "--eps-warmup", "0", "--eval-size", "32",
             "--no-progress"]


def test_mlp_optimizee_is_relu_with_xavier_init() -> None:
    torch.manual_seed(0)
    model = MLP(784, 10, 20)
    assert isinstance(model.net[2], nn.ReLU)
    first, last = model.net[1], model.net[3]
    assert torch.all(first.bias == 0) and torch.all(last.bias == 0)
    bound = math.sqrt(6 / (784 + 20))  # Glorot uniform
    assert float(first.weight.detach().abs().max()) <= bound
    assert float(first.weight.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert isinstance(MLP(784, 10, 20, "sigmoid").net[2], nn.Sigmoid)
    with pytest.raises(L2LError, match="--activation"):
        MLP(784, 10, 20, "tanh")


def test_meta_defaults_and_memory_per_coordinate() -> None:
    config = MetaConfig()
    assert (config.rule, config.activation, config.output_scale) == ("lstm", "relu", 0.01)
    lstm, mlp = config.build_rule(), MetaConfig(rule="mlp").build_rule()
    assert isinstance(lstm, LSTMRule) and isinstance(mlp, MLPRule)
    assert mlp.step_units == "absolute" and mlp.config == MLPRuleConfig()
    assert bytes_per_param(lstm) == 2 * 2 * 20 * 4
    # five momenta and a second moment, float32 (the step counter is per tensor, not per coordinate)
    assert bytes_per_param(mlp) == sum(t.numel() * t.element_size() for t in mlp.init_memory(1))
    with pytest.raises(L2LError, match=r"100 parameters.*memory alone"):
        check_servable(nn.Linear(9, 10), mlp, max_params=50)
    with pytest.raises(L2LError, match="--hidden-size shape"):
        MetaConfig(rule="mlp", hidden_size=8).validate()


def test_config_yaml_of_an_older_run_still_resumes(tmp_path: Path) -> None:
    """A run recorded before --rule, --activation, --max-step and --sign-symmetric existed has no
    such keys: it resumes only with the values it ran with (sigmoid optimizees, LSTM rule)."""
    old = config_dict(MetaConfig(activation="sigmoid", output_scale=0.1))
    assert not {"rule", "activation", "max_step", "sign_symmetric"} & set(old)
    RunDir(tmp_path / "run", old)
    RunDir(tmp_path / "run", config_dict(MetaConfig(activation="sigmoid", output_scale=0.1)), resume=True)
    with pytest.raises(L2LError, match="activation"):
        RunDir(tmp_path / "run", config_dict(MetaConfig(output_scale=0.1)), resume=True)
    assert config_dict(MetaConfig(rule="mlp", sign_symmetric=True))["rule"] == "mlp"


@pytest.mark.parametrize("options", [["--rule", "mlp"], ["--rule", "mlp", "--sign-symmetric"],
                                     ["--sign-symmetric", "--max-step", "0.05"]])
def test_meta_train_then_apply_with_each_rule(options: list[str], tmp_path: Path) -> None:
    assert main(["meta", "train", *TINY_META, *options, "--name", "m", "--runs-dir", str(tmp_path)]) == 0
    path = tmp_path / "meta" / "m" / "optimizer.pt"
    learned = UpdateRule.load(path)
    stored = yaml.safe_load((tmp_path / "meta" / "m" / "config.yaml").read_text())
    assert learned.name == stored.get("rule", "lstm")
    assert learned.config.sign_symmetric == ("--sign-symmetric" in options)
    assert learned.config.max_step == (0.05 if "--max-step" in options else None)
    assert main(["meta", "apply", "--optimizer", str(path), "--dataset", "synthetic", "--epochs", "1",
                 "--batch-size", "32", "--attacks", "", "--eval-subset", "64", "--name", "a",
                 "--runs-dir", str(tmp_path)]) == 0
    metrics = yaml.safe_load((tmp_path / "meta-apply" / "a" / "metrics.json").read_text())
    assert metrics["rule"] == learned.name
    assert learned.config_type(**metrics["optimizer_config"]) == learned.config
    assert math.isfinite(metrics["final_train_loss"])


def test_meta_trained_mlp_rule_moves_phi_and_resumes(tmp_path: Path) -> None:
    config = MetaConfig(dataset="synthetic", width=4, batch_size=16, unroll=2, episode_steps=4,
                        episodes=2, eps_warmup=0, eval_size=32, rule="mlp")
    meta_train(config, RunDir(tmp_path / "whole", config_dict(config)), progress=False)
    short = MetaConfig(**{**config.__dict__, "episodes": 1})
    meta_train(short, RunDir(tmp_path / "cut", config_dict(short)), progress=False)
    after_one = MLPRule.load(tmp_path / "cut" / "optimizer-last.pt").state_dict()
    resumed = RunDir(tmp_path / "cut", config_dict(config), resume=True, resume_ignore=("episodes",))
    meta_train(config, resumed, resume=True, progress=False)
    whole = MLPRule.load(tmp_path / "whole" / "optimizer-last.pt").state_dict()
    cut = MLPRule.load(tmp_path / "cut" / "optimizer-last.pt").state_dict()
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    assert any(not torch.equal(whole[k], after_one[k]) for k in whole)  # episode 2 trained phi


def test_gail_rule_choice_initial_phi_and_old_config(tmp_path: Path) -> None:
    task = load_task("inverted-pendulum")
    lstm = GAILConfig(method="l2l-gail").resolved(task)
    mlp = GAILConfig(method="l2l-gail", l2l_rule="mlp", l2l_max_step=2.0).resolved(task)
    assert lstm.l2l_rule == "lstm" and "l2l_rule" not in lstm.to_dict()  # older runs' config.yaml
    assert mlp.to_dict()["l2l_rule"] == "mlp"
    phi = initial_phi(mlp)
    assert isinstance(phi, MLPRule) and phi.step_units == "lr" and phi.config.max_step == 2.0
    clone = MLPRule.adam_clone(MLPRuleConfig(step_mult=1.0, max_step=2.0))
    assert torch.equal(phi.state_dict()["head.weight"], clone.state_dict()["head.weight"])
    assert isinstance(initial_phi(lstm), LSTMRule)
    with pytest.raises(L2LError, match="--l2l-rule"):
        GAILConfig(method="l2l-gail", l2l_rule="gru").resolved(task)
    phi.save(tmp_path / "phi.pt")
    loaded = initial_phi(GAILConfig(method="l2l-gail", l2l_init=str(tmp_path / "phi.pt")).resolved(task))
    assert isinstance(loaded, MLPRule)
