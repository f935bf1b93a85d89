"""`l2l gail train` end to end on InvertedPendulum with a tiny budget.

Each run is 3 rounds of 2 envs x 128 PPO steps, evaluated (1 episode) and checkpointed every
512 steps; the three methods, the learned policy optimizer, and exact resume.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from l2l_gail.cli import main
from l2l_gail.core import LSTMRule, MLPRule, MLPRuleConfig, rule_type
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.factory import prepare
from l2l_gail.gail.loop import train
from l2l_gail.gail.phi_init import adam_clone
from l2l_gail.runs import RunDir

TASK = "inverted-pendulum"
TINY = ["--timesteps", "768", "--eval-every", "512", "--eval-episodes", "1", "--n-envs", "2",
        "--ppo", "n_steps=128", "--ppo", "batch_size=64", "--demo-batch-size", "64",
        "--gen-replay-buffer-capacity", "256", "--n-disc-updates-per-round", "2", "--no-progress"]
COMMON_TAGS = {"eval/return", "eval/normalized_return", "disc/disc_loss", "disc/disc_acc_expert",
               "disc/disc_acc_gen", "disc/logit_expert", "disc/logit_gen", "disc/update_norm",
               "reward/mean", "reward/std", "time/env_steps_per_second"}


def scalar_tags(run: Path) -> set[str]:
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return set(events.Tags()["scalars"])


def scalar_series(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar of a run but the timings, as (step, value) pairs."""
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"] if "time/" not in tag}


def policy_weights(run: Path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(run / "policy.zip") as archive:
        return torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=True)


@pytest.mark.parametrize(("method", "options", "extra_tags"), [
    ("gail", [], set()),
    ("gail-gp", [], {"disc/grad_penalty"}),
    ("l2l-gail", [], {"l2l/meta_loss", "l2l/update_norm"}),
    ("l2l-gail", ["--l2l-objective", "heldout-gp", "--l2l-max-step", "2", "--l2l-meta-every", "2"],
     {"l2l/meta_loss", "l2l/update_norm"}),
])
def test_methods_train_and_log(method: str, options: list[str], extra_tags: set[str], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gail", "train", "--task", TASK, "--method", method, "--experiment", "smoke",
                 "--runs-dir", str(tmp_path), *options, *TINY]) == 0
    run = tmp_path / "gail" / "smoke" / method / "seed0"
    out = capsys.readouterr().out
    assert f"tensorboard --logdir {tmp_path / 'gail' / 'smoke'}" in out
    assert scalar_tags(run) >= COMMON_TAGS | extra_tags
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000512.pt",
                                                                       "step_000000768.pt"]
    for name in ("config.yaml", "metrics.json", "policy.zip", "discriminator.pt"):
        assert (run / name).is_file()
    assert (run / "phi_discriminator.pt").is_file() == (method == "l2l-gail")
    state = torch.load(run / "checkpoints" / "step_000000768.pt", weights_only=False)
    assert {"policy", "policy_optimizer", "discriminator", "disc_optimizer", "replay_buffer",
            "rng"} <= set(state["trainer"])


def test_l2l_gail_trains_phi(tmp_path: Path) -> None:
    """phi moves away from its Adam-clone start, for the discriminator and the policy."""
    assert main(["gail", "train", "--task", TASK, "--method", "l2l-gail", "--l2l-target", "both",
                 "--experiment", "phi", "--runs-dir", str(tmp_path), "--l2l-meta-lr", "1e-2",
                 *TINY]) == 0
    run = tmp_path / "gail" / "phi" / "l2l-gail-both" / "seed0"
    start = adam_clone()[0].state_dict()
    for target in ("discriminator", "policy"):
        trained = LSTMRule.load(run / f"phi_{target}.pt").state_dict()
        moved = max(float((trained[k] - start[k]).abs().max()) for k in start)
        assert moved > 1e-3, target  # seeds 0-9 x the 3 ISA settings: 0.060 (discr.), 0.63-0.71 (policy)
    assert {"gen/train/l2l_meta_loss", "l2l/meta_loss"} <= scalar_tags(run)


