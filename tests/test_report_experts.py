"""scripts/report_experts.py: the training summary of an expert run, the table, no overwrite."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "report_experts.py"
spec = importlib.util.spec_from_file_location("report_experts", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def fake_run(runs_dir: Path, task: str, curve: list[tuple[int, float]], seconds_per_eval: float) -> None:
    """A run directory as `l2l expert train` leaves it: config.yaml and the evaluation history."""
    ckpt = runs_dir / "expert" / task / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt.parent / "config.yaml").write_text(yaml.safe_dump(
        {"task": task, "seed": 3, "expert": {"algo": "td3", "hyperparams": {"batch_size": 100}}}))
    history = [{"timesteps": t, "mean_return": r, "std_return": 1.0, "unix_time": 1000 + i * seconds_per_eval}
               for i, (t, r) in enumerate(curve)]
    (ckpt / "history.json").write_text(json.dumps(history))


def test_summary_table_and_no_overwrite(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    # walker2d's threshold is 3500: first reached at 60k (not at the 3499.9 before it)
    fake_run(runs, "walker2d", [(20_000, 400.0), (40_000, 3499.9), (60_000, 3600.0), (80_000, 3550.0)], 200.0)
    out = tmp_path / "out"
    assert report.main(["--runs-dir", str(runs), "--output-dir", str(out)]) == 0
    result = json.loads((out / "experts.json").read_text())["tasks"]
    walker = result["walker2d"]["training"]
    assert walker["steps_to_threshold"] == 60_000
    assert (walker["best_eval_return"], walker["best_eval_timesteps"]) == (3600.0, 60_000)
    assert walker["env_steps_per_s"] == 60_000 / 600.0 and walker["seed"] == 3
    assert result["ant"]["training"] is None  # no run directory
    assert result["hopper"]["shipped"]["episodes"] == 50  # from the shipped manifest
    table = (out / "experts.md").read_text()
    walker_row = next(line for line in table.splitlines() if line.startswith("| walker2d"))
    assert "| 60,000 | 3600 |" in walker_row and "| 100 |" in walker_row
    # a second run refuses to overwrite and leaves the results as they were
    capsys.readouterr()
    assert report.main(["--runs-dir", str(runs), "--output-dir", str(out)]) == 2
    assert "exists: pass --force" in capsys.readouterr().err
    assert (out / "experts.md").read_text() == table
