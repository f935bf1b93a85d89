"""l2l sweep: the grid, bit-identical results on 2 Ray workers, skip / retry / Ctrl-C, no processes left."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch

from l2l_gail import cli
from l2l_gail.errors import L2LError
from l2l_gail.sweep import Grid, Job, Variant, run_jobs
from l2l_gail.sweep.cli import grid_from_args
from l2l_gail.sweep.grid import load_file, option_args, parse_seeds, parse_variant
from l2l_gail.sweep.jobs import last_error

REPO = Path(__file__).resolve().parents[1]
TINY = {"timesteps": 1024, "eval-every": 1024, "eval-episodes": 2}  # one round of 8 x 128 steps
TIMING_KEYS = ("train_seconds", "env_steps_per_second")  # wall clock: the only numbers allowed to differ


def tiny_grid(**kw) -> Grid:
    values = {"mode": "gail", "tasks": ["inverted-pendulum"], "seeds": [0, 1], "options": TINY,
              "variants": [Variant("gail", {"method": "gail"}), Variant("l2l-gail", {"method": "l2l-gail"})]}
    return Grid(**{**values, **kw})


def sweep_args(*argv: str):
    return cli.build_parser().parse_args(["sweep", *argv])


# ----------------------------------------------------------------------------- the grid
def test_grid_commands_are_the_train_commands_and_write_their_directories(tmp_path):
    grid = tiny_grid(variants=[Variant("gail", {"method": "gail"}),
                               Variant("max1", {"method": "l2l-gail", "l2l_max_step": 1,
                                                "ppo": {"n_epochs": 2}})], seeds=[3])
    jobs = {job.name: job for job in grid.jobs(tmp_path)}
    gail = jobs["inverted-pendulum/gail/seed3"]
    assert gail.run_dir == tmp_path.resolve() / "gail" / "inverted-pendulum" / "gail" / "seed3"
    assert gail.command[:4] == ("-m", "l2l_gail.cli", "gail", "train")
    assert "--label" not in gail.command  # config.yaml then equals a run started by hand
    max1 = jobs["inverted-pendulum/max1/seed3"]
    assert max1.run_dir.parent.name == "max1"
    assert list(max1.command[-4:]) == ["--l2l-max-step", "1", "--ppo", "n_epochs=2"]
    assert max1.log_path == max1.run_dir.with_name("seed3.log")
    vision = Grid("vision", ["synthetic"], [Variant("pgd", {"method": "pgd"})], [0], experiment="e-{task}")
    [job] = vision.jobs(tmp_path)
    assert job.run_dir == tmp_path.resolve() / "vision" / "e-synthetic" / "pgd" / "seed0"
    assert job.command[job.command.index("--name"):][:2] == ("--name", "e-synthetic/pgd/seed0")


def test_grid_errors_are_one_line(tmp_path):
    bad = [
        (tiny_grid(options={"timestepz": 5}), "unrecognized arguments: --timestepz"),
        (tiny_grid(options={"seed": 5}), "--seed is set by the sweep"),
        (tiny_grid(variants=[Variant("x", {})]), "needs a method"),
        (tiny_grid(variants=[Variant("a b", {"method": "gail"})]), "directory name"),
        (tiny_grid(tasks=["inverted-pendulum", "hopper"], experiment="same"), "would share"),
        (tiny_grid(experiment="{method}"), "only {task}"),
        (tiny_grid(seeds=[]), "distinct seeds"),
        (Grid("meta", ["mnist-5k"], [Variant("m", {"method": "x"})], [0]), "has no --method"),
    ]
    for grid, message in bad:
        with pytest.raises(L2LError, match=message) as info:
            grid.jobs(tmp_path)
        assert "\n" not in str(info.value)


def test_option_and_seed_parsing():
    assert parse_seeds("0-2,7") == [0, 1, 2, 7] and parse_seeds(4) == [4] and parse_seeds([1, 2]) == [1, 2]
    for bad in ("a", "1-", [1.5], "-1"):
        with pytest.raises(L2LError, match="seeds"):
            parse_seeds(bad)
    assert parse_variant("v:method=gail,second-order=true,ppo=n_steps=64,ppo=n_epochs=2") == Variant(
        "v", {"method": "gail", "second-order": True, "ppo": ["n_steps=64", "n_epochs=2"]})
    with pytest.raises(L2LError, match="label"):
        parse_variant("method=gail")
    assert option_args({"a_b": 1e-4, "on": True, "off": False, "ppo": {"net_arch": [8, 8], "act": "relu"},
                        "none": None}) == ["--a-b", "0.0001", "--on", "--no-off", "--ppo", "net_arch=[8, 8]",
                                           "--ppo", "act=relu"]


def test_grid_file_and_command_line_options(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent("""\
        mode: gail
        tasks: [inverted-pendulum]
        seeds: 0-2
        experiment: b-{task}
        options: {timesteps: 1024}
        methods: [gail]
        variants:
          max1: {method: l2l-gail, l2l-max-step: 1}
        """))
    grid = grid_from_args(sweep_args("--file", str(path)))
    assert (grid.mode, grid.seeds, grid.experiment) == ("gail", [0, 1, 2], "b-{task}")
    assert [v.label for v in grid.variants] == ["gail", "max1"]
    grid = grid_from_args(sweep_args("--file", str(path), "--seeds", "5", "--set", "timesteps=2048"))
    assert grid.seeds == [5] and grid.options == {"timesteps": "2048"}
    for text, message in (("mode: gail\nmethodz: [gail]\n", "unknown key 'methodz'"), ("[1, 2]\n", "mapping"),
                          ("tasks: [a\n", "not valid YAML"), ("variants: {x: 3}\n", "variants")):
        path.write_text(text)
        with pytest.raises(L2LError, match=message) as info:
            load_file(path)
        assert "\n" not in str(info.value)
    with pytest.raises(L2LError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")


def test_dry_run_lists_commands(tmp_path, capsys):
    argv = ["sweep", "gail", "--tasks", "inverted-pendulum", "--methods", "gail", "--seeds", "0-1",
            "--runs-dir", str(tmp_path), "--dry-run", "--set", "timesteps=1024"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(s.startswith("new ") and "--timesteps 1024" in s for s in lines)
    assert not (tmp_path / "gail").exists()
    assert cli.main([*argv[:-2], "--set", "timestepz=1"]) == 2
    assert "unrecognized arguments: --timestepz" in capsys.readouterr().err


# ----------------------------------------------------------------------------- running
def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for name in ("discriminator.pt", "phi_discriminator.pt"):
        if (run / name).is_file():
            state = torch.load(run / name, weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            tensors.update({f"{name}:{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)})
    with zipfile.ZipFile(run / "policy.zip") as z:
        policy = torch.load(io.BytesIO(z.read("policy.pth")), weights_only=True)
    tensors.update({f"policy:{k}": v for k, v in policy.items()})
    return tensors


def _metrics(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny grid run one by one in this process, and as a sweep on 2 local Ray workers."""
    root = tmp_path_factory.mktemp("sweep")
    grid = tiny_grid()
    for _, argv in grid.commands(root / "alone"):
        assert cli.main(argv) == 0
    started = time.perf_counter()
    result = run_jobs(grid.jobs(root / "swept"), workers=2, progress=False)
    print(f"sweep of 4 runs on 2 workers: {time.perf_counter() - started:.1f} s "
          f"(Ray start-up {result.startup_seconds:.1f} s)")
    return root, grid, result


