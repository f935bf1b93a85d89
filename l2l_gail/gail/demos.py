"""Expert demonstrations: roll out an expert, ship the result, and load it back verified.

GAIL needs expert demonstrations; on machines without internet they cannot come from a hub, so
``l2l expert collect`` rolls out this project's own expert (:mod:`l2l_gail.gail.expert`) and
writes ``expert_data/<task>.npz``, and :func:`load_demos` turns the file back into ``imitation``
trajectories. Every file is described in ``expert_data/MANIFEST.json`` (sha256, env id, episode
count, returns, library versions, ...), and the loader refuses a file that does not match it, so
a truncated download, a bad merge or a file from another environment version fails loudly with
one line that says how to regenerate it, instead of silently training GAIL on garbage.

File layout (``np.savez_compressed``; ``N`` transitions in ``E`` episodes, concatenated):

========================  ===========  ======================================================
key                       dtype        shape / meaning
========================  ===========  ======================================================
``obs``                   float32      ``(N, *obs_shape)`` observation before each action
``acts``                  float32      ``(N, *act_shape)`` the action applied to the env
``next_obs``              float32      ``(N, *obs_shape)`` observation after each action
``rews``                  float32      ``(N,)`` reward
``terminals``             bool         ``(N,)`` the MDP terminated (only at an episode's end)
``truncations``           bool         ``(N,)`` the time limit cut the episode (ditto)
``episode_starts``        int64        ``(E,)`` index of each episode's first transition
``episode_lengths``       int64        ``(E,)`` transitions per episode
========================  ===========  ======================================================
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from imitation.data.types import TrajectoryWithRew

from l2l_gail.errors import L2LError
from l2l_gail.gail.tasks import INSTALLED, TaskSpec, load_task, shipped_dir, task_names
from l2l_gail.runs import atomic_write, write_json

DATA_ENV = "L2L_EXPERT_DATA"
# $L2L_EXPERT_DATA, else the checkout's expert_data/, else the installed copy (tasks.shipped_dir).
EXPERT_DATA_DIR, EXPERT_DATA_SOURCE = shipped_dir("expert_data", DATA_ENV)
MANIFEST = "MANIFEST.json"
POLICIES = "policies"
FLOAT_KEYS = ("obs", "acts", "next_obs", "rews")
FLAG_KEYS = ("terminals", "truncations")
INDEX_KEYS = ("episode_starts", "episode_lengths")
VERSIONED = ("gymnasium", "stable_baselines3", "imitation", "mujoco", "numpy", "torch")


@dataclass(frozen=True)
class Demos:
    """Demonstrations as flat arrays (the on-disk layout described in the module docstring)."""

    obs: np.ndarray
    acts: np.ndarray
    next_obs: np.ndarray
    rews: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    episode_starts: np.ndarray
    episode_lengths: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by file key."""
        return {k: getattr(self, k) for k in FLOAT_KEYS + FLAG_KEYS + INDEX_KEYS}

    def returns(self) -> np.ndarray:
        """Undiscounted return of each episode (summed in float64)."""
        if len(self.episode_starts) == 0:
            return np.zeros(0)
        return np.add.reduceat(self.rews.astype(np.float64), self.episode_starts)

    def episode_slices(self) -> list[slice]:
        """One slice of the flat arrays per episode."""
        return [slice(int(s), int(s + n)) for s, n in zip(self.episode_starts,
                                                           self.episode_lengths, strict=True)]


@dataclass(frozen=True)
class DemoStatus:
    """The verification result of one manifest entry (see :func:`verify_all`)."""

    task: str
    entry: dict[str, Any]
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------- paths & manifest
def writable_data_dir() -> Path:
    """Where ``l2l expert collect`` writes when no ``--data-dir`` is given.

    :data:`EXPERT_DATA_DIR` when it comes from ``$L2L_EXPERT_DATA`` or a source checkout. The copy
    installed with the package (in site-packages) is never written to: a reinstall would silently
    drop what was added, so the user is asked to choose a directory.
    """
    if EXPERT_DATA_SOURCE == INSTALLED:
        raise L2LError(f"the demonstrations installed with the package ({EXPERT_DATA_DIR}) are not "
                       f"written to: pass --data-dir DIR or set {DATA_ENV}=DIR (copy {EXPERT_DATA_DIR} "
                       "there first to keep the shipped tasks)")
    return EXPERT_DATA_DIR


