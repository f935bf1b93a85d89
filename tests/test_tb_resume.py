"""A resumed run's TensorBoard history equals an uninterrupted run's (l2l_gail.runs.RunLoop).

Each run is interrupted after its first checkpoint, in the middle of the next epoch or episode,
after it has logged scalars past that checkpoint: the resumed run must drop them (``purge_step``
at the checkpoint's step, in the mode's step unit) and log them again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import l2l_gail.meta.train as M
import l2l_gail.vision.train as T
from l2l_gail.meta.train import MetaConfig, config_dict, meta_train
from l2l_gail.runs import RunDir
from l2l_gail.vision.train import VisionConfig, train


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float | None]]]:
    """Every scalar in ``tb_dir``, all event files together: tag -> [(step, value)].

    Wall-clock timings are compared by step only (their values differ between any two runs).
    """
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, None if "seconds" in tag else e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def _resume_in_a_new_second() -> None:
    # Event files are named by the second they were opened in: the resumed run's must sort after
    # the interrupted run's, as it does for any real resume.
    time.sleep(1.1)


def test_vision_resumed_history_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 416 / 8 = 52 optimizer steps per epoch, so step/loss (every 50 steps) is logged within the
    # first epoch (step 50) and within the interrupted second one (step 100)
    config = VisionConfig(dataset="synthetic", synthetic_shape="1x8x8", model="small-cnn", width=2,
                          method="standard", epochs=2, batch_size=8, train_subset=416, eval_subset=16,
                          eval_pgd_steps=1, device="cpu")
    full = RunDir(tmp_path / "full", {})
    train(config, full, progress=False)

    real_epoch = T.train_epoch

    def interrupted(model: Any, batches: Any, *args: Any, epoch: int, **kw: Any) -> dict[str, float]:
        def cut() -> Iterator[Any]:
            for i, batch in enumerate(batches):
                if i == 49:  # after global step 52 + 48 = 100 was logged
                    raise KeyboardInterrupt
                yield batch
        return real_epoch(model, cut() if epoch == 1 else batches, *args, epoch=epoch, **kw)

    part = RunDir(tmp_path / "part", {})
    monkeypatch.setattr(T, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, part, progress=False)
    monkeypatch.setattr(T, "train_epoch", real_epoch)
    assert len(part.checkpoints()) == 1
    assert max(s for s, _ in scalars(part.tb_dir)["step/loss"]) == 100  # logged past the checkpoint
    _resume_in_a_new_second()
    train(config, RunDir(tmp_path / "part", {}, resume=True), resume=True, progress=False)
    expected = scalars(full.tb_dir)
    assert [s for s, _ in expected["step/loss"]] == [0, 50, 100]
    assert [s for s, _ in expected["train/loss"]] == [51, 103]  # an epoch's last optimizer step
    assert scalars(part.tb_dir) == expected


def test_meta_resumed_history_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = MetaConfig(dataset="synthetic", width=4, batch_size=16, unroll=2, episode_steps=4, episodes=2,
                        eps_warmup=0, eval_size=16)  # 2 meta-steps per episode
    meta_train(config, RunDir(tmp_path / "full", config_dict(config)), progress=False)

    real_step = M.meta_step
    calls = {"n": 0}

    def interrupted(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:  # the second meta-step of episode 1: step 2 is logged, past the checkpoint
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    part = RunDir(tmp_path / "part", config_dict(config))
    monkeypatch.setattr(M, "meta_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        meta_train(config, part, progress=False)
    monkeypatch.setattr(M, "meta_step", real_step)
    assert len(part.checkpoints()) == 1
    assert max(s for s, _ in scalars(part.tb_dir)["meta/loss"]) == 2
    _resume_in_a_new_second()
    meta_train(config, RunDir(tmp_path / "part", config_dict(config), resume=True), resume=True,
               progress=False)
    expected = scalars(tmp_path / "full" / "tb")
    assert [s for s, _ in expected["meta/loss"]] == [0, 1, 2, 3]
    assert scalars(part.tb_dir) == expected
