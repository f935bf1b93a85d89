"""Task specifications: one YAML file per MuJoCo task in ``envs/``.

Each file is the single source of truth for a task: the gymnasium id, how its expert is trained
and the return it must reach, the measured random-policy return (for normalised scores), and the
GAIL hyper-parameters. :func:`load_task` validates a file against :data:`SCHEMA` and names the
offending key on error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from l2l_gail.errors import L2LError

ENVS_DIR = Path(__file__).resolve().parents[2] / "envs"
EXPERT_ALGOS = ("sac", "td3", "ppo")

# key -> type (or nested schema). Keys marked with a trailing "?" are optional.
SCHEMA: dict[str, Any] = {
    "name": str,
    "env_id": str,
    "random_return": float,
    "expert": {
        "algo": str,
        "timesteps": int,
        "threshold": float,
        "eval_every": int,
        "eval_episodes": int,
        "checkpoint_every": int,
        "hyperparams": dict,
    },
    "gail": {
        "timesteps": int,
        "demo_episodes": int,
        "eval_every": int,
        "eval_episodes": int,
        "n_envs": int,
        "demo_batch_size": int,
        "gen_replay_buffer_capacity?": int,
        "n_disc_updates_per_round": int,
        "disc_lr": float,
        "gp_coef": float,
        "ppo": dict,
    },
}


@dataclass(frozen=True)
class TaskSpec:
    """A validated task specification (see ``envs/*.yaml``)."""

    name: str
    env_id: str
    random_return: float
    expert: dict[str, Any]
    gail: dict[str, Any]
    path: Path

    def make_env(self, **kwargs: Any) -> Any:
        """Construct the gymnasium environment."""
        import gymnasium as gym

        return gym.make(self.env_id, **kwargs)


def _check(data: Any, schema: dict[str, Any], where: str, source: Path) -> None:
    if not isinstance(data, dict):
        raise L2LError(f"{source}: {where or 'the file'} must be a mapping; see envs/hopper.yaml")
    allowed = {k.rstrip("?") for k in schema}
    for key in data:
        if key not in allowed:
            raise L2LError(f"{source}: unknown key '{where}{key}'; allowed: {', '.join(sorted(allowed))}")
    for raw, typ in schema.items():
        key = raw.rstrip("?")
        if key not in data:
            if raw.endswith("?"):
                continue
            raise L2LError(f"{source}: missing key '{where}{key}'")
        value = data[key]
        if isinstance(typ, dict):
            _check(value, typ, f"{where}{key}.", source)
            continue
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise L2LError(
                f"{source}: key '{where}{key}' must be {typ.__name__}, got {type(value).__name__} "
                f"({value!r})"
            )


def load_task_file(path: Path) -> TaskSpec:
    """Load and validate one task file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise L2LError(f"cannot read task file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise L2LError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    _check(data, SCHEMA, "", path)
    if data["expert"]["algo"] not in EXPERT_ALGOS:
        raise L2LError(
            f"{path}: key 'expert.algo' must be one of {', '.join(EXPERT_ALGOS)}, "
            f"got {data['expert']['algo']!r}"
        )
    for key in ("timesteps", "eval_every", "eval_episodes", "checkpoint_every"):
        if data["expert"][key] <= 0:
            raise L2LError(f"{path}: key 'expert.{key}' must be positive, got {data['expert'][key]}")
    if data["name"] != path.stem:
        raise L2LError(f"{path}: key 'name' is {data['name']!r} but the file is named {path.stem!r}")
    return TaskSpec(
        name=data["name"], env_id=data["env_id"], random_return=float(data["random_return"]),
        expert=data["expert"], gail=data["gail"], path=path,
    )


def task_names(envs_dir: Path = ENVS_DIR) -> list[str]:
    """Names of the tasks that have a spec file."""
    return sorted(p.stem for p in Path(envs_dir).glob("*.yaml"))


def load_task(name: str, envs_dir: Path = ENVS_DIR) -> TaskSpec:
    """Load the task called ``name`` (a file ``envs/<name>.yaml``)."""
    path = Path(envs_dir) / f"{name}.yaml"
    if not path.is_file():
        raise L2LError(f"unknown task {name!r}; known tasks: {', '.join(task_names(envs_dir))}")
    return load_task_file(path)