def existing_data_dir(data_dir: Path) -> Path:
    """``data_dir`` if it is a directory, else a one-line error naming where it came from."""
    if not Path(data_dir).is_dir():
        found = f" (from {EXPERT_DATA_SOURCE})" if Path(data_dir) == EXPERT_DATA_DIR else ""
        raise L2LError(f"demonstrations directory {data_dir}{found} does not exist; pass --data-dir "
                       f"DIR or set {DATA_ENV}=DIR")
    return Path(data_dir)


def demo_path(task: str, data_dir: Path = EXPERT_DATA_DIR) -> Path:
    """``<data_dir>/<task>.npz``."""
    return Path(data_dir) / f"{task}.npz"


def policy_path(task: str, data_dir: Path = EXPERT_DATA_DIR) -> Path:
    """``<data_dir>/policies/<task>.zip``: the shipped expert policy."""
    return Path(data_dir) / POLICIES / f"{task}.zip"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(data_dir: Path = EXPERT_DATA_DIR) -> dict[str, Any]:
    """The manifest (``{"tasks": {}}`` when there is none yet)."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return {"tasks": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise L2LError(f"cannot read {path} ({type(exc).__name__}); restore it with `git "
                       f"checkout -- {path}` or delete it and re-run `l2l expert collect`") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tasks"), dict):
        raise L2LError(f"{path} has no 'tasks' mapping; restore it with `git checkout -- {path}`")
    return manifest


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the demonstrations."""
    return {name: metadata.version(name.replace("_", "-")) for name in VERSIONED}


def _fix(task: str, path: Path) -> str:
    force = " --force" if path.exists() else ""
    return f"regenerate it with `l2l expert collect --task {task}{force}`"


