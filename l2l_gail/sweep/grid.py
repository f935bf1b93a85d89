"""The grid of a sweep: tasks x variants x seeds of one mode, each cell one ``l2l <mode> train`` command.

A variant is a label and the train command's options (``method`` among them for gail and
vision); a plain method is the variant labelled by its name. Every run of a grid lands in
``RUNS_DIR/<mode>/<experiment>/<label>/seed<k>/``: for gail that is exactly where
``l2l gail train --task T --method M --seeds k --experiment E`` writes (so ``l2l gail compare``
reads a sweep's experiment as it is), for vision and meta the sweep names the run
``<experiment>/<label>/seed<k>``.

A grid file (YAML) holds the same keys as the options::

    mode: gail
    tasks: [hopper, walker2d]
    seeds: 0-4                        # or [0, 1, 2], or "0,1,2"
    experiment: bench-{task}          # default: {task}
    options: {timesteps: 1000000, ppo: {n_epochs: 5}}     # every run
    methods: [gail, gail-gp]
    variants:
      l2l-max1: {method: l2l-gail, l2l-max-step: 1}
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from l2l_gail.errors import L2LError
from l2l_gail.sweep.jobs import Job

MODES = {"gail": "task", "vision": "dataset", "meta": "dataset"}
"""Each mode a sweep runs, and the train command's option a task sets."""
_HAS_METHOD = ("gail", "vision")
# Options the sweep sets on every run itself; a grid that sets them would break the layout.
_RESERVED = {"task", "dataset", "method", "seed", "seeds", "name", "experiment", "label", "runs-dir",
             "resume", "no-progress"}
FILE_KEYS = ("mode", "tasks", "methods", "variants", "seeds", "options", "experiment")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


@dataclass(frozen=True)
class Variant:
    """A labelled configuration: the train command's options (``method`` included)."""

    label: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Grid:
    """Every run of a sweep: ``tasks x variants x seeds`` of ``mode``, with ``options`` for all."""

    mode: str
    tasks: list[str]
    variants: list[Variant]
    seeds: list[int]
    options: Mapping[str, Any] = field(default_factory=dict)
    experiment: str = "{task}"

    def validate(self) -> None:
        """Raise :class:`L2LError` on the first impossible setting (before any run starts)."""
        if self.mode not in MODES:
            raise L2LError(f"unknown sweep mode {self.mode!r}; choose one of {', '.join(MODES)}")
        for what, items in (("tasks", self.tasks), ("seeds", self.seeds)):
            if not items or len(set(items)) != len(items):
                raise L2LError(f"the sweep needs distinct {what}, got {items!r}")
        if not self.variants:
            raise L2LError("nothing to run: give --methods or at least one --variant")
        labels = [v.label for v in self.variants]
        for v in self.variants:
            if not _LABEL.fullmatch(v.label):
                raise L2LError(f"variant label {v.label!r} must be a directory name: letters, digits, "
                               "'.', '_', '-'")
            if self.mode in _HAS_METHOD and "method" not in v.options:
                raise L2LError(f"variant {v.label!r} needs a method, e.g. '{v.label}:method=...'")
            if self.mode not in _HAS_METHOD and "method" in v.options:
                raise L2LError(f"l2l {self.mode} train has no --method: give variant {v.label!r} "
                               "options only")
        if len(set(labels)) != len(labels):
            raise L2LError(f"variant labels must be distinct, got {', '.join(labels)}")
        for options, allowed in ((self.options, set()), *((v.options, {"method"}) for v in self.variants)):
            bad = sorted(_RESERVED.intersection(_flag(k) for k in options) - allowed)
            if bad:
                raise L2LError(f"--{bad[0]} is set by the sweep for every run; use the grid (tasks, "
                               "methods, variants, seeds, experiment, --runs-dir) instead")
        for task in self.tasks:
            try:
                name = self.experiment.format(task=task)
            except (KeyError, IndexError, ValueError) as exc:
                raise L2LError(f"--experiment {self.experiment!r}: only {{task}} may be filled in "
                               f"({exc})") from None
            if not _NAME.fullmatch(name) or ".." in name:
                raise L2LError(f"--experiment {name!r} must be a directory name: letters, digits, "
                               "'.', '_', '-'")

    def commands(self, runs_dir: Path) -> list[tuple[str, list[str]]]:
        """``(name, argv of l2l)`` of every run, seeds outermost so that a partly done sweep
        already compares every variant."""
        out = []
        for seed in self.seeds:
            for task in self.tasks:
                experiment = self.experiment.format(task=task)
                for v in self.variants:
                    argv = [self.mode, "train", f"--{MODES[self.mode]}", task, "--runs-dir", str(runs_dir),
                            "--no-progress"]
                    options = dict(v.options)
                    if "method" in options:
                        argv += ["--method", str(options.pop("method"))]
                    if self.mode == "gail":
                        argv += ["--seeds", str(seed), "--experiment", experiment]
                        # the method's own name is the default label: config.yaml then matches a
                        # run started by hand with `l2l gail train`
                        argv += ["--label", v.label] if v.label != v.options.get("method") else []
                    else:
                        argv += ["--seed", str(seed), "--name", f"{experiment}/{v.label}/seed{seed}"]
                    argv += option_args(self.options) + option_args(options)
                    out.append((f"{experiment}/{v.label}/seed{seed}", argv))
        return out

    def jobs(self, runs_dir: Path) -> list[Job]:
        """One :class:`Job` per run, every command checked by the ``l2l`` parser first."""
        self.validate()
        from l2l_gail.cli import build_parser

        runs_dir = runs_dir.resolve()
        parser = build_parser([self.mode])  # this mode's commands only: the others import their modes
        jobs = [Job(name, ("-m", "l2l_gail.cli", *argv), run_dir(self.mode, _parse(parser, argv)),
                    check_finished=True)
                for name, argv in self.commands(runs_dir)]
        seen: dict[Path, str] = {}
        for job in jobs:
            if job.run_dir in seen:
                raise L2LError(f"runs {seen[job.run_dir]} and {job.name} would share {job.run_dir}: put "
                               "{task} in --experiment, or give the variants distinct labels")
            seen[job.run_dir] = job.name
        return jobs


