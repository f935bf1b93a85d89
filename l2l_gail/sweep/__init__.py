"""Sweeps: a grid of runs (tasks x methods or labelled variants x seeds) on a local Ray or a cluster.

Every run of a sweep is one ``l2l <mode> train`` command -- the command one would type, started as
a child process with one torch thread -- so it writes the run directory that command writes
(``config.yaml``, ``tb/``, ``checkpoints/``, ``metrics.json``) and its result depends only on its
configuration and seed, not on the worker or the order. The sweep adds scheduling around the
runs' own conventions: a run with ``metrics.json`` is skipped, a started one resumes from its last
checkpoint (``--resume``), a crash is retried from there, and Ctrl-C stops every run at its last
checkpoint.

Runs are plain Ray *tasks* (``num_cpus=1``), not Ray Tune trials. Tune's value is search
algorithms, schedulers (early stopping) and its own checkpoint and trial-directory management; a
sweep here needs none of the first two and must not have the third: Tune would put each trial in
its own directory tree, restore trials from checkpoints it saved itself and keep experiment state
beside them, while a run here already owns its directory, its exact-resume checkpoints and its
restart rule (``--resume`` from ``checkpoints/``), which ``l2l gail compare`` and the benchmarks
read. Tasks give what is needed -- one CPU per run, a local Ray or a cluster behind one address,
cancellation -- and nothing that would compete with the run directories.

* :mod:`l2l_gail.sweep.jobs` -- a job (a command and its run directory) and its execution;
* :mod:`l2l_gail.sweep.engine` -- the serial and Ray pools, retries, progress, Ctrl-C;
* :mod:`l2l_gail.sweep.grid` -- the grid of one mode's train commands (options or a YAML file);
* :mod:`l2l_gail.sweep.cli` -- ``l2l sweep``.
"""

from l2l_gail.sweep.engine import SweepResult, run_jobs
from l2l_gail.sweep.grid import Grid, Variant
from l2l_gail.sweep.jobs import Job, Outcome

__all__ = ["Grid", "Job", "Outcome", "SweepResult", "Variant", "run_jobs"]