# ----------------------------------------------------------------------------- checks
def check_demos(demos: Demos, task: TaskSpec, source: Path,
                entry: dict[str, Any] | None = None) -> None:
    """Raise :class:`L2LError` unless ``demos`` fit ``task``'s env and are self-consistent.

    Checks dtypes, shapes against the env's observation and action spaces, finiteness, that the
    actions lie in the action space, that the episode boundaries tile the arrays, that episodes
    end (and only end) with a terminal or truncation flag, that each next observation is the
    following observation within an episode, and (given a manifest ``entry``) that the episode
    and transition counts and the mean return match it.
    """

    def bad(what: str) -> L2LError:
        return L2LError(f"{source}: {what}; {_fix(task.name, source)}")

    arrays = demos.arrays()
    for key in FLOAT_KEYS:
        if arrays[key].dtype != np.float32:
            raise bad(f"'{key}' has dtype {arrays[key].dtype}, expected float32")
    for key in FLAG_KEYS:
        if arrays[key].dtype != np.bool_:
            raise bad(f"'{key}' has dtype {arrays[key].dtype}, expected bool")
    for key in INDEX_KEYS:
        if arrays[key].dtype.kind not in "iu" or arrays[key].ndim != 1:
            raise bad(f"'{key}' must be a 1-d integer array, got {arrays[key].dtype}"
                      f"{arrays[key].shape}")
    env = task.make_env()
    try:
        obs_shape = tuple(env.observation_space.shape)
        act_space = env.action_space
    finally:
        env.close()
    n = len(demos.rews)
    expected = {"obs": (n, *obs_shape), "next_obs": (n, *obs_shape),
                "acts": (n, *act_space.shape), "rews": (n,), "terminals": (n,),
                "truncations": (n,)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise bad(f"'{key}' has shape {arrays[key].shape}, expected {shape} for {task.env_id}")
    for key in FLOAT_KEYS:
        if not np.all(np.isfinite(arrays[key])):
            raise bad(f"'{key}' contains NaN or inf")
    low, high = act_space.low, act_space.high
    if n and (np.any(demos.acts < low - 1e-5) or np.any(demos.acts > high + 1e-5)):
        raise bad(f"'acts' lie outside {task.env_id}'s action space [{low.min()}, {high.max()}]")
    _check_episodes(demos, bad)
    if entry is not None:
        _check_entry(demos, entry, bad)


def _check_episodes(demos: Demos, bad: Any) -> None:
    starts, lengths = demos.episode_starts, demos.episode_lengths
    n = len(demos.rews)
    if len(starts) != len(lengths):
        raise bad(f"{len(starts)} episode_starts but {len(lengths)} episode_lengths")
    if len(starts) == 0 or n == 0:
        raise bad("no episodes")
    if np.any(lengths <= 0):
        raise bad("an episode has no transitions")
    ends_next = starts + lengths
    if starts[0] != 0 or np.any(starts[1:] != ends_next[:-1]) or ends_next[-1] != n:
        raise bad(f"episode boundaries do not tile the {n} transitions")
    done = demos.terminals | demos.truncations
    ends = starts + lengths - 1
    if not np.all(done[ends]):
        raise bad("an episode ends without a terminal or truncation flag")
    if int(done.sum()) != len(ends):
        raise bad("a terminal or truncation flag lies inside an episode")
    inner = np.ones(n, dtype=bool)
    inner[ends] = False
    if not np.array_equal(demos.next_obs[inner], demos.obs[1:][inner[:-1]]):
        raise bad("'next_obs' does not match the following 'obs' inside an episode")


def _check_entry(demos: Demos, entry: dict[str, Any], bad: Any) -> None:
    episodes, transitions = len(demos.episode_starts), len(demos.rews)
    if entry.get("episodes") != episodes:
        raise bad(f"{episodes} episodes but the manifest says {entry.get('episodes')}")
    if entry.get("transitions") != transitions:
        raise bad(f"{transitions} transitions but the manifest says {entry.get('transitions')}")
    mean = float(np.mean(demos.returns()))
    stated = entry.get("mean_return")
    if not isinstance(stated, int | float) or not np.isclose(mean, stated, rtol=1e-4, atol=1e-3):
        raise bad(f"mean return {mean:.3f} but the manifest says {stated}")


# ----------------------------------------------------------------------------- reading
def _entry(task: str, data_dir: Path) -> tuple[Path, dict[str, Any]]:
    path = demo_path(task, data_dir)
    manifest = read_manifest(data_dir)
    entry = manifest["tasks"].get(task)
    if entry is None:
        if path.exists():
            raise L2LError(f"{path} has no entry in {Path(data_dir) / MANIFEST}; "
                           f"{_fix(task, path)}")
        raise L2LError(f"no demonstrations for task {task!r} in {data_dir}; "
                       f"create them with `l2l expert collect --task {task}`")
    if not isinstance(entry, dict) or entry.get("file") != path.name:
        raise L2LError(f"{Path(data_dir) / MANIFEST}: the entry of {task!r} must name file "
                       f"{path.name!r}; {_fix(task, path)}")
    if not path.is_file():
        raise L2LError(f"{path} is missing but listed in the manifest; {_fix(task, path)}")
    return path, entry


def read_demos(task: str | TaskSpec, data_dir: Path = EXPERT_DATA_DIR) -> Demos:
    """Load ``<data_dir>/<task>.npz`` as flat arrays, after checking it against the manifest.

    Raises:
        L2LError: one line naming the file and the command that regenerates it, for a missing
            file or manifest entry, a sha256 mismatch, an unreadable archive, a missing key, or
            any failure of :func:`check_demos`.
    """
    spec = task if isinstance(task, TaskSpec) else load_task(task)
    path, entry = _entry(spec.name, Path(data_dir))
    if sha256_file(path) != entry.get("sha256"):
        raise L2LError(f"{path}: sha256 does not match {MANIFEST} (corrupted or replaced file); "
                       f"{_fix(spec.name, path)}")
    if entry.get("env_id") != spec.env_id:
        raise L2LError(f"{path} was collected on {entry.get('env_id')} but task {spec.name!r} "
                       f"uses {spec.env_id}; {_fix(spec.name, path)}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError, zlib.error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise L2LError(f"{path}: not a readable demonstrations archive ({reason}); "
                       f"{_fix(spec.name, path)}") from exc
    missing = [k for k in Demos.__dataclass_fields__ if k not in raw]
    if missing:
        raise L2LError(f"{path}: missing array(s) {', '.join(missing)}; {_fix(spec.name, path)}")
    demos = Demos(**{k: raw[k] for k in Demos.__dataclass_fields__})
    check_demos(demos, spec, path, entry)
    return demos


def to_trajectories(demos: Demos) -> list[TrajectoryWithRew]:
    """One ``imitation`` trajectory per episode.

    Each trajectory's ``obs`` holds the episode's observations plus its final next observation.
    ``terminal`` is True for every episode, following ``imitation``'s own rollouts (complete
    episodes are terminal, whether the MDP ended or the time limit cut it); the distinction
    is kept in the file's ``terminals`` / ``truncations`` arrays.
    """
    trajectories = []
    for sl in demos.episode_slices():
        obs = np.concatenate([demos.obs[sl], demos.next_obs[sl][-1:]], axis=0)
        trajectories.append(TrajectoryWithRew(obs=obs, acts=demos.acts[sl], infos=None,
                                               terminal=True, rews=demos.rews[sl]))
    return trajectories


def load_demos(task: str | TaskSpec, data_dir: Path = EXPERT_DATA_DIR,
               n_episodes: int | None = None) -> list[TrajectoryWithRew]:
    """The verified demonstrations of ``task`` as ``imitation`` trajectories.

    Args:
        task: a task name (``envs/<task>.yaml``) or its spec.
        data_dir: where ``<task>.npz`` and ``MANIFEST.json`` live.
        n_episodes: keep only the first ``n_episodes`` episodes (all by default).
    """
    demos = read_demos(task, data_dir)
    trajectories = to_trajectories(demos)
    if n_episodes is not None:
        if not 0 < n_episodes <= len(trajectories):
            name = task if isinstance(task, str) else task.name
            raise L2LError(f"asked for {n_episodes} demonstration episodes of {name!r} but "
                           f"{demo_path(name, data_dir)} holds {len(trajectories)}; ask for "
                           f"between 1 and {len(trajectories)}, or collect more with "
                           f"`l2l expert collect --task {name} --episodes N --force`")
        trajectories = trajectories[:n_episodes]
    return trajectories


def verify(task: str, data_dir: Path = EXPERT_DATA_DIR) -> dict[str, Any]:
    """Fully check a task's shipped files (demonstrations and policy); return its manifest entry."""
    spec = load_task(task)
    read_demos(spec, data_dir)
    entry = read_manifest(data_dir)["tasks"][task]
    if "policy" in entry:
        policy = Path(data_dir) / entry["policy"]
        if not policy.is_file() or sha256_file(policy) != entry.get("policy_sha256"):
            raise L2LError(f"{policy}: missing, or its sha256 does not match {MANIFEST}; "
                           f"restore it with `git checkout -- {policy}` or re-collect with "
                           f"`l2l expert collect --task {task} --policy <expert zip> --force`")
    return entry


def verify_all(data_dir: Path = EXPERT_DATA_DIR) -> list[DemoStatus]:
    """Verify every manifest entry; failures are reported, not raised."""
    statuses = []
    for task, entry in sorted(read_manifest(data_dir)["tasks"].items()):
        try:
            verify(task, data_dir)
            statuses.append(DemoStatus(task, entry if isinstance(entry, dict) else {}, None))
        except L2LError as exc:
            statuses.append(DemoStatus(task, entry if isinstance(entry, dict) else {}, str(exc)))
    return statuses


# ----------------------------------------------------------------------------- writing
def rollout(task: TaskSpec, model: Any, episodes: int, seed: int) -> Demos:
    """Roll out ``model`` deterministically for ``episodes`` episodes (episode ``i`` seeded
    ``seed + i``), recording exactly the (float32) action that is applied to the env."""
    if episodes <= 0:
        raise L2LError(f"--episodes must be positive, got {episodes}")
    env = task.make_env()
    rows: dict[str, list[Any]] = {k: [] for k in FLOAT_KEYS + FLAG_KEYS}
    lengths = []
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            steps, done = 0, False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                action = np.asarray(action, dtype=np.float32)
                next_obs, reward, term, trunc, _ = env.step(action)
                for key, value in zip(FLOAT_KEYS + FLAG_KEYS,
                                      (obs, action, next_obs, reward, term, trunc), strict=True):
                    rows[key].append(value)
                obs, steps, done = next_obs, steps + 1, bool(term or trunc)
            lengths.append(steps)
    finally:
        env.close()
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    return Demos(
        **{k: np.asarray(rows[k], dtype=np.float32) for k in FLOAT_KEYS},
        **{k: np.asarray(rows[k], dtype=bool) for k in FLAG_KEYS},
        episode_starts=np.concatenate([[0], np.cumsum(lengths_arr)[:-1]]).astype(np.int64),
        episode_lengths=lengths_arr,
    )


def refuse_overwrite(task: str, data_dir: Path = EXPERT_DATA_DIR) -> None:
    """Raise unless ``<data_dir>/<task>.npz`` is free (callers skip this under ``--force``)."""
    path = demo_path(task, data_dir)
    if path.exists():
        raise L2LError(f"{path} already exists: pass --force to overwrite it (and its manifest "
                       "entry and policy)")


def write_demos(task: TaskSpec, demos: Demos, data_dir: Path = EXPERT_DATA_DIR, *,
                seed: int, policy: Path | None = None, expert_timesteps: int | None = None,
                force: bool = False) -> Path:
    """Check ``demos``, write ``<task>.npz`` and the policy copy, and update the manifest.

    Every file is written atomically; the manifest is written last, so an interruption leaves
    either the old consistent state or a file the loader rejects by its sha256.
    """
    data_dir = Path(data_dir)
    path = demo_path(task.name, data_dir)
    if not force:
        refuse_overwrite(task.name, data_dir)
    check_demos(demos, task, path)
    manifest = read_manifest(data_dir)
    atomic_write(path, lambda tmp: _savez(tmp, demos))
    returns = demos.returns()
    entry: dict[str, Any] = {
        "file": path.name, "sha256": sha256_file(path), "env_id": task.env_id,
        "episodes": len(demos.episode_starts), "transitions": len(demos.rews),
        "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
        "min_return": float(np.min(returns)), "random_return": task.random_return,
        "expert_threshold": float(task.expert["threshold"]),
        "expert_algo": task.expert["algo"], "expert_timesteps": expert_timesteps,
        "seed": seed, "versions": library_versions(),
    }
    if policy is not None:
        target = policy_path(task.name, data_dir)
        if Path(policy).resolve() != target.resolve():
            atomic_write(target, lambda tmp: shutil.copyfile(policy, tmp))
        entry["policy"] = target.relative_to(data_dir).as_posix()
        entry["policy_sha256"] = sha256_file(target)
    manifest["tasks"][task.name] = entry
    manifest["tasks"] = dict(sorted(manifest["tasks"].items()))
    write_json(data_dir / MANIFEST, manifest)
    return path


def _savez(tmp: Path, demos: Demos) -> None:
    # np.savez_compressed appends ".npz" to a name without it; write through a handle instead.
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **demos.arrays())


