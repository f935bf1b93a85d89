"""Demonstration files: round trip, one-line errors for damaged files, and the shipped data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from imitation.data.types import TrajectoryWithRew

from l2l_gail.errors import L2LError
from l2l_gail.gail import demos as D
from l2l_gail.gail import expert_data
from l2l_gail.gail.tasks import load_task

TASK = "inverted-pendulum"  # observation (4,), action (1,) in [-3, 3]
LENGTHS = (5, 7, 3)
FIX = f"l2l expert collect --task {TASK}"


def make_demos(lengths: tuple[int, ...] = LENGTHS, seed: int = 0) -> D.Demos:
    """Consistent synthetic demonstrations: each episode is a chain obs -> next_obs."""
    rng = np.random.default_rng(seed)
    obs, nxt, flags_t, flags_tr = [], [], [], []
    for i, n in enumerate(lengths):
        chain = rng.normal(size=(n + 1, 4)).astype(np.float32)
        obs.append(chain[:-1])
        nxt.append(chain[1:])
        last = np.zeros(n, dtype=bool)
        last[-1] = True
        flags_t.append(last if i % 2 else np.zeros(n, dtype=bool))
        flags_tr.append(np.zeros(n, dtype=bool) if i % 2 else last)
    total = sum(lengths)
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    return D.Demos(
        obs=np.concatenate(obs), acts=rng.uniform(-3, 3, size=(total, 1)).astype(np.float32),
        next_obs=np.concatenate(nxt), rews=rng.normal(size=total).astype(np.float32),
        terminals=np.concatenate(flags_t), truncations=np.concatenate(flags_tr),
        episode_starts=np.concatenate([[0], np.cumsum(lengths_arr)[:-1]]).astype(np.int64),
        episode_lengths=lengths_arr,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A tmp data dir holding the synthetic demonstrations and their manifest entry."""
    D.write_demos(load_task(TASK), make_demos(), tmp_path, seed=3)
    return tmp_path


def rewrite(data_dir: Path, demos: D.Demos | None = None, raw: bytes | None = None) -> Path:
    """Replace the npz (by arrays or raw bytes) and re-sign it in the manifest, so that the
    loader gets past the sha256 check and must catch the damage itself."""
    path = D.demo_path(TASK, data_dir)
    if demos is not None:
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **demos.arrays())
    if raw is not None:
        path.write_bytes(raw)
    manifest = json.loads((data_dir / D.MANIFEST).read_text())
    manifest["tasks"][TASK]["sha256"] = D.sha256_file(path)
    (data_dir / D.MANIFEST).write_text(json.dumps(manifest))
    return path


def load_error(data_dir: Path) -> str:
    """The loader's message; it must be one line naming the file and the fix."""
    with pytest.raises(L2LError) as info:
        D.load_demos(TASK, data_dir)
    message = str(info.value)
    assert "\n" not in message
    assert str(D.demo_path(TASK, data_dir)) in message or str(data_dir) in message
    assert FIX in message
    return message


def test_round_trip(data_dir: Path) -> None:
    original = make_demos()
    trajectories = D.load_demos(TASK, data_dir)
    assert [len(t) for t in trajectories] == list(LENGTHS)
    start = 0
    for traj, n in zip(trajectories, LENGTHS, strict=True):
        assert isinstance(traj, TrajectoryWithRew) and traj.terminal and traj.infos is None
        sl = slice(start, start + n)
        np.testing.assert_array_equal(traj.obs[:-1], original.obs[sl])
        np.testing.assert_array_equal(traj.obs[-1], original.next_obs[start + n - 1])
        np.testing.assert_array_equal(traj.acts, original.acts[sl])
        np.testing.assert_array_equal(traj.rews, original.rews[sl])
        assert traj.obs.dtype == traj.acts.dtype == traj.rews.dtype == np.float32
        start += n
    assert [len(t) for t in D.load_demos(TASK, data_dir, n_episodes=2)] == list(LENGTHS[:2])
    read = D.read_demos(TASK, data_dir)
    np.testing.assert_array_equal(read.terminals, original.terminals)
    np.testing.assert_array_equal(read.truncations, original.truncations)