def test_sweep_on_two_workers_is_bit_identical_to_runs_one_by_one(swept):
    root, grid, result = swept
    assert result.ok and result.count("done") == 4 and result.startup_seconds > 0
    for job in grid.jobs(root / "swept"):
        alone = root / "alone" / job.run_dir.relative_to(root.resolve() / "swept")
        assert (job.run_dir / "config.yaml").read_text() == (alone / "config.yaml").read_text()
        assert _metrics(job.run_dir) == _metrics(alone)
        a, b = _final_weights(alone), _final_weights(job.run_dir)
        assert a.keys() == b.keys() and len(a) > 10
        assert all(torch.equal(a[k], b[k]) for k in a), job.name


def test_finished_runs_are_skipped_and_a_bad_run_fails_alone(swept, capsys):
    root, grid, _ = swept
    bad = Grid("gail", ["inverted-pendulum"], [Variant("bogus", {"method": "bogus"})], [0], TINY)
    jobs = grid.jobs(root / "swept") + bad.jobs(root / "swept")
    result = run_jobs(jobs, workers=1, max_retries=3, progress=False)
    assert result.count("skipped") == 4 and not result.ok
    [failed] = result.failed
    assert result.attempts[failed] == 1  # an `error:` exit is not retried: it would fail alike
    assert result.outcomes[failed].error.startswith("error: unknown method 'bogus'")
    assert "finished, configuration checked, skipped" in capsys.readouterr().out
    assert not (failed.run_dir / "metrics.json").exists()


