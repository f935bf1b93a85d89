"""scripts/bench_vision.py: its cells run as sweep jobs (one process each) and a re-run skips them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_vision.py"
spec = importlib.util.spec_from_file_location("bench_vision", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_tiny_benchmark_runs_its_cells_as_jobs_then_skips_them(tmp_path, capsys):
    args = ["--dataset", "synthetic", "--methods", "standard", "--seeds", "0", "--train-size", "64",
            "--epochs", "1", "--width", "2", "--eval-n", "16", "--aa-n", "4", "--aa-version", "fast",
            "--restarts", "1", "--jobs", "1", "--runs-dir", str(tmp_path / "runs"),
            "--output", str(tmp_path / "out.json")]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert list(result["methods"]) == ["standard"] and result["dataset"] == "synthetic"
    run = tmp_path / "runs" / "standard" / "seed0"
    assert (run / "bench_eval.json").is_file() and (run / "metrics.json").is_file()
    log = (tmp_path / "runs" / "standard" / "seed0.log").read_text()
    assert "--run-cell standard:0" in log and f"--attacker-width {result['attacker_width']!r}" in log
    capsys.readouterr()
    assert bench.main(args) == 0
    assert "standard/seed0: finished, skipped" in capsys.readouterr().out
