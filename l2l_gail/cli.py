"""The ``l2l`` command line: ``l2l vision ...``, ``l2l meta ...``, ``l2l expert ...``, ``l2l gail ...``,
``l2l sweep ...``.

Each mode's commands, their options and handlers live in the mode's package
(``l2l_gail.<mode>.cli``, the experts' in :mod:`l2l_gail.gail.expert_cli`), with what they share in
:mod:`l2l_gail.cli_support`; this module puts them together and runs one. Every
:class:`~l2l_gail.errors.L2LError` becomes a one-line ``error: ...`` message and exit status 2.

Start-up stays fast (``l2l --help`` must not wait for torch): this module imports no mode. Each
mode in :data:`MODES` adds its commands when it is the one asked for, and each handler imports
what it runs when called.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from l2l_gail import __version__
from l2l_gail.cli_support import Formatter
from l2l_gail.errors import exit_status


@dataclass(frozen=True)
class Mode:
    """A mode ``l2l <name>``: its help line and description, and the function that adds its
    commands and options (and imports what they need) to the mode's parser, named as
    ``"module:function"`` so that listing the modes imports none of them."""

    help: str
    description: str
    add: str

    def add_commands(self, parser: argparse.ArgumentParser) -> None:
        """Import the mode's command-line module and add its commands to ``parser``."""
        module, _, function = self.add.partition(":")
        getattr(importlib.import_module(module), function)(parser)


MODES: dict[str, Mode] = {
    "vision": Mode("adversarial training of image classifiers",
                   "Adversarial training with a learned attacker (Jiang et al., arXiv 1811.01213) and "
                   "its baselines.", "l2l_gail.vision.cli:add"),
    "expert": Mode("train experts and manage demonstrations",
                   "Train MuJoCo experts with stable-baselines3, roll them out into demonstrations, "
                   "and list the shipped ones.", "l2l_gail.gail.expert_cli:add"),
    "meta": Mode("meta-learned robust optimizer (2008.05247)",
                 "An LSTM optimizer meta-trained on adversarial examples (Serban et al., arXiv "
                 "2008.05247), then used to train new models on clean data only.", "l2l_gail.meta.cli:add"),
    "gail": Mode("GAIL with learned discriminator / policy updates",
                 "GAIL (Ho & Ermon 2016) with an Adam, gradient-penalty or learned (L2L) "
                 "discriminator update, and stability comparisons.", "l2l_gail.gail.cli:add"),
    "sweep": Mode("run a grid of train commands (tasks x methods x seeds) in parallel, locally or on a Ray "
                  "cluster", "Grids of `l2l MODE train` runs on Ray.", "l2l_gail.sweep.cli:add"),
}


def build_parser(modes: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``l2l`` parser with the commands of ``modes`` (default: every mode).

    The other modes appear in ``l2l --help`` but have no commands: adding a mode's commands
    imports the mode (torch and more), which :func:`main` does only for the mode it runs.
    """
    parser = argparse.ArgumentParser(
        prog="l2l", formatter_class=Formatter,
        description="Learned inner optimizers for min-max training: learned attackers for "
        "adversarial training (vision), meta-learned robust optimizers (meta), and L2L-GAIL (gail).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    for name, mode in MODES.items():
        mode_parser = sub.add_parser(name, help=mode.help, description=mode.description,
                                     formatter_class=Formatter)
        if modes is None or name in modes:
            mode.add_commands(mode_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``l2l`` with ``argv``; the exit status (see :func:`~l2l_gail.errors.exit_status`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The mode is the first word that is not an option (`l2l` itself takes only options).
    parser = build_parser([a for a in argv if not a.startswith("-")][:1])
    args = parser.parse_args(argv)
    return exit_status(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