def test_manifest_entry(data_dir: Path) -> None:
    entry = D.read_manifest(data_dir)["tasks"][TASK]
    returns = [float(make_demos().rews[s:s + n].astype(np.float64).sum())
               for s, n in zip((0, 5, 12), LENGTHS, strict=True)]
    assert entry["file"] == f"{TASK}.npz" and entry["env_id"] == "InvertedPendulum-v4"
    assert entry["sha256"] == D.sha256_file(D.demo_path(TASK, data_dir))
    assert (entry["episodes"], entry["transitions"], entry["seed"]) == (3, 15, 3)
    assert entry["mean_return"] == pytest.approx(np.mean(returns))
    assert entry["std_return"] == pytest.approx(np.std(returns))
    assert entry["random_return"] == load_task(TASK).random_return
    assert entry["expert_threshold"] == 1000.0 and entry["expert_algo"] == "ppo"
    assert set(entry["versions"]) == set(D.VERSIONED)


def test_too_many_episodes_requested(data_dir: Path) -> None:
    with pytest.raises(L2LError, match=r"asked for 4 demonstration episodes.*holds 3"):
        D.load_demos(TASK, data_dir, n_episodes=4)


def test_flipped_byte(data_dir: Path) -> None:
    path = D.demo_path(TASK, data_dir)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    message = load_error(data_dir)
    assert "sha256 does not match" in message and "--force" in message


def test_flipped_byte_with_matching_sha_is_still_caught(data_dir: Path) -> None:
    """Damage inside the compressed stream (CRC / zlib) must not surface as a numpy trace."""
    path = D.demo_path(TASK, data_dir)
    raw = bytearray(path.read_bytes())
    raw[200] ^= 0xFF  # inside the first member's compressed data
    rewrite(data_dir, raw=bytes(raw))
    assert "not a readable demonstrations archive" in load_error(data_dir)


def test_truncated_file(data_dir: Path) -> None:
    path = D.demo_path(TASK, data_dir)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    assert "sha256 does not match" in load_error(data_dir)
    rewrite(data_dir, raw=raw[: len(raw) // 2])
    assert "not a readable demonstrations archive" in load_error(data_dir)


def test_empty_file(data_dir: Path) -> None:
    rewrite(data_dir, raw=b"")
    assert "not a readable demonstrations archive" in load_error(data_dir)


def test_wrong_shape(data_dir: Path) -> None:
    good = make_demos()
    rewrite(data_dir, replace(good, obs=np.zeros((15, 5), np.float32),
                              next_obs=np.zeros((15, 5), np.float32)))
    message = load_error(data_dir)
    assert "'obs' has shape (15, 5), expected (15, 4) for InvertedPendulum-v4" in message


def test_wrong_action_shape(data_dir: Path) -> None:
    rewrite(data_dir, replace(make_demos(), acts=np.zeros((15, 2), np.float32)))
    assert "'acts' has shape (15, 2), expected (15, 1)" in load_error(data_dir)


def test_nan(data_dir: Path) -> None:
    good = make_demos()
    obs = good.obs.copy()
    obs[6, 2] = np.nan
    rewrite(data_dir, replace(good, obs=obs))
    assert "'obs' contains NaN or inf" in load_error(data_dir)


def test_wrong_dtype(data_dir: Path) -> None:
    good = make_demos()
    rewrite(data_dir, replace(good, rews=good.rews.astype(np.float64)))
    assert "'rews' has dtype float64, expected float32" in load_error(data_dir)


def test_missing_array(data_dir: Path) -> None:
    arrays = make_demos().arrays()
    del arrays["truncations"]
    with open(D.demo_path(TASK, data_dir), "wb") as fh:
        np.savez_compressed(fh, **arrays)
    rewrite(data_dir)
    assert "missing array(s) truncations" in load_error(data_dir)


def test_action_outside_space(data_dir: Path) -> None:
    good = make_demos()
    acts = good.acts.copy()
    acts[0, 0] = 4.0
    rewrite(data_dir, replace(good, acts=acts))
    assert "outside InvertedPendulum-v4's action space" in load_error(data_dir)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: replace(d, episode_lengths=np.array([5, 6, 3])), "do not tile"),
    (lambda d: replace(d, episode_starts=np.array([0, 5])), "2 episode_starts but 3"),
    (lambda d: replace(d, truncations=np.zeros(15, bool), terminals=np.zeros(15, bool)),
     "ends without a terminal or truncation flag"),
    (lambda d: replace(d, terminals=d.terminals | (np.arange(15) == 2)), "inside an episode"),
    (lambda d: replace(d, next_obs=np.roll(d.next_obs, 1, axis=0)), "'next_obs' does not match"),
    (lambda d: replace(d, episode_starts=d.episode_starts.astype(np.float32)),
     "'episode_starts' must be a 1-d integer array"),
])
def test_inconsistent_episode_boundaries(data_dir: Path, change, expected: str) -> None:
    rewrite(data_dir, change(make_demos()))
    assert expected in load_error(data_dir)


