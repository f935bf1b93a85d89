"""The versioned file of a learned update rule (``phi`` with everything needed to use it).

A rule file is one ``torch.save`` of a plain dict, read back with ``weights_only=True`` (never
unpickled), holding:

* ``format`` -- which rule, i.e. the architecture (``"l2l_gail.LSTMOptimizer"`` for
  :class:`~l2l_gail.core.lstm_rule.LSTMRule`, the name it had when the format was introduced, so
  that every existing file -- all of them LSTMs -- stays readable; ``"l2l_gail.MLPRule"`` for
  :class:`~l2l_gail.core.mlp_rule.MLPRule`);
* ``version`` -- :data:`FORMAT_VERSION` when written; versions :data:`READABLE_VERSIONS` are read
  (version 3 has the fields of version 2, but may hold an MLP rule or an LSTM configuration with
  ``sign_symmetric``, which an older reader must refuse by version rather than misread);
* ``config`` -- the rule's configuration dataclass as a dict;
* ``step_units`` (since version 2) -- ``absolute`` or ``lr``, how the output is to be applied;
* ``state_dict`` -- ``phi``, on the CPU.

Version 1 files have no ``step_units`` and are read as :data:`V1_STEP_UNITS` (``absolute``):
that is how every reader of a version-1 file applied it unless told otherwise (the drop-in
optimizer's default left the steps as they are), and what the files that matter for it hold --
``l2l meta train`` meta-trains absolute steps, including every file in ``results/meta/``. The
phi files of version-1 l2l-gail runs are in units of lr; the GAIL trainers pass the scale
explicitly, so they are unaffected, and the drop-in optimizer refuses an ``lr`` for absolute
steps unless a ``reference_lr`` says what it means (its error says to pass ``reference_lr=1.0``
for such a file), instead of taking steps a learning rate's factor too large.

The same payload is embedded in ``LearnedOptimizer.state_dict()``, so checkpoints carry ``phi``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import torch

from l2l_gail.core.files import atomic_write, safe_torch_load
from l2l_gail.errors import L2LError, first_line

if TYPE_CHECKING:
    from l2l_gail.core.rule import UpdateRule

    R = TypeVar("R", bound=UpdateRule)

StepUnits = Literal["absolute", "lr"]
"""How a rule's output is meant to be applied: as the step itself (``absolute``: meta-trained
rules), or as a step in units of the learning rate, to be multiplied by ``lr`` (``lr``: the Adam
clone and every rule an l2l-gail run trains)."""
STEP_UNITS: tuple[StepUnits, ...] = get_args(StepUnits)

FORMAT_VERSION = 3
"""The version this code writes."""
READABLE_VERSIONS = (1, 2, 3)
"""The versions this code reads."""
V1_STEP_UNITS: StepUnits = "absolute"
"""The step units of a version-1 file, which did not record them (see the module docstring)."""
RULE_NAMES = ("lstm", "mlp")
"""The short names of the core's rules (``UpdateRule.name``), as command-line options take them."""

_RULES: dict[str, type[UpdateRule]] = {}
_BY_NAME: dict[str, type[UpdateRule]] = {}


def register(rule: type[UpdateRule]) -> None:
    """Make files of ``rule.file_format`` loadable and ``rule.name`` known to :func:`rule_type`
    (done by ``UpdateRule`` subclassing)."""
    _RULES[rule.file_format] = rule
    _BY_NAME[rule.name] = rule


def rule_type(name: str) -> type[UpdateRule]:
    """The rule class of a short name (one of :data:`RULE_NAMES`), e.g. for ``--rule mlp``.

    Raises:
        L2LError: no rule has that name.
    """
    if name not in _BY_NAME:
        raise L2LError(f"unknown learned-optimizer rule {name!r}: choose one of "
                       f"{', '.join(sorted(_BY_NAME))}")
    return _BY_NAME[name]