def test_l2l_gail_trains_an_mlp_rule_phi(tmp_path: Path) -> None:
    """--l2l-rule mlp: phi starts as the MLP rule's exact Adam clone and moves away from it."""
    assert main(["gail", "train", "--task", TASK, "--method", "l2l-gail", "--l2l-target", "both",
                 "--l2l-rule", "mlp", "--experiment", "phi", "--runs-dir", str(tmp_path),
                 "--l2l-meta-lr", "1e-2", *TINY]) == 0
    run = tmp_path / "gail" / "phi" / "l2l-gail-both" / "seed0"
    start = MLPRule.adam_clone(MLPRuleConfig(step_mult=1.0)).state_dict()
    for target in ("discriminator", "policy"):
        trained = MLPRule.load(run / f"phi_{target}.pt").state_dict()
        assert max(float((trained[k] - start[k]).abs().max()) for k in start) > 0, target


def test_l2l_init_loads_phi(tmp_path: Path) -> None:
    phi = tmp_path / "phi.pt"
    adam_clone()[0].save(phi)
    assert main(["gail", "train", "--task", TASK, "--method", "l2l-gail", "--l2l-init", str(phi),
                 "--l2l-meta-lr", "0", "--experiment", "init", "--runs-dir", str(tmp_path), *TINY]) == 0
    trained = LSTMRule.load(tmp_path / "gail" / "init" / "l2l-gail" / "seed0" / "phi_discriminator.pt")
    assert all(torch.equal(v, adam_clone()[0].state_dict()[k]) for k, v in trained.state_dict().items())


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(("method", "target", "rule", "harness"), [
    ("gail-gp", "discriminator", "lstm", False), ("l2l-gail", "both", "lstm", False),
    ("l2l-gail", "both", "mlp", False), ("gail", "discriminator", "lstm", True)])
def test_resume_reproduces_an_uninterrupted_run(method: str, target: str, rule: str, harness: bool,
                                                tmp_path: Path) -> None:
    """... with the harness's observation normalisation (whose statistics the checkpoint must
    hold) and fixed horizon too."""
    torch.set_num_threads(1)
    config = GAILConfig(task=TASK, method=method, l2l_target=target, l2l_rule=rule, seed=3, timesteps=768,
                        eval_every=256, eval_episodes=1, n_envs=2, demo_batch_size=64,
                        gen_replay_buffer_capacity=256, n_disc_updates_per_round=2,
                        ppo={"n_steps": 128, "batch_size": 64}, obs_norm=harness, fixed_horizon=harness)
    prepared = prepare(config)
    whole = train(prepared, RunDir(tmp_path / "whole", dataclasses.asdict(prepared.config)),
                  progress=False)

    def stop(step: int) -> None:
        if step == 512:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(prepared, RunDir(tmp_path / "cut", dataclasses.asdict(prepared.config)), progress=False,
              on_checkpoint=stop)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    # Resume from the older checkpoint, so that TensorBoard must drop what the interrupted run
    # logged after it (step 512); for one method that checkpoint is from before tb_step was recorded.
    checkpoints = RunDir(tmp_path / "cut", dataclasses.asdict(prepared.config), resume=True).checkpoints()
    assert [p.name for p in checkpoints] == ["step_000000256.pt", "step_000000512.pt"]
    checkpoints[-1].unlink()
    if method == "gail-gp":
        state = torch.load(checkpoints[0], weights_only=True)
        assert state.pop("tb_step") == 257
        torch.save(state, checkpoints[0])
    if harness:  # the running statistics have moved, and the checkpoint holds them
        policy = torch.load(checkpoints[0], weights_only=True)["trainer"]["policy"]
        assert int(policy["features_extractor.normalize.count"]) > 0
        assert not torch.equal(policy["features_extractor.normalize.running_mean"], torch.zeros(4))
    resumed = train(prepared, RunDir(tmp_path / "cut", dataclasses.asdict(prepared.config), resume=True),
                    resume=True, progress=False)
    assert resumed["history"] == whole["history"]
    assert scalar_series(tmp_path / "cut") == scalar_series(tmp_path / "whole")
    for a, b in ((policy_weights(tmp_path / "whole"), policy_weights(tmp_path / "cut")),
                 (torch.load(tmp_path / "whole" / "discriminator.pt"),
                  torch.load(tmp_path / "cut" / "discriminator.pt"))):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ("features_extractor.normalize.running_var" in policy_weights(tmp_path / "cut")) == harness
    if method == "l2l-gail":
        for target_name in ("discriminator", "policy"):
            a = rule_type(rule).load(tmp_path / "whole" / f"phi_{target_name}.pt").state_dict()
            b = rule_type(rule).load(tmp_path / "cut" / f"phi_{target_name}.pt").state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a)
