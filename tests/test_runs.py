"""The run-directory convention: collisions refused, resume checked, atomic writes, damaged checkpoints."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from l2l_gail.core import files
from l2l_gail.errors import L2LError
from l2l_gail.runs import RunDir, RunLoop, atomic_write, atomic_write_text, report_paths, write_report

real_save = torch.save  # the tests below patch torch.save


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


def test_checkpoints_pruned_and_damaged_newest_falls_back(tmp_path, capsys):
    run = RunDir(tmp_path / "r", {})
    for step in range(4):
        run.save_checkpoint({"step": step}, step, keep=2)
    assert [p.name for p in run.checkpoints()] == ["step_000000002.pt", "step_000000003.pt"]
    newest = run.latest_checkpoint()
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    assert run.load_latest() == {"step": 2}
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and err.count("\n") == 1
    assert "step_000000003.pt" in err and "step_000000002.pt" in err


@pytest.mark.parametrize("damage", ["truncated", "zero-filled", "empty"])
def test_resume_refuses_when_every_checkpoint_is_damaged(tmp_path, damage):
    run = RunDir(tmp_path / "r", {})
    for step in range(2):
        run.save_checkpoint({"step": step}, step)
    for path in run.checkpoints():
        size = path.stat().st_size
        path.write_bytes({"truncated": path.read_bytes()[: size // 2], "zero-filled": bytes(size),
                          "empty": b""}[damage])
    with pytest.raises(L2LError, match="every checkpoint is damaged") as info:
        run.load_latest()
    message = str(info.value)
    assert "\n" not in message and "delete them" in message
    assert all(str(p) in message for p in run.checkpoints())


def test_resume_without_checkpoints_starts_over(tmp_path):
    assert RunDir(tmp_path / "r", {}).load_latest() is None


@pytest.mark.parametrize("form", ["oserror", "torch-record", "torch-stream"])
def test_full_disk_during_checkpoint_is_one_line_and_keeps_the_last_one(tmp_path, monkeypatch, form):
    if form.startswith("torch") and not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    run = RunDir(tmp_path / "r", {})
    good = run.save_checkpoint({"step": 1}, 1)
    before = good.read_bytes()

    def full_disk(obj, tmp):
        """Fails as torch.save does on a full disk: the OSError, or torch's own RuntimeErrors
        (a record cut short, the stream failing at its end), raised by writing to /dev/full."""
        Path(tmp).write_bytes(b"half a checkpoint")
        if form == "oserror":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save({**obj, "w": torch.zeros(1000)} if form == "torch-record" else obj, "/dev/full")

    monkeypatch.setattr(torch, "save", full_disk)
    # torch's errors carry no errno: the free space left says the disk is full
    monkeypatch.setattr(files.shutil, "disk_usage", lambda _: SimpleNamespace(free=0))
    with pytest.raises(L2LError, match="the disk is full") as info:
        run.save_checkpoint({"step": 2}, 2)
    message = str(info.value)
    assert "\n" not in message and "free some space" in message and "--resume" in message
    assert run.checkpoints() == [good] and good.read_bytes() == before
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == [good.name]  # no temp file left
    monkeypatch.undo()
    assert run.load_latest() == {"step": 1}


def test_failed_torch_write_with_space_left_says_so(tmp_path, monkeypatch):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    monkeypatch.setattr(torch, "save", lambda obj, tmp: real_save(obj, "/dev/full"))
    monkeypatch.setattr(files.shutil, "disk_usage", lambda _: SimpleNamespace(free=10**12))
    with pytest.raises(L2LError, match="torch could not write the file") as info:
        RunDir(tmp_path / "r", {}).save_checkpoint({"step": 1}, 1)
    assert "disk is full" not in str(info.value)
    assert not list((tmp_path / "r" / "checkpoints").iterdir())


def test_other_write_errors(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "good")

    def denied(tmp):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp))

    with pytest.raises(L2LError, match=r"Permission denied.*fix that"):
        atomic_write(target, denied)

    def bug(tmp):
        raise ValueError("a bug, not a failed write")

    with pytest.raises(ValueError, match="a bug"):  # propagates unchanged
        atomic_write(target, bug)
    assert target.read_text() == "good" and list(tmp_path.iterdir()) == [target]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "good")

    class Boom(Exception):
        pass

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


def test_run_loop_records_and_resumes_the_tensorboard_step(tmp_path):
    run = RunDir(tmp_path / "r", {})
    with RunLoop(run, resume=True) as loop:  # nothing to resume yet: a fresh start
        assert loop.state is None and loop.tb_step == 0
        loop.log({"a": 1.0}, 0)
        loop.checkpoint({"x": torch.ones(1)}, 0, tb_step=7)
    with RunLoop(run, resume=True) as loop:
        assert loop.tb_step == 7 and torch.equal(loop.state["x"], torch.ones(1))
    # a checkpoint written before tb_step was recorded: the mode computes it
    run.save_checkpoint({"epoch": 2}, 1)
    assert RunLoop(run, resume=True, legacy_tb_step=lambda s: 10 * (s["epoch"] + 1)).tb_step == 30
    with pytest.raises(RuntimeError, match="only inside"):
        RunLoop(run, resume=False).log({"a": 1.0}, 0)


def test_a_report_is_never_overwritten_unasked(tmp_path, capsys):
    stem = tmp_path / "out" / "report"
    assert report_paths(stem, force=False) == (stem.with_suffix(".json"), stem.with_suffix(".md"))
    write_report(stem, {"a": 1}, "| a |\n")
    assert json.loads(stem.with_suffix(".json").read_text()) == {"a": 1}
    assert stem.with_suffix(".md").read_text() == capsys.readouterr().out == "| a |\n"
    stem.with_suffix(".json").unlink()  # either file is enough to refuse
    with pytest.raises(L2LError, match=r"report\.md exists: pass --force to overwrite it"):
        report_paths(stem, force=False)
    assert report_paths(stem, force=True)