def test_a_finished_run_of_another_configuration_fails_instead_of_being_skipped(swept):
    """A grid edited after its runs finished: each finished run's command compares its
    configuration with the run's, so the sweep fails those runs (once: the error would repeat)
    and leaves them untouched, instead of reporting results of the old configuration as new."""
    root, _, _ = swept
    edited = tiny_grid(variants=[Variant("gail", {"method": "gail", "disc-lr": 0.01})], seeds=[0])
    [job] = edited.jobs(root / "swept")
    before = (job.run_dir / "metrics.json").read_bytes()
    result = run_jobs([job], workers=1, max_retries=3, progress=False)
    assert result.failed == [job] and result.attempts[job] == 1
    assert "the configuration differs (disc_lr" in result.outcomes[job].error
    assert (job.run_dir / "metrics.json").read_bytes() == before


CRASH_ONCE = """
import pathlib, sys
run = pathlib.Path(sys.argv[1])
if not (run / "config.yaml").exists():
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("attempt: 1")
    raise RuntimeError("worker lost")
assert sys.argv[2:] == ["--resume"], sys.argv
(run / "metrics.json").write_text("{}")
"""


def test_a_crash_is_retried_with_resume(tmp_path):
    def job(name: str) -> Job:
        return Job(name, ("-c", CRASH_ONCE, str(tmp_path / name)), tmp_path / name)

    result = run_jobs([job("a")], workers=1, max_retries=1, progress=False)
    assert result.ok and result.attempts[job("a")] == 2
    result = run_jobs([job("b")], workers=1, max_retries=0, progress=False)
    assert result.outcomes[job("b")].error == "RuntimeError: worker lost"
    assert "--resume" in job("b").argv()  # the next sweep continues it


def test_the_error_line_is_the_last_attempts(tmp_path):
    log = tmp_path / "seed0.log"
    log.write_text("== 1: cmd\nerror: unknown method\n== 2: cmd --resume\n"
                   "Traceback (most recent call last):\n  File x\nRuntimeError: node lost\n")
    assert last_error(log) == "RuntimeError: node lost"
    log.write_text(log.read_text() + "== 3: cmd --resume\nl2l gail train: error: argument --x: bad\nusage\n")
    assert last_error(log) == "l2l gail train: error: argument --x: bad"


# ----------------------------------------------------------------------------- Ctrl-C, processes, sockets
def _descendants(root: int) -> dict[int, str]:
    """pid -> start time of every process below ``root`` (from /proc)."""
    parent, start = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry.name)], start[int(entry.name)] = int(fields[1]), fields[19]
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                found[child] = start[child]
                frontier.append(child)
    return found


