"""Task specifications: one YAML file per MuJoCo task in ``envs/``.

Each file is the single source of truth for a task: the gymnasium id, how its expert is trained
and the return it must reach, the measured random-policy return (for normalised scores), and the
GAIL hyper-parameters. :func:`load_task` validates a file against :data:`SCHEMA` and names the
offending key on error, so a typo never silently falls back to a default.

Where the task files are (:func:`shipped_dir`, also used for ``expert_data/``): the directory
named by ``$L2L_TASKS_DIR`` if set, else ``envs/`` of the source checkout this package is
imported from, else the copy installed with the package (the wheel carries ``envs/`` and
``expert_data/`` as ``l2l_gail/_data/``; see ``pyproject.toml``). The loaders need real files
(globs, sha256 checks, ``np.load``), so the search yields a directory, not a resource reader.
"""

from __future__ import annotations

import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from l2l_gail.errors import L2LError, first_line

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CHECKOUT_DIR = PACKAGE_DIR.parent
INSTALLED_DATA_DIR = PACKAGE_DIR / "_data"
TASKS_ENV = "L2L_TASKS_DIR"
CHECKOUT, INSTALLED = "the source checkout", "the installed package"


def shipped_dir(name: str, env_var: str) -> tuple[Path, str]:
    """The directory ``name`` (``envs`` or ``expert_data``) and where it was found.

    In order: ``$<env_var>``; ``<name>/`` beside ``pyproject.toml`` when the package is imported
    from a source checkout (editable install or ``PYTHONPATH``); the copy in the installed package.
    The second value says which (``"$L2L_TASKS_DIR"``, :data:`CHECKOUT` or :data:`INSTALLED`).
    """
    override = os.environ.get(env_var)
    if override:
        return Path(override).expanduser(), f"${env_var}"
    if (CHECKOUT_DIR / "pyproject.toml").is_file() and (CHECKOUT_DIR / name).is_dir():
        return CHECKOUT_DIR / name, CHECKOUT
    return INSTALLED_DATA_DIR / name, INSTALLED


ENVS_DIR, ENVS_SOURCE = shipped_dir("envs", TASKS_ENV)
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
        "eval_envs?": int,
        "n_envs": int,
        "demo_batch_size": int,
        "gen_replay_buffer_capacity?": int,
        "n_disc_updates_per_round": int,
        "disc_lr": float,
        "gp_coef": float,
        "obs_norm?": bool,
        "fixed_horizon?": bool,
        "gen_norm_disc_batches?": bool,
        "demos?": str,
        "ppo": dict,
    },
}
DemoKind = typing.Literal["deterministic", "stochastic"]
DEMO_KINDS: tuple[DemoKind, ...] = typing.get_args(DemoKind)
"""The kinds of expert demonstrations (:mod:`l2l_gail.gail.demos`): the expert's mean action, or
actions sampled from it."""


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
        if typ in (int, float):
            value = data[key] = _number(value, typ, f"{source}: key '{where}{key}'")
        elif typ is dict and isinstance(value, dict):
            data[key] = coerce_values(value)
        elif not isinstance(value, typ):
            raise L2LError(
                f"{source}: key '{where}{key}' must be {typ.__name__}, got {type(value).__name__} "
                f"({value!r})"
            )


def parse_number(text: str) -> int | float | None:
    """``text`` as an int or a finite float (``"256"``, ``"3e-4"``, ``"1_000"``), else None.

    YAML 1.1 (PyYAML) reads ``3e-4`` -- no dot, no signed exponent -- as a string, so a task file
    or ``--ppo`` value written that way arrives here instead of as a float.
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _number(value: Any, typ: type, what: str) -> int | float:
    """``value`` as ``typ`` (int or float), accepting numeric strings and integral floats."""
    number = parse_number(value.strip()) if isinstance(value, str) else value
    if typ is int and isinstance(number, float) and number.is_integer():
        number = int(number)
    allowed = (int,) if typ is int else (int, float)
    if isinstance(number, bool) or not isinstance(number, allowed):
        raise L2LError(f"{what} must be {typ.__name__}, got {type(value).__name__} ({value!r})")
    return float(number) if typ is float else number


def coerce_value(value: Any) -> Any:
    """A hyper-parameter value with numeric strings made numbers (recursively in lists and
    mappings, e.g. ``net_arch``) and ``"None"`` made None; anything else unchanged."""
    if isinstance(value, str):
        if value.strip() in ("None", "none"):
            return None
        number = parse_number(value.strip())
        return value if number is None else number
    if isinstance(value, list | tuple):
        return [coerce_value(v) for v in value]
    if isinstance(value, dict):
        return coerce_values(value)
    return value


def coerce_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`coerce_value` applied to every value of a mapping."""
    return {key: coerce_value(value) for key, value in values.items()}


_SIMPLE = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
           type(None): "null"}


def _accepted(annotation: Any) -> tuple[type, ...] | None:
    """The plain types (int, float, bool, str, None) an annotated argument accepts, or None
    when the annotation holds anything a config file cannot check (classes, tuples, ...).
    A ``Callable`` alternative (an SB3 schedule) is dropped: a config value is never callable."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    accepted: list[type] = []
    for arg in typing.get_args(annotation) if union else (annotation,):
        if arg in _SIMPLE:
            accepted.append(arg)
        elif not (arg is Callable or typing.get_origin(arg) is Callable):
            return None
    return tuple(accepted) or None


def check_kwargs(values: Mapping[str, Any], function: Callable[..., Any], what: str, source: str) -> None:
    """Raise :class:`L2LError` naming the first value whose type ``function``'s annotation rejects
    (``"<what> <key> must be a number, got '1e-x' (from <source>)"``).

    Catches what a library would otherwise report as a bare ``AssertionError`` or a
    ``TypeError`` deep in its constructor (e.g. SB3's ``learning_rate="0.0003"``). Unknown names
    and annotations that are not plain types are left to the library.
    """
    parameters = inspect.signature(function).parameters
    for key, value in values.items():
        if key not in parameters:
            continue
        accepted = _accepted(parameters[key].annotation)
        if accepted is None:
            continue
        ok = isinstance(value, accepted) and not (isinstance(value, bool) and bool not in accepted)
        if not ok and float in accepted and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            kinds = " or ".join(_SIMPLE[t] for t in accepted)
            raise L2LError(f"{what} {key} must be {kinds}, got {value!r} (from {source})")


def load_task_file(path: Path) -> TaskSpec:
    """Load and validate one task file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise L2LError(f"cannot read task file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise L2LError(f"{path}: not valid YAML ({first_line(exc)})") from exc
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
    """Names of the tasks that have a spec file.

    Raises:
        L2LError: when ``envs_dir`` holds no task file, saying where it looked and how to point
            elsewhere (an empty list would make every task "unknown" without saying why).
    """
    names = sorted(p.stem for p in Path(envs_dir).glob("*.yaml"))
    if not names:
        found = f" (from {ENVS_SOURCE})" if Path(envs_dir) == ENVS_DIR else ""
        raise L2LError(f"no task files (*.yaml) in {envs_dir}{found}; set {TASKS_ENV} to a directory "
                       "of task files such as the repository's envs/")
    return names


def load_task(name: str, envs_dir: Path = ENVS_DIR) -> TaskSpec:
    """Load the task called ``name`` (a file ``envs/<name>.yaml``)."""
    path = Path(envs_dir) / f"{name}.yaml"
    if not path.is_file():
        raise L2LError(f"unknown task {name!r}; known tasks: {', '.join(task_names(envs_dir))}")
    return load_task_file(path)
