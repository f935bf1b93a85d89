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
    collect_command,
    manifest_entry,
    policy_path,
    read_demos,
    read_manifest,
    refuse_overwrite,
    sha256_file,
    write_demos,
)
from l2l_gail.gail.tasks import DEMO_KINDS, DemoKind, TaskSpec, load_task, task_names


@dataclass(frozen=True)
class DemoStatus:
    """The verification result of one manifest entry (see :func:`verify_all`)."""

    task: str
    entry: dict[str, Any]
    error: str | None
    kind: DemoKind = "deterministic"

    @property
    def ok(self) -> bool:
        return self.error is None


class ActionSampler:
    """The expert's actions for demonstrations: its mean action, or one sampled from it.

    Sampled means the distribution the expert acts with while it learns. A PPO or SAC policy has
    its own Gaussian (SAC's squashed), drawn by ``predict(deterministic=False)`` from torch's
    RNG, seeded here. A TD3 actor is deterministic: its training actions were the actor's plus
    Gaussian exploration noise of std ``expert.hyperparams.action_noise_std`` in the action space
    scaled to [-1, 1], clipped there (stable-baselines3's ``_sample_action``), and so are these,
    with the noise drawn from ``np.random.default_rng(seed)``.
    """

    def __init__(self, task: TaskSpec, model: Any, *, stochastic: bool, seed: int) -> None:
        import torch
        from stable_baselines3 import TD3

        self.model, self.stochastic, self.noise_std = model, stochastic, None
        self.description = "deterministic"
        if not stochastic:
            return
        if isinstance(model, TD3):
            std = task.expert["hyperparams"].get("action_noise_std")
            if std is None:
                raise L2LError(f"{task.path}: expert.hyperparams has no action_noise_std, the "
                               "exploration noise a TD3 expert's actions are sampled with")
            self.noise_std, self.rng = float(std), np.random.default_rng(seed)
            self.description = (f"sampled: TD3 actor + N(0, {std:g}^2) exploration noise in the "
                                "[-1, 1]-scaled action space, clipped (as in its training)")
        else:
            torch.manual_seed(seed)
            self.description = f"sampled from the {task.expert['algo'].upper()} policy's distribution"

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The action for observation ``obs``, as float32 in the env's action space."""
        action, _ = self.model.predict(obs, deterministic=not self.stochastic)
        if self.noise_std is not None:
            policy = self.model.policy
            scaled = policy.scale_action(action) + self.rng.normal(0.0, self.noise_std, np.shape(action))
            action = policy.unscale_action(np.clip(scaled, -1.0, 1.0))
        return np.asarray(action, dtype=np.float32)


def rollout(task: TaskSpec, act: Any, episodes: int, seed: int) -> Demos:
    """Roll out the policy ``act`` (observation -> float32 action, e.g. an
    :class:`ActionSampler`) for ``episodes`` episodes (episode ``i`` seeded ``seed + i``),
    recording exactly the action that is applied to the env."""
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
                action = act(obs)
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
            data_dir: Path = EXPERT_DATA_DIR, force: bool = False, stochastic: bool = False) -> Path:
    """Roll out the expert saved at ``policy`` and write its demonstrations (:func:`write_demos`):
    its mean actions, or with ``stochastic`` actions sampled from it (:class:`ActionSampler`).

    Returns the path of the written file. Refuses to replace an existing file unless ``force``
    is set; the check runs before the (possibly long) rollout.
    """
    from l2l_gail.gail.expert import load_expert

    kind: DemoKind = "stochastic" if stochastic else "deterministic"
    if not force:
        refuse_overwrite(task.name, data_dir, kind)
    model = load_expert(task, policy)
    sampler = ActionSampler(task, model, stochastic=stochastic, seed=seed)
    demos = rollout(task, sampler, episodes, seed)
    return write_demos(task, demos, data_dir, seed=seed, policy=Path(policy),
                       expert_timesteps=int(model.num_timesteps), force=force, kind=kind,
                       actions=sampler.description)


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


def verify(task: str, data_dir: Path = EXPERT_DATA_DIR, kind: DemoKind = "deterministic") -> dict[str, Any]:
    """Fully check a task's shipped files of ``kind`` (demonstrations and policy); return its
    manifest entry."""
    spec = load_task(task)
    read_demos(spec, data_dir, kind)
    entry = manifest_entry(read_manifest(data_dir), task, kind)
    if "policy" in entry:
        policy = Path(data_dir) / entry["policy"]
        if not policy.is_file() or sha256_file(policy) != entry.get("policy_sha256"):
            raise L2LError(f"{policy}: missing, or its sha256 does not match the {kind} entry of "
                           f"{MANIFEST}; restore it with `git checkout -- {policy}` or re-collect with "
                           f"{collect_command(task, kind, '--policy <expert zip>', '--force')}")
    return entry


def verify_all(data_dir: Path = EXPERT_DATA_DIR) -> list[DemoStatus]:
    """Verify every manifest entry, of every kind; failures are reported, not raised."""
    statuses = []
    manifest = read_manifest(data_dir)
    for task in sorted(manifest["tasks"]):
        for kind in DEMO_KINDS:
            entry = manifest_entry(manifest, task, kind)
            if entry is None:
                continue
            entry = entry if isinstance(entry, dict) else {}
            try:
                verify(task, data_dir, kind)
                statuses.append(DemoStatus(task, entry, None, kind))
            except L2LError as exc:
                statuses.append(DemoStatus(task, entry, str(exc), kind))
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

    One row per task with a spec file or a manifest entry, and one more per task with stochastic
    demonstrations: the kind of actions, the expert (algorithm and training steps), episodes,
    return mean +- std, the expert threshold and random return of the task file, and whether the
    files verify.
    """
    statuses = verify_all(data_dir)
    by_key = {(s.task, s.kind): s for s in statuses}
    header = ("task", "actions", "expert", "episodes", "return (mean +- std)", "threshold", "random",
              "verified")
    rows = [header]
    for task in known_tasks(data_dir):
        try:
            spec = load_task(task)
            threshold, random = f"{spec.expert['threshold']:.0f}", f"{spec.random_return:.2f}"
        except L2LError:
            threshold = random = "?"
        for kind in DEMO_KINDS:
            status = by_key.get((task, kind))
            if status is None:
                if kind == "deterministic":
                    rows.append((task, kind, "-", "-", "-", threshold, random, "not collected"))
                continue
            entry = status.entry
            mean, std = entry.get("mean_return"), entry.get("std_return")
            numeric = all(isinstance(v, int | float) for v in (mean, std))
            ret = f"{mean:.1f} +- {std:.1f}" if numeric else "?"
            rows.append((task, kind, expert_label(entry), str(entry.get("episodes", "?")), ret, threshold,
                         random, "yes" if status.ok else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines), statuses