def _alive(pids: dict[int, str]) -> list[int]:
    alive = []
    for pid, started in pids.items():
        try:
            if (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19] == started:
                alive.append(pid)
        except OSError:
            pass
    return alive


def _listening_addresses(pids) -> set[str]:
    """Local addresses of the TCP sockets the processes ``pids`` listen on."""
    inodes = set()
    for pid in pids:
        try:
            for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                addresses.add(fields[1].rsplit(":", 1)[0])
    return addresses


# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net writes them
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads processes and sockets from /proc")
def test_ctrl_c_stops_the_sweep_leaves_runs_resumable_and_no_process(tmp_path):
    runs = tmp_path / "runs"
    # AF_UNIX socket paths are limited to 107 bytes: Ray's session directory needs a short parent
    temp = tempfile.mkdtemp(prefix="l2l-t", dir="/tmp")
    argv = [sys.executable, "-m", "l2l_gail.cli", "sweep", "gail", "--tasks", "inverted-pendulum",
            "--methods", "gail", "--seeds", "0-1", "--jobs", "2", "--runs-dir", str(runs), "--no-progress",
            "--set", "timesteps=10000000", "--set", "eval-every=1024", "--set", "eval-episodes=2"]
    # 10M steps: no run can finish before the interrupt, however loaded the machine (200k could)
    env = {**os.environ, "TMPDIR": temp, "PYTHONPATH": str(REPO)}
    # A suite started in the background (`make test &`, nohup, some CI shells) inherits SIGINT as
    # ignored, and Python then never raises KeyboardInterrupt: give the sweep the default action a
    # terminal's Ctrl-C meets (this, not the sweep, made the test hang in background runs).
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # Ray's start and two runs' imports take about 20 s when the machine is idle; on a loaded
        # one (a full suite beside two benchmark runs) much longer: wait up to 300 s
        deadline = time.monotonic() + 300
        while not list(runs.glob("gail/*/gail/seed*/checkpoints/step_*.pt")):
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
            time.sleep(0.2)
        session = _descendants(driver.pid)
        assert _listening_addresses(session) <= LOOPBACK and _listening_addresses(session)
        driver.send_signal(signal.SIGINT)
        # The sweep gives each run STOP_GRACE_SECONDS (60) to leave through its interrupt path and
        # waits for the cancelled tasks 10 s longer before Ray shuts down; a stuck sweep fails here.
        out = driver.communicate(timeout=300)[0]
    finally:
        driver.kill()
    assert driver.returncode == 130, out
    assert "interrupted" in out
    assert _alive(session) == [], out  # no raylet, gcs_server, worker or run outlives the sweep
    # Ray's session files are gone, and so is every run's temporary log folder; torch's optimizers
    # create an (empty) inductor cache folder under TMPDIR on their first step, which is not ours
    # (a run stuck in its shutdown prints its threads' stacks to its log: the message shows them)
    logs = "".join(p.read_text() for p in runs.glob("gail/*/gail/seed*.log"))
    assert [p.name for p in Path(temp).iterdir()] in ([], ["torchinductor_root"]), logs
    for run in runs.glob("gail/*/gail/seed*"):
        if (run / "config.yaml").exists():
            assert not (run / "metrics.json").exists()
            assert "--resume" in Job("x", (), run).argv()
    assert "interrupted: the last checkpoint is kept" in logs  # the run's own interrupt path ran
    shutil.rmtree(temp)


def test_an_address_nothing_answers_at_is_a_one_line_error(tmp_path):
    import socket

    with socket.socket() as closed:  # bound, never listening: connecting is refused at once
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        job = Job("a", ("-c", "pass"), tmp_path / "a")
        with pytest.raises(L2LError, match="nothing answers at"):
            run_jobs([job], address=address, progress=False)
    with pytest.raises(L2LError, match="must be auto, HOST:PORT"):
        run_jobs([job], address="nonsense", progress=False)