def test_manifest_mismatches(data_dir: Path) -> None:
    manifest_path = data_dir / D.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    for key, value, expected in [("episodes", 4, "3 episodes but the manifest says 4"),
                                 ("transitions", 16, "15 transitions but the manifest says 16"),
                                 ("mean_return", 123.0, "but the manifest says 123.0"),
                                 ("env_id", "Hopper-v4", "collected on Hopper-v4")]:
        changed = json.loads(json.dumps(manifest))
        changed["tasks"][TASK][key] = value
        manifest_path.write_text(json.dumps(changed))
        assert expected in load_error(data_dir)


def test_missing_entry_or_file(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(L2LError, match=f"no demonstrations for task '{TASK}'.*{FIX}`"):
        D.load_demos(TASK, tmp_path / "empty")
    manifest_path = data_dir / D.MANIFEST
    manifest_path.write_text(json.dumps({"tasks": {}}))
    assert "has no entry in" in load_error(data_dir)
    manifest_path.write_text("{not json")
    with pytest.raises(L2LError, match=r"cannot read .*MANIFEST\.json"):
        D.load_demos(TASK, data_dir)


def test_file_missing_but_listed(data_dir: Path) -> None:
    D.demo_path(TASK, data_dir).unlink()
    message = load_error(data_dir)
    assert "is missing but listed in the manifest" in message and "--force" not in message


def test_write_refuses_collision_and_bad_demos(data_dir: Path) -> None:
    before = D.sha256_file(D.demo_path(TASK, data_dir))
    task = load_task(TASK)
    with pytest.raises(L2LError, match="already exists: pass --force"):
        D.write_demos(task, make_demos(seed=1), data_dir, seed=0)
    assert D.sha256_file(D.demo_path(TASK, data_dir)) == before
    bad = replace(make_demos(), rews=np.full(15, np.nan, np.float32))
    with pytest.raises(L2LError, match="'rews' contains NaN"):
        D.write_demos(task, bad, data_dir, seed=0, force=True)
    assert D.sha256_file(D.demo_path(TASK, data_dir)) == before
    D.write_demos(task, make_demos(lengths=(4, 4), seed=1), data_dir, seed=0, force=True)
    assert [len(t) for t in D.load_demos(TASK, data_dir)] == [4, 4]


def test_verify_all_reports_failures(data_dir: Path) -> None:
    (statuses,) = expert_data.verify_all(data_dir)
    assert statuses.ok and statuses.task == TASK
    D.demo_path(TASK, data_dir).write_bytes(b"garbage")
    (statuses,) = expert_data.verify_all(data_dir)
    assert not statuses.ok and "sha256" in (statuses.error or "")


# ----------------------------------------------------------------------------- shipped data
def test_shipped_demonstrations_verify() -> None:
    statuses = expert_data.verify_all()
    assert TASK in {s.task for s in statuses}, "inverted-pendulum demonstrations must be shipped"
    failures = {s.task: s.error for s in statuses if not s.ok}
    assert not failures
    for status in statuses:
        entry = status.entry
        assert entry["episodes"] >= 50
        assert (D.EXPERT_DATA_DIR / entry["policy"]).is_file()
        assert set(entry["versions"]) == set(D.VERSIONED)


def test_shipped_inverted_pendulum_is_expert() -> None:
    trajectories = D.load_demos(TASK)
    returns = [float(t.rews.sum()) for t in trajectories]
    entry = D.read_manifest()["tasks"][TASK]
    assert len(trajectories) == entry["episodes"]
    assert np.mean(returns) == pytest.approx(entry["mean_return"])
    assert np.mean(returns) >= load_task(TASK).expert["threshold"]
