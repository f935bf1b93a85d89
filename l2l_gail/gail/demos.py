"""Expert demonstrations on disk: the file format, its manifest, and loading it back verified.

GAIL needs expert demonstrations; on machines without internet they cannot come from a hub, so
``l2l expert collect`` rolls out this project's own expert (:mod:`l2l_gail.gail.expert`,
:mod:`l2l_gail.gail.expert_data`) and writes ``expert_data/<task>.npz`` (:func:`write_demos`),
and :func:`load_demos` turns the file back into ``imitation`` trajectories. Every file is
described in ``expert_data/MANIFEST.json`` (sha256, env id, episode count, returns, library
versions, ...), and the loader refuses a file that does not match it, so
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

Two kinds of demonstrations (:data:`~l2l_gail.gail.tasks.DEMO_KINDS`): ``deterministic``
(``<task>.npz``, the expert's mean action, manifest entry ``tasks.<task>``) and ``stochastic``
(``<task>-stochastic.npz``, actions sampled from the expert, entry ``tasks.<task>.stochastic``; its
``actions`` field says how they were sampled). A generator that samples its actions from a
Gaussian can always be told apart from deterministic demonstrations by a discriminator that still
generalises; stochastic ones remove that confound. Both kinds come from the same expert policy,
``policies/<task>.zip``.
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

from l2l_gail.errors import L2LError, first_line
from l2l_gail.gail.tasks import INSTALLED, DemoKind, TaskSpec, load_task, shipped_dir
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


def demo_path(task: str, data_dir: Path = EXPERT_DATA_DIR, kind: DemoKind = "deterministic") -> Path:
    """``<data_dir>/<task>.npz``, or ``<task>-stochastic.npz`` for the stochastic kind."""
    return Path(data_dir) / (f"{task}.npz" if kind == "deterministic" else f"{task}-{kind}.npz")


def manifest_entry(manifest: dict[str, Any], task: str, kind: DemoKind = "deterministic") -> Any:
    """The manifest entry of ``task``'s demonstrations of ``kind`` (None if there is none): the
    stochastic one is nested in the deterministic one, under ``stochastic``."""
    entry = manifest["tasks"].get(task)
    if kind == "deterministic" or not isinstance(entry, dict):
        return entry
    return entry.get(kind)


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


def collect_command(task: str, kind: DemoKind = "deterministic", *options: str) -> str:
    """The ``l2l expert collect`` command that writes ``task``'s demonstrations of ``kind``,
    with ``options`` appended, quoted for an error message."""
    flags = "".join(f" {o}" for o in (("--stochastic",) if kind == "stochastic" else ()) + options)
    return f"`l2l expert collect --task {task}{flags}`"


def _fix(task: str, path: Path, kind: DemoKind = "deterministic") -> str:
    return f"regenerate it with {collect_command(task, kind, *(['--force'] if path.exists() else []))}"


# ----------------------------------------------------------------------------- checks
def check_demos(demos: Demos, task: TaskSpec, source: Path,
                entry: dict[str, Any] | None = None, kind: DemoKind = "deterministic") -> None:
    """Raise :class:`L2LError` unless ``demos`` fit ``task``'s env and are self-consistent.

    Checks dtypes, shapes against the env's observation and action spaces, finiteness, that the
    actions lie in the action space, that the episode boundaries tile the arrays, that episodes
    end (and only end) with a terminal or truncation flag, that each next observation is the
    following observation within an episode, and (given a manifest ``entry``) that the episode
    and transition counts and the mean return match it.
    """

    def bad(what: str) -> L2LError:
        return L2LError(f"{source}: {what}; {_fix(task.name, source, kind)}")

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
def _entry(task: str, data_dir: Path, kind: DemoKind) -> tuple[Path, dict[str, Any]]:
    path = demo_path(task, data_dir, kind)
    entry = manifest_entry(read_manifest(data_dir), task, kind)
    if entry is None:
        if path.exists():
            raise L2LError(f"{path} has no entry in {Path(data_dir) / MANIFEST}; "
                           f"{_fix(task, path, kind)}")
        what = "demonstrations" if kind == "deterministic" else f"{kind} demonstrations"
        raise L2LError(f"no {what} for task {task!r} in {data_dir}; "
                       f"create them with {collect_command(task, kind)}")
    if not isinstance(entry, dict) or entry.get("file") != path.name:
        raise L2LError(f"{Path(data_dir) / MANIFEST}: the {kind} entry of {task!r} must name file "
                       f"{path.name!r}; {_fix(task, path, kind)}")
    if not path.is_file():
        raise L2LError(f"{path} is missing but listed in the manifest; {_fix(task, path, kind)}")
    return path, entry


def read_demos(task: str | TaskSpec, data_dir: Path = EXPERT_DATA_DIR,
               kind: DemoKind = "deterministic") -> Demos:
    """Load ``task``'s demonstrations of ``kind`` (:func:`demo_path`) as flat arrays, after
    checking them against the manifest.

    Raises:
        L2LError: one line naming the file and the command that regenerates it, for a missing
            file or manifest entry, a sha256 mismatch, an unreadable archive, a missing key, or
            any failure of :func:`check_demos`.
    """
    spec = task if isinstance(task, TaskSpec) else load_task(task)
    path, entry = _entry(spec.name, Path(data_dir), kind)
    fix = _fix(spec.name, path, kind)
    if sha256_file(path) != entry.get("sha256"):
        raise L2LError(f"{path}: sha256 does not match {MANIFEST} (corrupted or replaced file); {fix}")
    if entry.get("env_id") != spec.env_id:
        raise L2LError(f"{path} was collected on {entry.get('env_id')} but task {spec.name!r} "
                       f"uses {spec.env_id}; {fix}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError, zlib.error) as exc:
        reason = first_line(exc)
        raise L2LError(f"{path}: not a readable demonstrations archive ({reason}); {fix}") from exc
    missing = [k for k in Demos.__dataclass_fields__ if k not in raw]
    if missing:
        raise L2LError(f"{path}: missing array(s) {', '.join(missing)}; {fix}")
    demos = Demos(**{k: raw[k] for k in Demos.__dataclass_fields__})
    check_demos(demos, spec, path, entry, kind)
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
               n_episodes: int | None = None, kind: DemoKind = "deterministic") -> list[TrajectoryWithRew]:
    """The verified demonstrations of ``task`` as ``imitation`` trajectories.

    Args:
        task: a task name (``envs/<task>.yaml``) or its spec.
        data_dir: where the demonstrations (:func:`demo_path`) and ``MANIFEST.json`` live.
        n_episodes: keep only the first ``n_episodes`` episodes (all by default).
        kind: ``deterministic`` or ``stochastic`` (:data:`~l2l_gail.gail.tasks.DEMO_KINDS`).
    """
    demos = read_demos(task, data_dir, kind)
    trajectories = to_trajectories(demos)
    if n_episodes is not None:
        if not 0 < n_episodes <= len(trajectories):
            name = task if isinstance(task, str) else task.name
            raise L2LError(f"asked for {n_episodes} demonstration episodes of {name!r} but "
                           f"{demo_path(name, data_dir, kind)} holds {len(trajectories)}; ask for "
                           f"between 1 and {len(trajectories)}, or collect more with "
                           f"{collect_command(name, kind, '--episodes N', '--force')}")
        trajectories = trajectories[:n_episodes]
    return trajectories


# ----------------------------------------------------------------------------- writing
def refuse_overwrite(task: str, data_dir: Path = EXPERT_DATA_DIR, kind: DemoKind = "deterministic") -> None:
    """Raise unless ``task``'s demonstrations of ``kind`` are free (callers skip this under
    ``--force``)."""
    path = demo_path(task, data_dir, kind)
    if path.exists():
        raise L2LError(f"{path} already exists: pass --force to overwrite it (and its manifest "
                       "entry and policy)")


def write_demos(task: TaskSpec, demos: Demos, data_dir: Path = EXPERT_DATA_DIR, *,
                seed: int, policy: Path | None = None, expert_timesteps: int | None = None,
                force: bool = False, kind: DemoKind = "deterministic",
                actions: str = "deterministic") -> Path:
    """Check ``demos``, write them (:func:`demo_path`) and the policy copy, and update the manifest.

    ``actions`` says how the actions were chosen (the entry's ``actions`` field). Stochastic
    demonstrations need the task's deterministic ones first and must come from their policy
    (same sha256): both kinds share ``policies/<task>.zip``. Re-collecting the deterministic kind
    keeps the stochastic entry; a new policy then fails its verification, which says to
    re-collect it.

    Every file is written atomically; the manifest is written last, so an interruption leaves
    either the old consistent state or a file the loader rejects by its sha256.
    """
    data_dir = Path(data_dir)
    path = demo_path(task.name, data_dir, kind)
    if not force:
        refuse_overwrite(task.name, data_dir, kind)
    check_demos(demos, task, path, kind=kind)
    manifest = read_manifest(data_dir)
    base = manifest["tasks"].get(task.name)
    if kind != "deterministic":
        if not isinstance(base, dict):
            raise L2LError(f"no deterministic demonstrations of {task.name!r} in {data_dir}: collect "
                           f"them first with {collect_command(task.name)} (both kinds "
                           "share its policy)")
        if policy is None or sha256_file(policy) != base.get("policy_sha256"):
            raise L2LError(f"{policy} is not the expert of the deterministic demonstrations "
                           f"({policy_path(task.name, data_dir)}): pass --policy that file, or "
                           "re-collect the deterministic ones from this policy first")
    atomic_write(path, lambda tmp: _savez(tmp, demos))
    returns = demos.returns()
    entry: dict[str, Any] = {
        "file": path.name, "sha256": sha256_file(path), "env_id": task.env_id, "actions": actions,
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
    if kind == "deterministic":
        if isinstance(base, dict) and "stochastic" in base:
            entry["stochastic"] = base["stochastic"]
        manifest["tasks"][task.name] = entry
    else:
        manifest["tasks"][task.name][kind] = entry
    manifest["tasks"] = dict(sorted(manifest["tasks"].items()))
    write_json(data_dir / MANIFEST, manifest)
    return path


def _savez(tmp: Path, demos: Demos) -> None:
    # np.savez_compressed appends ".npz" to a name without it; write through a handle instead.
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **demos.arrays())
