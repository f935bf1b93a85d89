"""One run-directory convention for every mode.

A training command writes ``<root>/<mode>/<name>/`` holding

* ``config.yaml`` -- the full resolved configuration (what ``--resume`` checks against);
* ``tb/`` -- TensorBoard event files;
* ``checkpoints/`` -- ``step_<n>.pt`` files written atomically; the newest ``keep`` are kept;
* ``metrics.json`` -- the final numbers.

:class:`RunLoop` is the skeleton every mode's training loop follows on top of it: resume from
the newest checkpoint, one TensorBoard writer whose x-axis is the mode's *step unit*, periodic
checkpoints that record where the TensorBoard history they cover ends, so that a resumed run's
history equals an uninterrupted run's.

Names that collide are refused rather than overwritten, and every file is written to a
temporary sibling and renamed into place, so an interrupted write never destroys the last
good copy.

Checkpoints hold only tensors and plain data (dicts, lists, tuples, strings, numbers), and are
read with ``torch.load(weights_only=True)``: a file that asks the unpickler for anything else
(a planted ``__reduce__`` payload) is refused instead of run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from l2l_gail.core.files import atomic_write, safe_torch_load
from l2l_gail.errors import L2LError, first_line

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

DEFAULT_ROOT = Path(os.environ.get("L2L_RUNS", "runs"))
_CKPT = re.compile(r"^step_(\d+)\.pt$")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def report_paths(stem: Path, *, force: bool) -> tuple[Path, Path]:
    """A script's report, ``stem.json`` and ``stem.md``, checked before any work is done.

    Raises:
        L2LError: either exists and ``force`` is off (results are never overwritten unasked).
    """
    paths = (stem.with_suffix(".json"), stem.with_suffix(".md"))
    if (existing := [p for p in paths if p.exists()]) and not force:
        raise L2LError(f"{existing[0]} exists: pass --force to overwrite it")
    return paths


def write_report(stem: Path, record: Any, markdown: str) -> None:
    """Write the report of :func:`report_paths`, each file atomically, and print its table."""
    write_json(stem.with_suffix(".json"), record)
    atomic_write_text(stem.with_suffix(".md"), markdown)
    print(markdown, end="")


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    """Round-trip through YAML so that tuples, paths etc. compare as they will be stored."""
    return yaml.safe_load(yaml.safe_dump(_plain(config), sort_keys=True))


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def produced_anything(path: Path) -> bool:
    """Whether the run directory ``path`` holds a file besides ``config.yaml``.

    A start that failed on bad input (a missing data set, a damaged optimizer file, a PPO option
    its library refuses) leaves only its configuration and empty folders; the corrected command
    may then reuse the name, since nothing a run produced can be lost.
    """
    path = Path(path)
    return path.exists() and any(p.is_file() and p.name != "config.yaml" for p in path.rglob("*"))


class RunDir:
    """A run directory: create it fresh, or reopen it with ``resume=True``.

    Args:
        path: the directory, usually ``<root>/<mode>/<name>``.
        config: the resolved configuration; stored on creation, compared on resume.
        resume: reopen an existing run instead of refusing it.
        resume_ignore: configuration keys allowed to differ on resume (e.g. the epoch budget).
    """

    def __init__(
        self,
        path: Path,
        config: Mapping[str, Any],
        *,
        resume: bool = False,
        resume_ignore: tuple[str, ...] = ("resume",),
    ) -> None:
        self.path = Path(path)
        self.config = _normalise(config)
        if resume:
            self._reopen(resume_ignore)
        else:
            if self._produced_anything():
                raise L2LError(
                    f"run directory {self.path} already exists: pass --resume to continue it "
                    "or choose another --name"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.config_path, yaml.safe_dump(self.config, sort_keys=True))
        self.checkpoints_dir.mkdir(exist_ok=True)
        self.tb_dir.mkdir(exist_ok=True)

    @classmethod
    def for_mode(
        cls, mode: str, name: str, config: Mapping[str, Any], *, root: Path | None = None,
        resume: bool = False, resume_ignore: tuple[str, ...] = ("resume",),
    ) -> RunDir:
        """Open ``<root>/<mode>/<name>`` (root defaults to ``$L2L_RUNS`` or ``runs``)."""
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*", name) or ".." in name:
            raise L2LError(f"invalid run name {name!r}: use letters, digits, '-', '_' and '/'")
        return cls(Path(root or DEFAULT_ROOT) / mode / name, config, resume=resume,
                   resume_ignore=resume_ignore)

    def _produced_anything(self) -> bool:
        return produced_anything(self.path)

    def _reopen(self, ignore: tuple[str, ...]) -> None:
        if not self.config_path.is_file():
            raise L2LError(
                f"cannot resume: {self.config_path} does not exist; start the run without --resume"
            )
        try:
            stored = yaml.safe_load(self.config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise L2LError(f"cannot resume: {self.config_path} is not valid YAML ({exc})") from exc
        # An option added after the run started, left unset (None), is the same run: ``.get``
        # makes a key missing from the stored file compare as None.
        diff = sorted(
            k for k in set(stored) | set(self.config)
            if k not in ignore and stored.get(k) != self.config.get(k)
        )
        if diff:
            shown = ", ".join(f"{k}: {stored.get(k)!r} -> {self.config.get(k)!r}" for k in diff[:4])
            raise L2LError(
                f"cannot resume {self.path}: the configuration differs ({shown}); "
                "resume with the same options or start a new --name"
            )
        merged = dict(stored)
        merged.update({k: self.config[k] for k in ignore if k in self.config})
        if merged != stored:
            atomic_write_text(self.config_path, yaml.safe_dump(merged, sort_keys=True))

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def save_checkpoint(self, state: Mapping[str, Any], step: int, *, keep: int = 2) -> Path:
        """Atomically write ``checkpoints/step_<step>.pt`` and prune all but the newest ``keep``."""
        path = self.checkpoints_dir / f"step_{step:09d}.pt"
        atomic_write(path, lambda tmp: torch.save(dict(state), tmp))
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        found = [p for p in self.checkpoints_dir.glob("step_*.pt") if _CKPT.match(p.name)]
        return sorted(found, key=lambda p: int(_CKPT.match(p.name).group(1)))  # type: ignore[union-attr]

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that loads, or None if there is none.

        A damaged newest file (truncated, say) falls back to the one before, with a warning on
        stderr.

        Raises:
            L2LError: a checkpoint holds anything but tensors and plain data (see
                :func:`safe_torch_load`), or every checkpoint is damaged.
        """
        damaged: list[tuple[Path, str]] = []
        for path in reversed(self.checkpoints()):
            try:
                state = safe_torch_load(path)
            except L2LError:
                raise
            except Exception as exc:  # torch raises many types for a damaged file
                damaged.append((path, _first_sentence(exc)))
                continue
            if damaged:
                names = ", ".join(p.name for p, _ in damaged)
                print(f"warning: skipping damaged checkpoint(s) {names} ({damaged[0][1]}); resuming "
                      f"from the older {path.name}", file=sys.stderr)
            return state
        if damaged:
            names = ", ".join(str(p) for p, _ in damaged)
            raise L2LError(f"cannot resume {self.path}: every checkpoint is damaged ({names}: "
                           f"{damaged[0][1]}); restore them from a backup, or delete them to start "
                           "the run over with --resume")
        return None

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        write_json(self.metrics_path, _plain(metrics))

    def finished_metrics(self) -> dict[str, Any] | None:
        """The final numbers of a finished run (its ``metrics.json``), or None if it has not
        finished. A resumed run that has finished has nothing left to do: its train command
        reports these instead of loading and re-evaluating its last checkpoint.

        Raises:
            L2LError: ``metrics.json`` is damaged.
        """
        if not self.metrics_path.is_file():
            return None
        try:
            metrics = json.loads(self.metrics_path.read_text())
        except (OSError, ValueError) as exc:
            raise L2LError(f"cannot read {self.metrics_path} ({type(exc).__name__}): delete it to "
                           "finish the run again from its last checkpoint with --resume") from exc
        if not isinstance(metrics, dict):
            raise L2LError(f"{self.metrics_path} is not a JSON object: delete it to finish the run "
                           "again from its last checkpoint with --resume")
        return metrics