def to_payload(rule: UpdateRule) -> dict[str, Any]:
    """The file's content for ``rule``, as one ``torch.save``-able dict."""
    return {
        "format": rule.file_format,
        "version": FORMAT_VERSION,
        "config": rule.config.to_dict(),
        "step_units": rule.step_units,
        "state_dict": {k: v.detach().cpu().clone() for k, v in rule.state_dict().items()},
    }


def save(rule: UpdateRule, path: Path) -> Path:
    """Write :func:`to_payload` to ``path`` atomically (an interrupted save keeps the old file)."""
    payload = to_payload(rule)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def from_payload(payload: Any, *, source: str, expected: type[R], config: Any = None) -> R:
    """Rebuild the rule a payload holds; ``source`` names it in error messages.

    Args:
        payload: what :func:`to_payload` returned (e.g. read back from a file).
        source: the file or object the payload came from.
        expected: the rule class wanted (``UpdateRule`` for any registered rule).
        config: if given, the payload must hold exactly this configuration.

    Raises:
        L2LError: the payload is not a rule file (of ``expected``), its version or step units
            are unknown, its configuration is unreadable or not ``config``, or its weights do
            not fit its configuration.
    """
    fmt = payload.get("format") if isinstance(payload, Mapping) else None
    kind = _RULES.get(fmt) if isinstance(fmt, str) else None
    if isinstance(fmt, str) and kind is None and fmt.startswith("l2l_gail."):
        raise L2LError(f"{source} holds a learned rule this l2l_gail does not know ({fmt}): "
                       "use the l2l_gail that wrote it")
    if kind is None or not issubclass(kind, expected):
        raise L2LError(
            f"{source} is not a learned-optimizer file: pass a file written by a rule's save "
            "(e.g. by `l2l meta train`, or an l2l-gail run's phi_*.pt)"
        )
    version = payload.get("version")
    if version not in READABLE_VERSIONS:
        raise L2LError(
            f"{source} has learned-optimizer format version {version!r}, this l2l_gail reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}: use the l2l_gail that wrote it, "
            "or re-train it with this version"
        )
    units = payload.get("step_units") if version >= 2 else V1_STEP_UNITS
    if units not in STEP_UNITS:
        raise L2LError(f"{source} has unknown step units {units!r} (not {' or '.join(STEP_UNITS)}): "
                       "the file is corrupted; re-save or re-train it")
    try:
        stored = kind.config_type(**payload["config"])
    except (TypeError, KeyError) as exc:
        raise L2LError(
            f"{source} has an unreadable learned-optimizer configuration ({first_line(exc)}): "
            "re-train it with this version"
        ) from exc
    if config is not None and config != stored:
        diff = ", ".join(
            f"{k}={v!r} (wanted {getattr(config, k)!r})"
            for k, v in stored.to_dict().items()
            if getattr(config, k) != v
        )
        raise L2LError(
            f"{source} holds a learned optimizer with another configuration: {diff}; "
            "pass matching options or another file"
        )
    rule = kind(stored, step_units=units)
    try:
        rule.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise L2LError(
            f"{source} has weights that do not fit its configuration "
            f"({first_line(exc)}): the file is corrupted; re-save or re-train it"
        ) from exc
    return rule  # type: ignore[return-value]


def load(path: Path, *, expected: type[R], config: Any = None) -> R:
    """Read a rule file written by :func:`save` (onto the CPU); see :func:`from_payload`.

    Raises:
        L2LError: the file is missing or unreadable, or :func:`from_payload` refuses it.
    """
    if not path.is_file():
        raise L2LError(
            f"learned-optimizer file {path} does not exist: check the path or train one "
            "with `l2l meta train`"
        )
    try:
        payload = safe_torch_load(path)
    except L2LError:
        raise  # a planted file: refused with its own message
    except Exception as exc:  # any other unpickling failure means a damaged file
        raise L2LError(
            f"{path} is not a readable learned-optimizer file ({type(exc).__name__}): "
            "it is truncated or corrupted; re-save or re-train it"
        ) from exc
    return from_payload(payload, source=str(path), expected=expected, config=config)
