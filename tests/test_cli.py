"""The ``l2l`` front door: a fast start (no torch for ``l2l --help``) and a ``--help`` that says
what every option does and what it defaults to, for every command."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from l2l_gail.cli import MODES, build_parser, main
from l2l_gail.cli_support import Formatter

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120)


def test_importing_the_cli_does_not_import_torch() -> None:
    result = _python("import sys, l2l_gail.cli\n"
                     "heavy = sorted(m for m in ('torch', 'stable_baselines3', 'imitation', 'gymnasium')"
                     " if m in sys.modules)\n"
                     "print(heavy)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_top_level_help_does_not_import_torch() -> None:
    result = _python("import sys\nfrom l2l_gail.cli import main\n"
                     "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
                     "print('torch' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert "vision" in result.stdout and "gail" in result.stdout
    assert result.stdout.splitlines()[-1] == "False"


def _commands(parser: argparse.ArgumentParser,
              prog: str = "l2l") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (command line, parser) pair below ``parser``, the leaves being the commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prog} {name}", sub
                yield from _commands(sub, f"{prog} {name}")


COMMANDS = dict(_commands(build_parser()))
STOP_WORDS = {"a", "an", "the", "of", "to", "in", "on", "per", "this", "its", "or", "and"}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower())) - STOP_WORDS


def test_every_mode_has_commands() -> None:
    assert {name.split()[1] for name in COMMANDS} == set(MODES)
    assert "l2l vision train" in COMMANDS and "l2l gail compare" in COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_explains_every_option_and_shows_its_default(command: str) -> None:
    parser = COMMANDS[command]
    formatter = Formatter(command)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = (action.option_strings or [action.dest])[0]
        assert action.help, f"{command} {name}: no help"
        # more than the option's own name ("--epochs: epochs" says nothing)
        assert _words(action.help) - _words(name), f"{command} {name}: help {action.help!r}"
        takes_value = action.nargs != 0 or isinstance(action, argparse.BooleanOptionalAction)
        if action.option_strings and takes_value and not action.required:
            shown = formatter._get_help_string(action)
            assert "default" in shown, f"{command} {name}: no default in {shown!r}"


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # undo the line wrapping


def test_falsy_defaults_and_choices_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "vision", "train")
    assert "--seed SEED random seed (default: 0)" in text
    assert "--download, --no-download" in text and "(default: --no-download)" in text
    assert "--method {standard,fgsm-rs,pgd,trades,l2l-naive,l2l-grad,l2l-2step,l2l-kstep}" in text
    assert "--dataset {fashion-mnist,mnist,mnist-5k,cifar10,cifar100,synthetic}" in text
    assert "--epochs EPOCHS passes over the training set (default: 10)" in text
    gail = _help(capsys, "gail", "train")
    assert "--method {gail,gail-gp,l2l-gail,sign-sgd}" in gail
    assert "(default: [])" not in gail  # --ppo's empty list says nothing
    assert "(default: the task file's gail.disc_lr)" in gail


# A command body that says when it has started, then waits for a signal; its cleanup either ends
# at once or, with STUCK set, hangs, as a shutdown that never finishes would.
_STOPPABLE = """
import os, sys, time
from l2l_gail import errors
errors.STUCK_EXIT_SECONDS = 0.5
def body():
    try:
        print("started", flush=True)
        time.sleep(60)
    finally:
        print("cleanup ran", flush=True)
        if os.environ.get("STUCK"):
            time.sleep(60)
sys.exit(errors.exit_status(body))
"""


def _stoppable(signum: int, *, stuck: bool = False) -> tuple[int, str, str]:
    env = {**os.environ, "STUCK": "1" if stuck else ""}
    # SIGINT at its default action, as in a terminal (a suite run in the background inherits it ignored)
    proc = subprocess.Popen([sys.executable, "-c", _STOPPABLE], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        proc.send_signal(signum)
        if stuck:
            time.sleep(5)  # ten times the watchdog's delay
            proc.kill()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_take_the_interrupt_path(signum: int) -> None:
    code, out, err = _stoppable(signum)
    assert code == 130, err
    assert "cleanup ran" in out  # finally blocks run: temporary files go, the checkpoint stays
    assert err.strip() == "interrupted: the last checkpoint is kept; continue with --resume"


def test_a_shutdown_that_hangs_after_an_interrupt_prints_where_it_hangs() -> None:
    code, out, err = _stoppable(signal.SIGTERM, stuck=True)
    assert code == -signal.SIGKILL
    assert "cleanup ran" in out
    assert "most recent call first" in err and "in body" in err, err