class RunLoop:
    """The run-loop skeleton of every mode: resume, one TensorBoard step unit, checkpoints, metrics.

    Each mode picks one step unit and logs every scalar against it: the global optimizer step
    for vision (classifier steps) and meta (meta-steps of ``phi``), environment steps for GAIL.
    A checkpoint records ``tb_step``, the first step the run has not logged at yet; a resumed
    run opens its writer with ``purge_step=tb_step``, so TensorBoard drops whatever the
    interrupted run logged after that checkpoint and the resumed run logs it again -- the
    history then equals an uninterrupted run's. For a mode that logs at the 0-based index of
    the step just taken, ``tb_step`` is the number of steps taken; for one that logs at a
    count of steps done (SB3's ``num_timesteps``), it is that count plus one.

    Usage::

        with RunLoop(run, resume=resume) as loop:
            if loop.state is not None:
                ...  # restore the model, optimizers and RNG from loop.state
            for epoch in range(first, epochs):
                ...  # train, loop.log({...}, step)
                loop.checkpoint({...}, epoch, tb_step=steps_taken)
        run.write_metrics(metrics)

    Args:
        run: the run directory.
        resume: continue from its newest checkpoint (none yet: start fresh).
        legacy_tb_step: ``tb_step`` of a checkpoint written before checkpoints recorded it,
            computed from the checkpoint (default: 0).
    """

    def __init__(self, run: RunDir, *, resume: bool,
                 legacy_tb_step: Callable[[Mapping[str, Any]], int] | None = None) -> None:
        self.run = run
        self.resume = resume
        self.state = run.load_latest() if resume else None
        """The checkpoint to resume from, or None for a fresh start."""
        self.tb_step = 0
        if self.state is not None:
            stored = self.state.get("tb_step")
            self.tb_step = int(stored) if stored is not None else (
                legacy_tb_step(self.state) if legacy_tb_step else 0)
        self._writer: SummaryWriter | None = None

    def __enter__(self) -> RunLoop:
        # tensorboard is slow to import: only when a run starts
        from torch.utils.tensorboard import SummaryWriter

        # A resume with no checkpoint yet (interrupted before the first) restarts from step 0:
        # purge from 0 drops what the interrupted start logged.
        self._writer = SummaryWriter(str(self.run.tb_dir), purge_step=self.tb_step if self.resume else None)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.writer.close()

    @property
    def writer(self) -> SummaryWriter:
        """The run's TensorBoard writer (inside the ``with`` block)."""
        if self._writer is None:
            raise RuntimeError("RunLoop.writer is open only inside `with RunLoop(...)`")
        return self._writer

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        """Log ``scalars`` (tag -> value) at ``step``, in the mode's step unit."""
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def checkpoint(self, state: Mapping[str, Any], index: int, *, tb_step: int, keep: int = 2) -> Path:
        """Flush TensorBoard, then save ``state`` plus ``tb_step`` as ``checkpoints/step_<index>.pt``.

        Flushing first means the history a checkpoint claims is on disk before the checkpoint is.
        """
        self.writer.flush()
        self.tb_step = tb_step
        return self.run.save_checkpoint({**state, "tb_step": tb_step}, index, keep=keep)


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's run to a paragraph)."""
    if not str(exc).strip():
        return type(exc).__name__
    return f"{type(exc).__name__}: {first_line(exc).split('. ')[0]}"


