"""What every mode's command line shares: the ``--help`` formatter, adding a command, the options
of a command that writes a run directory, and options generated from a configuration dataclass.

The ``l2l`` entry point (:mod:`l2l_gail.cli`) and each mode's commands (``l2l_gail.<mode>.cli``)
import this; it imports no mode, so that ``l2l --help`` does not wait for torch. It is a module of
its own, not part of :mod:`l2l_gail.cli`, because ``python -m l2l_gail.cli`` (how a sweep starts
its runs) runs that file as ``__main__``: a mode importing its helpers from ``l2l_gail.cli`` would
load the entry point a second time.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# A command's handler: its exit status, None meaning 0.
Handler = Callable[[argparse.Namespace], int | None]


class Formatter(argparse.HelpFormatter):
    """Append each option's default to its help.

    Every default is shown, falsy ones included (``--seed 0``); a ``--flag/--no-flag`` pair shows
    the form that is on by default. Not shown: plain on/off flags (off unless given), ``None``
    and empty defaults (the help text says what happens then), and help that already names a
    default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required:
            return text
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"{text} (default: {action.option_strings[0 if action.default else 1]})"
        default = action.default
        if (action.nargs == 0 or default is None or default is argparse.SUPPRESS
                or (isinstance(default, list | dict | tuple) and not default)):
            return text
        return text + " (default: %(default)s)"

    # Wrap at spaces only: breaking after hyphens splits names such as --no-second-order.
    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Fill each paragraph (blank-line separated); keep indented paragraphs (examples) as
        written."""
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if paragraph.startswith(" "):
                paragraphs.append(textwrap.indent(paragraph, indent))
            else:
                paragraphs.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                                subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(paragraphs)


def add_command(subparsers: argparse._SubParsersAction, name: str, help_: str, handler: Handler,
                description: str | None = None) -> argparse.ArgumentParser:
    """Add the command ``name`` to ``subparsers`` (see :func:`add_commands`): ``help_`` is its line
    in the mode's ``--help`` and, unless ``description`` is given, its own description; ``main``
    calls ``handler`` with the parsed options."""
    parser = subparsers.add_parser(name, help=help_, description=description or help_,
                                   formatter_class=Formatter)
    parser.set_defaults(handler=handler)
    return parser


def add_commands(mode: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The action the commands of ``mode`` (``l2l <mode> COMMAND``) are added to."""
    return mode.add_subparsers(dest="command", required=True, metavar="COMMAND")


def add_runs_dir(parser: argparse.ArgumentParser) -> None:
    """``--runs-dir``: the root of the run directories a command writes or reads."""
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="root of all run directories (default: $L2L_RUNS or ./runs)")


def add_run_options(parser: argparse.ArgumentParser, default_name: str) -> None:
    """``--name`` (``default_name`` describes its default), ``--runs-dir``, ``--resume``, ``--seed``
    and ``--no-progress``: the options of every command that writes a run directory."""
    parser.add_argument("--name", default=None,
                        help="run name: results go to RUNS_DIR/<mode>/<name>/ (refused if it exists; "
                        f"default: {default_name})")
    add_runs_dir(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUNS_DIR/<mode>/<name>/ from its last checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


# The help of options that several commands share.
TASK_HELP = "task name: a file <task>.yaml in the task directory ($L2L_TASKS_DIR, else envs/)"
DATA_HELP = ("demonstrations directory (default: $L2L_EXPERT_DATA, else expert_data/ of the source "
             "checkout, else the copy installed with the package)")


def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each dataclass field (CleanRL/tyro style), read from the source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = (),
                          choices: Mapping[str, Sequence[str]] | None = None) -> None:
    """One ``--option`` per field of the configuration dataclass ``cls``, documented by the
    field's docstring, so the configuration and its ``--help`` cannot drift apart.

    ``choices`` maps a field to the names it accepts, shown in ``--help`` as ``{a,b,c}``; the
    configuration's own ``validate`` still checks them, so API and command line give one error.
    """
    docs = field_docs(cls)
    choices = choices or {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.default is dataclasses.MISSING:
            continue
        typ = hints[f.name]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
            typ = args[0]
        flag = "--" + f.name.replace("_", "-")
        help_ = docs.get(f.name, f.name.replace("_", " ")).replace("%", "%%")
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        elif typ in (int, float, str):
            metavar = "{" + ",".join(choices[f.name]) + "}" if f.name in choices else None
            parser.add_argument(flag, type=typ, default=f.default, dest=f.name, help=help_, metavar=metavar)


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build ``cls`` from the parsed options added by :func:`add_dataclass_options`."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides)
    return cls(**values)


def fill_eps(config: Any, mode: str, name: str, args: argparse.Namespace) -> None:
    """Set an unset ``config.eps`` and print, in one line, the eps the run uses and why.

    A new run takes the data set's standard radius, recorded in its config.yaml. ``--resume``
    takes the radius the run recorded, so a default changed since the run started cannot change
    it halfway (a run that recorded none resolves it as it always did, from the data set).
    """
    import yaml

    from l2l_gail.robust.data import describe_eps
    from l2l_gail.runs import DEFAULT_ROOT

    why = "--eps"
    if config.eps is None:
        recorded = Path(args.runs_dir or DEFAULT_ROOT) / mode / name / "config.yaml"
        try:
            stored = yaml.safe_load(recorded.read_text()) if args.resume and recorded.is_file() else {}
        except yaml.YAMLError:
            stored = {}  # RunDir refuses the damaged file with its own message
        stored = stored if isinstance(stored, dict) else {}
        if stored.get("eps") is not None:
            config.eps, why = stored["eps"], f"recorded in {recorded}"
        else:
            why = f"the standard for {config.dataset}; set --eps to change it"
            if "eps" not in stored:  # an old run's "eps: null" stays unset, so that it still resumes
                config.eps = config.resolved_eps()
    print(f"eps {describe_eps(config.resolved_eps())} ({why})")
