"""The GAIL harness of issue 12: observation normalisation, a fixed horizon, stochastic
demonstrations, the replay buffer's default and the per-task settings, as options of
`l2l gail train` with task-file defaults that older runs resume under."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from l2l_gail.cli import main
from l2l_gail.errors import L2LError
from l2l_gail.gail import demos as D
from l2l_gail.gail.config import OMITTED_AT, GAILConfig, round_steps
from l2l_gail.gail.expert import load_expert
from l2l_gail.gail.expert_data import ActionSampler
from l2l_gail.gail.tasks import load_task, load_task_file

MUJOCO = ("hopper", "halfcheetah", "walker2d", "ant")


# ----------------------------------------------------------------------------- fixed horizon
@pytest.mark.parametrize("task", ["hopper", "inverted-pendulum"])
def test_fixed_horizon_never_terminates_before_the_time_limit(task: str) -> None:
    """A policy that falls at once ends the standard episode early; with a fixed horizon the
    episode runs to the time limit (Hopper: terminate_when_unhealthy=False; InvertedPendulum:
    its termination ignored)."""
    from l2l_gail.gail.factory import make_train_env

    spec = load_task(task)
    probe = spec.make_env()
    limit = probe.spec.max_episode_steps
    # hopper falls with its joints slack, the pendulum under a constant push
    action = np.full(probe.action_space.shape or (), 0.0 if task == "hopper" else 3.0, np.float32)
    probe.close()
    lengths = {}
    for fixed in (False, True):
        env = make_train_env(spec, fixed)
        env.reset(seed=0)
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(action)
            steps += 1
            assert not (fixed and terminated)
        lengths[fixed] = steps
        env.close()
    assert lengths[False] < limit and lengths[True] == limit


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("task", MUJOCO)
def test_task_defaults_are_the_harness(task: str) -> None:
    resolved = GAILConfig(task=task).resolved(load_task(task))
    # chosen on hopper by scripts/grids/gail-harness-hopper.yaml
    assert resolved.obs_norm and not resolved.fixed_horizon and resolved.demos == "stochastic"
    assert resolved.gen_replay_buffer_capacity == resolved.round_steps  # one rollout
    assert resolved.n_envs == 8 and resolved.timesteps == 1_000_000


def test_replay_buffer_default_is_one_rollout() -> None:
    spec = load_task("hopper")
    gail = {k: v for k, v in spec.gail.items() if k != "gen_replay_buffer_capacity"}
    resolved = GAILConfig(task="hopper", n_envs=3).resolved(dataclasses.replace(spec, gail=gail))
    assert resolved.gen_replay_buffer_capacity == round_steps(3, spec.gail["ppo"]) == 3 * 256


def test_options_override_the_task_file() -> None:
    resolved = GAILConfig(task="hopper", obs_norm=False, fixed_horizon=False, demos="deterministic",
                          gen_replay_buffer_capacity=16384).resolved(load_task("hopper"))
    assert (resolved.obs_norm, resolved.fixed_horizon, resolved.demos) == (False, False, "deterministic")
    assert resolved.gen_replay_buffer_capacity == 16384


def test_an_older_run_still_resumes() -> None:
    """A task file without the harness's keys resolves to the behaviour before them, and
    config.yaml leaves those values out, as an older run's file does."""
    resolved = GAILConfig(task="inverted-pendulum").resolved(load_task("inverted-pendulum"))
    assert (resolved.obs_norm, resolved.fixed_horizon, resolved.demos) == (False, False, "deterministic")
    assert not set(OMITTED_AT) & set(resolved.to_dict())
    on = GAILConfig(task="inverted-pendulum", obs_norm=True).resolved(load_task("inverted-pendulum"))
    assert on.to_dict()["obs_norm"] is True
    assert resolved.gen_norm_disc_batches  # imitation's behaviour, which every earlier run had
    off = GAILConfig(task="inverted-pendulum", gen_norm_disc_batches=False)
    assert off.resolved(load_task("inverted-pendulum")).to_dict()["gen_norm_disc_batches"] is False