def collect(task: TaskSpec, policy: Path, episodes: int, seed: int = 0, *,
            data_dir: Path = EXPERT_DATA_DIR, force: bool = False) -> Path:
    """Roll out the expert saved at ``policy`` and write its demonstrations (:func:`write_demos`).

    Returns the path of the written ``<task>.npz``. Refuses to replace an existing file unless
    ``force`` is set; the check runs before the (possibly long) rollout.
    """
    from l2l_gail.gail.expert import load_expert

    if not force:
        refuse_overwrite(task.name, data_dir)
    model = load_expert(task, policy)
    demos = rollout(task, model, episodes, seed)
    return write_demos(task, demos, data_dir, seed=seed, policy=Path(policy),
                       expert_timesteps=int(model.num_timesteps), force=force)


def default_policy(task: str, runs_dir: Path | None = None,
                   data_dir: Path = EXPERT_DATA_DIR) -> Path:
    """The expert to roll out when no ``--policy`` is given.

    In order: the best model of the expert run ``<runs_dir>/expert/<task>/`` (what
    ``l2l expert train`` keeps), that run's last model (a run too short to evaluate has no best),
    and finally the shipped ``<data_dir>/policies/<task>.zip``, so that a fresh clone can
    regenerate its demonstrations with one command.
    """
    from l2l_gail.gail.expert import BEST_FILE, MODEL_FILE
    from l2l_gail.runs import DEFAULT_ROOT

    ckpts = Path(runs_dir or DEFAULT_ROOT) / "expert" / task / "checkpoints"
    for candidate in (ckpts / BEST_FILE, ckpts / MODEL_FILE, policy_path(task, data_dir)):
        if candidate.is_file():
            return candidate
    raise L2LError(f"no expert policy for {task!r} in {ckpts} or {policy_path(task, data_dir)}: "
                   f"train one with `l2l expert train --task {task}` or pass --policy PATH")


