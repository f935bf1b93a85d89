"""scripts/bench_td3_batch.py: a tiny side-by-side measurement, and its refusals."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_td3_batch.py"
spec = importlib.util.spec_from_file_location("bench_td3_batch", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_tiny_measurement_and_refusals(tmp_path: Path, capsys) -> None:
    args = ["--task", "hopper", "--batch-sizes", "64,16", "--warmup", "100", "--chunk", "50",
            "--repeats", "2", "--output-dir", str(tmp_path)]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "hopper-td3-batch.json").read_text())
    assert set(result["median"]) == {"64", "16"}
    assert all(len(r) == 2 and min(r) > 0 for r in result["steps_per_s"].values())
    table = (tmp_path / "hopper-td3-batch.md").read_text()
    assert "| 64 |" in table and "| 1.00x |" in table
    capsys.readouterr()
    assert bench.main(args) == 2  # results exist: refused without --force
    assert "pass --force" in capsys.readouterr().err
    assert bench.main(["--task", "inverted-pendulum", "--output-dir", str(tmp_path)]) == 2
    assert "not td3" in capsys.readouterr().err
