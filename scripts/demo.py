"""`make demo`: GAIL against L2L-GAIL on InvertedPendulum from the shipped demonstrations.

Trains `gail` (Adam discriminator) and `l2l-gail` (the discriminator stepped by the learned
optimizer, trained online on held-out discriminator loss) for a few seeds, compares their
stability and prints the table, where the results are and the TensorBoard command. About ten
minutes on two CPU cores (one torch thread). Every invocation uses a fresh, timestamped
experiment name, so re-running never collides with an earlier demo.

    .venv/bin/python scripts/demo.py [--seeds 0,1,2] [--timesteps 60000] [--runs-dir runs]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from l2l_gail.errors import L2LError
from l2l_gail.gail.compare import compare
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.expert import set_threads
from l2l_gail.gail.factory import prepare
from l2l_gail.gail.train import train_seeds
from l2l_gail.runs import DEFAULT_ROOT

TASK = "inverted-pendulum"
METHODS = ("gail", "l2l-gail")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--timesteps", type=int, default=60_000, help="environment steps per run")
    parser.add_argument("--eval-every", type=int, default=4096, help="evaluation interval")
    parser.add_argument("--runs-dir", type=Path, default=None, help="root of the run directories")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    set_threads(1)
    experiment = time.strftime("demo-%Y%m%d-%H%M%S")
    started = time.time()
    print(f"GAIL vs L2L-GAIL on {TASK}: {len(seeds)} seeds x {args.timesteps:,} steps each, "
          f"experiment {experiment}", flush=True)
    try:
        for method in METHODS:
            prepared = prepare(GAILConfig(task=TASK, method=method, timesteps=args.timesteps,
                                          eval_every=args.eval_every))
            train_seeds(prepared, seeds, experiment, runs_dir=args.runs_dir,
                        progress=not args.no_progress, echo=lambda line: print(line, flush=True))
        root = Path(args.runs_dir or DEFAULT_ROOT) / "gail" / experiment
        out = compare(root, root / "results.json")
    except L2LError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(out.markdown.read_text(), end="")
    print(f"\nresults: {out.json}\ntable:   {out.markdown}\nplot:    {out.plot}")
    print(f"tensorboard --logdir {root}")
    print(f"demo finished in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