def known_tasks(data_dir: Path = EXPERT_DATA_DIR) -> list[str]:
    """Every task with a spec file or a manifest entry."""
    return sorted(set(task_names()) | set(read_manifest(data_dir)["tasks"]))


def expert_label(entry: dict[str, Any]) -> str:
    """``'TD3 200k'``: a manifest entry's expert algorithm and its training steps."""
    steps = entry.get("expert_timesteps")
    return str(entry.get("expert_algo", "?")).upper() + (
        f" {steps / 1000:g}k" if isinstance(steps, int) else "")


def status_table(data_dir: Path = EXPERT_DATA_DIR) -> tuple[str, list[DemoStatus]]:
    """The text table of ``l2l expert show`` and the verification results behind it.

    One row per task with a spec file or a manifest entry: the expert (algorithm and training
    steps), episodes, return mean +- std, the expert threshold and random return of the task
    file, and whether the files verify.
    """
    statuses = {s.task: s for s in verify_all(data_dir)}
    header = ("task", "expert", "episodes", "return (mean +- std)", "threshold", "random",
              "verified")
    rows = [header]
    for task in known_tasks(data_dir):
        try:
            spec = load_task(task)
            threshold, random = f"{spec.expert['threshold']:.0f}", f"{spec.random_return:.2f}"
        except L2LError:
            threshold = random = "?"
        status = statuses.get(task)
        if status is None:
            rows.append((task, "-", "-", "-", threshold, random, "not collected"))
            continue
        entry = status.entry
        mean, std = entry.get("mean_return"), entry.get("std_return")
        numeric = all(isinstance(v, int | float) for v in (mean, std))
        ret = f"{mean:.1f} +- {std:.1f}" if numeric else "?"
        rows.append((task, expert_label(entry), str(entry.get("episodes", "?")), ret, threshold, random,
                     "yes" if status.ok else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines), list(statuses.values())
