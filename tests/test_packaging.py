"""The built wheel carries the task files and the shipped demonstrations, and a non-editable
install finds them: ``l2l expert show`` lists the five tasks from an unpacked wheel.

The wheel is built offline with the installed setuptools (``pip wheel --no-build-isolation``)
from a copy of the sources, so the build never writes ``build/`` or ``*.egg-info`` into the
checkout. Without setuptools or pip (the build backend) the tests are skipped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("ant", "halfcheetah", "hopper", "inverted-pendulum", "walker2d")
DATA = "l2l_gail/_data"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("pip") is None,
    reason="the build backend (setuptools, pip) is not installed",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("l2l_gail", "envs", "expert_data"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "-w", str(dist), str(src)],
        capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = dist.glob("l2l_gail-*.whl")
    return built


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_wheel_holds_tasks_demonstrations_and_every_module(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        shipped = {f"envs/{t}.yaml" for t in TASKS} | {f"expert_data/{t}.npz" for t in TASKS} | {
            f"expert_data/policies/{t}.zip" for t in TASKS} | {"expert_data/MANIFEST.json"}
        for rel in sorted(shipped):
            # byte for byte the repository's file (the manifest's sha256s then hold too)
            assert _sha256(zf.read(f"{DATA}/{rel}")) == _sha256((ROOT / rel).read_bytes()), rel
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt")))
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "l2l_gail").rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel (add the package to pyproject.toml)"
    assert "l2l_gail/py.typed" in names
    assert "l2l = l2l_gail.cli:main" in entry_points.decode()
    assert not {n for n in names if n.startswith(("tests/", "runs/", "results/", "scripts/"))}


def _run(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` seeing the unpacked wheel first and no L2L_* variable but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("L2L_")}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=300, env={**clean, "PYTHONPATH": str(site), **env})


def test_an_installed_wheel_finds_its_tasks_and_demonstrations(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    # the unpacked copy is imported (not the checkout the venv's editable install points at)
    where = _run(site, work, "-c", "import l2l_gail.gail.tasks as t; "
                 "print(t.__file__, *t.shipped_dir('expert_data', 'L2L_EXPERT_DATA'), t.ENVS_DIR, sep='|')")
    assert where.returncode == 0, where.stderr
    module, data_dir, source, envs_dir = where.stdout.strip().split("|")
    assert Path(module).is_relative_to(site) and source == "the installed package"
    assert Path(data_dir) == site / DATA / "expert_data" and Path(envs_dir) == site / DATA / "envs"

    cli = ("-m", "l2l_gail.cli")
    show = _run(site, work, *cli, "expert", "show")
    assert show.returncode == 0, show.stderr
    rows = [line.split() for line in show.stdout.splitlines()[2:]]
    assert list(dict.fromkeys(r[0] for r in rows)) == list(TASKS) and all(r[-1] == "yes" for r in rows)
    assert {r[0] for r in rows if r[1] == "stochastic"} == {"hopper", "halfcheetah", "walker2d", "ant"}

    # the installed copy is never written to: collect asks for a directory, before any rollout
    collect = _run(site, work, *cli, "expert", "collect", "--task", "hopper", "--episodes", "1")
    assert collect.returncode == 2 and collect.stderr.count("\n") == 1
    assert "--data-dir DIR" in collect.stderr and "L2L_EXPERT_DATA=DIR" in collect.stderr

    # an empty task directory is an error that says where it looked and how to point elsewhere
    empty = tmp_path / "no-tasks"
    empty.mkdir()
    result = _run(site, work, *cli, "expert", "show", L2L_TASKS_DIR=str(empty))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"no task files (*.yaml) in {empty} (from $L2L_TASKS_DIR)" in result.stderr
    assert not list(work.iterdir())
