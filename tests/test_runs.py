"""The run-directory convention: collisions refused, resume checked, atomic writes, damaged checkpoints."""

from __future__ import annotations

import pytest
import yaml

from l2l_gail.errors import L2LError
from l2l_gail.runs import RunDir, atomic_write_text


def test_new_run_writes_config_and_refuses_collision(tmp_path):
    run = RunDir(tmp_path / "r", {"lr": 0.1, "name": "a"})
    assert yaml.safe_load(run.config_path.read_text()) == {"lr": 0.1, "name": "a"}
    assert run.tb_dir.is_dir() and run.checkpoints_dir.is_dir()
    run.write_metrics({"acc": 0.5})
    before = run.metrics_path.read_text()
    with pytest.raises(L2LError, match="already exists"):
        RunDir(tmp_path / "r", {"lr": 0.2})
    assert run.metrics_path.read_text() == before  # nothing overwritten


def test_failed_start_leaves_name_reusable(tmp_path):
    RunDir(tmp_path / "r", {"data": "typo"})  # then the command fails on its input
    run = RunDir(tmp_path / "r", {"data": "right"})
    assert yaml.safe_load(run.config_path.read_text()) == {"data": "right"}
    (run.tb_dir / "events.out.tfevents.1").write_bytes(b"x")
    with pytest.raises(L2LError, match="already exists"):
        RunDir(tmp_path / "r", {"data": "other"})


def test_resume_requires_same_config(tmp_path):
    RunDir(tmp_path / "r", {"lr": 0.1, "epochs": 5})
    with pytest.raises(L2LError, match="configuration differs"):
        RunDir(tmp_path / "r", {"lr": 0.2, "epochs": 5}, resume=True)
    RunDir(tmp_path / "r", {"lr": 0.1, "epochs": 9}, resume=True, resume_ignore=("epochs",))
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["epochs"] == 9
    with pytest.raises(L2LError, match="does not exist"):
        RunDir(tmp_path / "missing", {"lr": 0.1}, resume=True)
    # an option added later and left unset is the same run; set to a value, it is not
    RunDir(tmp_path / "r", {"lr": 0.1, "epochs": 9, "new": None}, resume=True, resume_ignore=("epochs",))
    with pytest.raises(L2LError, match="configuration differs"):
        RunDir(tmp_path / "r", {"lr": 0.1, "epochs": 9, "new": 1}, resume=True, resume_ignore=("epochs",))


def test_checkpoints_pruned_and_damaged_newest_falls_back(tmp_path):
    run = RunDir(tmp_path / "r", {})
    for step in range(4):
        run.save_checkpoint({"step": step}, step, keep=2)
    assert [p.name for p in run.checkpoints()] == ["step_000000002.pt", "step_000000003.pt"]
    run.latest_checkpoint().write_bytes(b"truncated")
    assert run.load_latest() == {"step": 2}


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "good")

    class Boom(Exception):
        pass

    from l2l_gail.runs import atomic_write

    def fail(tmp):
        tmp.write_text("half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, fail)
    assert target.read_text() == "good"
    assert list(tmp_path.iterdir()) == [target]


def test_bad_run_name_refused(tmp_path):
    with pytest.raises(L2LError, match="invalid run name"):
        RunDir.for_mode("vision", "../escape", {}, root=tmp_path)
