"""The expert data of ``l2l expert collect`` and ``l2l expert show``: roll out an expert into
demonstrations, pick the expert to roll out, and verify every shipped file.

The demonstrations file, its manifest and the checks that make the loader refuse a bad file are
:mod:`l2l_gail.gail.demos`; this module produces the files (:func:`collect`) and reports on all of
them (:func:`status_table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l2l_gail.errors import L2LError
from l2l_gail.gail.demos import (
    EXPERT_DATA_DIR,
    FLAG_KEYS,
    FLOAT_KEYS,
    MANIFEST,
    Demos,
    policy_path,
    read_demos,
    read_manifest,
    refuse_overwrite,
    sha256_file,
    write_demos,
)
from l2l_gail.gail.tasks import TaskSpec, load_task, task_names


@dataclass(frozen=True)
class DemoStatus:
    """The verification result of one manifest entry (see :func:`verify_all`)."""

    task: str
    entry: dict[str, Any]
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


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