@pytest.mark.parametrize(("change", "fragment"), [
    ({"demos": "noisy"}, "unknown --demos 'noisy'; choose one of deterministic, stochastic"),
    ({"obs_norm": "yes"}, "--obs-norm must be true or false"),
    ({"gen_norm_disc_batches": 1}, "--gen-norm-disc-batches must be true or false"),
    ({"ppo": {"activation_fn": "gelu"}}, "activation_fn 'gelu'"),
])
def test_bad_harness_options(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(L2LError, match=re.escape(fragment)):
        GAILConfig(task="hopper", **change).resolved(load_task("hopper"))


def test_task_file_flags_are_checked(tmp_path: Path) -> None:
    data = yaml.safe_load(load_task("hopper").path.read_text())
    data["gail"]["fixed_horizon"] = "yes"
    path = tmp_path / "hopper.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(L2LError, match=re.escape("'gail.fixed_horizon' must be bool")):
        load_task_file(path)


def test_help_names_the_options_and_their_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["gail", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--obs-norm, --no-obs-norm", "--fixed-horizon, --no-fixed-horizon",
                   "--demos {deterministic,stochastic}"):
        assert option in text
    for key in ("gail.obs_norm", "gail.fixed_horizon", "gail.demos"):
        assert f"(default: the task file's {key}, else" in text
    assert "evaluated on the task's true reward in its standard environment" in text


def test_policy_kwargs() -> None:
    from imitation.policies.base import NormalizeFeaturesExtractor
    from torch import nn

    from l2l_gail.gail.factory import policy_kwargs

    hopper = policy_kwargs(GAILConfig(task="hopper").resolved(load_task("hopper")))
    assert hopper["features_extractor_class"] is NormalizeFeaturesExtractor
    assert hopper["activation_fn"] is nn.Tanh and hopper["net_arch"] == [64, 64]
    relu = GAILConfig(task="hopper", ppo={"activation_fn": "relu"}).resolved(load_task("hopper"))
    assert policy_kwargs(relu)["activation_fn"] is nn.ReLU
    plain = policy_kwargs(GAILConfig(task="hopper", obs_norm=False).resolved(load_task("hopper")))
    assert "features_extractor_class" not in plain
    pendulum = GAILConfig(task="inverted-pendulum").resolved(load_task("inverted-pendulum"))
    assert "activation_fn" not in policy_kwargs(pendulum)  # not in its task file: SB3's default


# ----------------------------------------------------------------------------- demonstrations
@pytest.mark.parametrize("task", MUJOCO)
def test_shipped_stochastic_demonstrations(task: str) -> None:
    """Both kinds are shipped, verify, start from the same initial states (same seeds) and
    differ in their actions."""
    det, sto = D.read_demos(task), D.read_demos(task, kind="stochastic")
    entry = D.manifest_entry(D.read_manifest(), task, "stochastic")
    assert entry["actions"].startswith("sampled: TD3 actor + N(0, 0.1^2)")
    assert entry["policy_sha256"] == D.read_manifest()["tasks"][task]["policy_sha256"]
    np.testing.assert_array_equal(det.obs[det.episode_starts], sto.obs[sto.episode_starts])
    assert not np.array_equal(det.acts[:100], sto.acts[:100])


def test_td3_actions_are_sampled_with_its_training_noise() -> None:
    task = load_task("hopper")
    model = load_expert(task, D.policy_path("hopper"))
    obs = D.read_demos("hopper").obs[:200]
    mean = np.stack([ActionSampler(task, model, stochastic=False, seed=0)(o) for o in obs])
    sampler = ActionSampler(task, model, stochastic=True, seed=0)
    sampled = np.stack([sampler(o) for o in obs])
    again = ActionSampler(task, model, stochastic=True, seed=0)
    np.testing.assert_array_equal(sampled, np.stack([again(o) for o in obs]))  # seeded
    noise = (sampled - mean)[np.abs(mean) < 0.7]  # coordinates the [-1, 1] clip cannot touch
    # N(0, 0.1^2) (hopper's actions are in [-1, 1]): the std of >= 200 draws is 0.1 +- 0.005
    assert len(noise) >= 200 and 0.08 < noise.std() < 0.12


def test_gail_loads_the_chosen_demonstrations() -> None:
    from l2l_gail.gail.factory import prepare

    det = prepare(GAILConfig(task="hopper", demos="deterministic"))
    sto = prepare(GAILConfig(task="hopper"))
    assert sto.config.demos == "stochastic"
    assert not np.array_equal(det.demonstrations.acts[:100], sto.demonstrations.acts[:100])
    # scores are normalised by the deterministic expert either way
    assert det.expert_return == sto.expert_return == D.read_manifest()["tasks"]["hopper"]["mean_return"]


def test_missing_stochastic_demonstrations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(D.demo_path("hopper"), D.demo_path("hopper", data))
    manifest = D.read_manifest()
    entry = {k: v for k, v in manifest["tasks"]["hopper"].items() if k != "stochastic"}
    (data / D.MANIFEST).write_text(json.dumps({"tasks": {"hopper": entry}}))
    assert main(["gail", "train", "--task", "hopper", "--method", "gail", "--data-dir", str(data),
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no stochastic demonstrations for task 'hopper'" in err
    assert "l2l expert collect --task hopper --stochastic" in err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- evaluation
def test_evaluation_on_several_environments() -> None:
    """``eval_envs`` environments side by side (stable-baselines3 splits the episodes among
    them): an evaluation repeats exactly, an older run's configuration (no key) means one
    environment, and more environments than episodes is refused."""
    from unittest import mock

    from stable_baselines3 import PPO

    from l2l_gail.errors import L2LError
    from l2l_gail.gail import loop
    from l2l_gail.gail.factory import prepare

    pendulum = GAILConfig(task="inverted-pendulum").resolved(load_task("inverted-pendulum"))
    assert pendulum.eval_envs == 1 and "eval_envs" not in pendulum.to_dict()  # no key in its file
    assert GAILConfig(task="hopper").resolved(load_task("hopper")).to_dict()["eval_envs"] == 10
    with pytest.raises(L2LError, match="--eval-envs 11 is more than --eval-episodes 10"):
        GAILConfig(task="hopper", eval_envs=11).resolved(load_task("hopper"))
    with pytest.raises(L2LError, match="--eval-envs must be a positive integer, got 0"):
        GAILConfig(task="hopper", eval_envs=0).resolved(load_task("hopper"))
    prepared = prepare(GAILConfig(task="inverted-pendulum", eval_episodes=4, eval_envs=2))
    policy = PPO("MlpPolicy", prepared.task.make_env(), seed=0, device="cpu")
    trainer = mock.Mock(gen_algo=policy)
    envs: list[int] = []

    def counting(model: object, env: object, episodes: int) -> tuple[float, float]:
        envs.append(env.num_envs)  # type: ignore[attr-defined]
        return real(model, env, episodes)

    real = loop.evaluate
    with mock.patch.object(loop, "evaluate", counting):
        first, again = loop.evaluate_generator(trainer, prepared), loop.evaluate_generator(trainer, prepared)
    assert envs == [2, 2] and first == again and first[0] > 0