def global_rng_state() -> dict[str, Any]:
    """The torch, numpy and python global RNG states, as tensors and plain data.

    numpy's legacy state holds an array: its 624 words are stored as a list so that the
    checkpoint loads with ``weights_only=True``.
    """
    _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {"torch": torch.get_rng_state(),
            "numpy": {"key": np.asarray(key).tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                      "gauss": float(gauss)},
            "python": random.getstate()}


def set_global_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`global_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    random.setstate(state["python"])


def console_script(name: str) -> str:
    """How to call this Python environment's console script ``name`` (``l2l``, ``tensorboard``)
    from a plain shell: the bare name when ``PATH`` finds this very script (an activated venv,
    a global install), else its path in the interpreter's bin directory -- relative to the
    working directory when under it, e.g. ``.venv/bin/l2l`` after ``make demo``."""
    script = Path(sys.executable).parent / name
    found = shutil.which(name)
    if not script.is_file() or (found is not None and Path(found).resolve() == script.resolve()):
        return name
    try:
        relative = script.relative_to(Path.cwd())
    except ValueError:
        return str(script)
    return str(relative) if len(relative.parts) > 1 else f"./{relative}"  # a bare name would search PATH


def tensorboard_command(logdir: Path) -> str:
    """The shell command that shows ``logdir``'s curves, as a plain shell can run it."""
    return shlex.join([console_script("tensorboard"), "--logdir", str(logdir)])