def run_dir(mode: str, ns: argparse.Namespace) -> Path:
    """Where the parsed ``l2l <mode> train`` command ``ns`` writes (as the command computes it)."""
    if mode == "gail":
        from l2l_gail.gail.config import method_dir
        from l2l_gail.gail.train import run_path

        return run_path(ns.experiment, method_dir(ns.method, ns.l2l_target, ns.label), int(ns.seeds),
                        ns.runs_dir)
    return Path(ns.runs_dir) / mode / ns.name


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv)
    except SystemExit:
        lines = [s for s in err.getvalue().splitlines() if "error:" in s] or ["(no message)"]
        raise L2LError(f"{lines[-1].strip()} -- in `l2l {shlex.join(argv)}`") from None


def _flag(key: str) -> str:
    return str(key).replace("_", "-").lstrip("-")


def option_args(options: Mapping[str, Any]) -> list[str]:
    """Command-line arguments for ``options``: ``{k: v}`` -> ``--k v``; ``True`` / ``False`` ->
    ``--k`` / ``--no-k``; a list repeats the option; a mapping gives ``--k key=value`` per item
    (gail's ``--ppo``)."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + _flag(key)
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{_flag(key)}")
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, Mapping):
            for k, v in value.items():
                argv += [flag, f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


# ----------------------------------------------------------------------------- parsing
def parse_seeds(value: Any) -> list[int]:
    """``[0, 1]``, ``3``, ``"0,1,2"`` or ``"0-4"`` (both ends included) -> a list of seeds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        return list(value)
    seeds: list[int] = []
    for part in str(value).split(",") if isinstance(value, str) else ["?"]:
        lo, dash, hi = part.strip().partition("-")
        if not (lo.isdigit() and (not dash or hi.isdigit())):
            raise L2LError(f"seeds must be integers such as 0,1,2 or a range such as 0-4, got {value!r}")
        seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    return seeds


def parse_key_values(items: Sequence[str], what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: v}``; true / false become flags, a repeated key a list (an option
    given several times, such as gail's ``--ppo``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise L2LError(f"bad {what} {item!r}: use KEY=VALUE with an option of the train command")
        value: Any = {"true": True, "false": False}.get(raw.strip().lower(), raw.strip())
        if key in out:
            value = [*(out[key] if isinstance(out[key], list) else [out[key]]), value]
        out[key] = value
    return out


def parse_variant(spec: str) -> Variant:
    """``'LABEL:KEY=VALUE,KEY=VALUE'`` (options of the train command) -> :class:`Variant`."""
    label, colon, body = spec.partition(":")
    if not colon or not label:
        raise L2LError(f"--variant {spec!r} needs a label, e.g. 'l2l-x:method=l2l-gail,l2l-max-step=1'")
    return Variant(label, parse_key_values([s for s in body.split(",") if s.strip()], "--variant item"))


def load_file(path: Path) -> dict[str, Any]:
    """A grid file's keys (see the module docstring), checked for type."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise L2LError(f"cannot read the sweep file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise L2LError(f"the sweep file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise L2LError(f"the sweep file {path} must be a mapping with keys {', '.join(FILE_KEYS)}")
    unknown = sorted(set(map(str, data)) - set(FILE_KEYS))
    if unknown:
        raise L2LError(f"unknown key {unknown[0]!r} in {path}; the keys are {', '.join(FILE_KEYS)}")
    out: dict[str, Any] = dict(data)
    for key in ("tasks", "methods"):
        if key in out:
            out[key] = _names(out[key], f"{key} in {path}")
    if "seeds" in out:
        out["seeds"] = parse_seeds(out["seeds"])
    for key in ("mode", "experiment"):
        if key in out and not isinstance(out[key], str):
            raise L2LError(f"{key} in {path} must be a string, got {out[key]!r}")
    if not isinstance(out.get("options", {}), dict):
        raise L2LError(f"options in {path} must be a mapping of train options, got {out['options']!r}")
    variants = out.get("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise L2LError(f"variants in {path} must map each label to a mapping of train options")
    out["variants"] = [Variant(str(label), options) for label, options in variants.items()]
    return out


def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise L2LError(f"{what} must be a list of names, got {value!r}")
