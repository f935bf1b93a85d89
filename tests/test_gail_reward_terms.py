"""scripts/gail_reward_terms.py: a GAIL generator's true return, split into the reward's terms."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from l2l_gail.errors import L2LError
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.demos import read_manifest
from l2l_gail.gail.factory import prepare
from l2l_gail.gail.loop import train
from l2l_gail.runs import RunDir

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gail_reward_terms.py"
spec = importlib.util.spec_from_file_location("gail_reward_terms", SCRIPT)
terms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(terms)


def test_a_steps_reward_splits_into_the_environments_own_terms():
    env = gym.make("Hopper-v4")
    env.reset(seed=0)
    action = np.array([0.5, -0.5, 1.0])
    _, reward, _, _, info = env.step(action)
    parts = terms.split_step(env, action, float(reward))
    # Hopper-v4: reward = x_velocity (forward weight 1) + healthy_reward (1) - 1e-3 * |a|^2
    assert parts["healthy"] == 1.0 and parts["control"] == pytest.approx(-1e-3 * 1.5)
    assert parts["forward"] == pytest.approx(info["x_velocity"])
    pendulum = gym.make("InvertedPendulum-v4")  # no healthy bonus, no control cost: all is "forward"
    parts = terms.split_step(pendulum, np.zeros(1), 1.0)
    assert parts == {"healthy": 0.0, "control": 0.0, "forward": 1.0}


def test_runs_and_demonstrations_are_split_and_a_changed_run_is_refused(tmp_path):
    torch.set_num_threads(1)
    prepared = prepare(GAILConfig(task="hopper", timesteps=512, eval_every=512, eval_episodes=1, eval_envs=1,
                                  n_envs=2, demo_batch_size=64, gen_replay_buffer_capacity=256,
                                  n_disc_updates_per_round=1, ppo={"n_steps": 256, "batch_size": 64}))
    run_dir = tmp_path / "exp" / "gail" / "seed0"
    train(prepared, RunDir(run_dir, prepared.config.to_dict()), progress=False)
    out = tmp_path / "terms"
    argv = [str(tmp_path / "exp"), "--methods", "gail,absent", "--episodes", "2", "--output", str(out)]
    assert terms.main(argv) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    episodes = result["methods"]["gail"]["episodes"][0]
    assert len(episodes) == 2 and "absent" not in result["methods"]
    for e in episodes:
        assert e["return"] == pytest.approx(e["healthy"] + e["control"] + e["forward"])
        assert e["healthy"] == pytest.approx(e["length"])  # Hopper-v4 pays it on the last step too
        assert e["control"] <= 0 and 0 <= e["mean_abs_action"] <= 1
    shipped, refs = read_manifest()["tasks"]["hopper"], result["references"]
    assert refs["expert demonstrations (deterministic)"]["return"] == pytest.approx(shipped["mean_return"])
    stochastic = shipped["stochastic"]["mean_return"]
    assert refs["expert demonstrations (stochastic)"]["return"] == pytest.approx(stochastic)
    assert refs["zero action"]["control"] == 0 and refs["zero action"]["mean_abs_action"] == 0
    table = out.with_suffix(".md").read_text()
    assert "| gail | 1 |" in table and "| expert demonstrations (deterministic) | - | 3379 | 1.00 |" in table
    with pytest.raises(L2LError, match="exists: pass --force"):
        terms.main(argv)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("disc_lr: 0.0003", "disc_lr: 0.001"))
    with pytest.raises(L2LError, match="differs from the configuration its checkpoint"):
        terms.main([*argv, "--force"])
