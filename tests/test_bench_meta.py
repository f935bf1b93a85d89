"""scripts/bench_meta.py: meta-training runs, then cells, as sweep jobs; results gathered; a re-run skips."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_meta.py"
spec = importlib.util.spec_from_file_location("bench_meta", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_quick_setting_runs_as_jobs_and_is_gathered_then_skipped(tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["--quick", "--only", "variant-cleangrad", "--eval-subset", "20", "--out", str(out),
            "--runs-dir", str(runs), "--jobs", "1", "--no-progress"]
    assert bench.main(args) == 0
    assert (out / "optimizers" / "mnist-mlp-fgsm-eps0.1-cleangrad.pt").is_file()
    cells = json.loads((out / "cells.json").read_text())
    assert sorted(k.split("|")[6] for k in cells) == ["adam_clean", "learned_clean", "pgd_at"]
    [entry] = json.loads((out / "transfer.json").read_text())["settings"]
    assert entry["name"] == "variant-cleangrad"
    assert all((runs / "cells" / k.replace("|", "_") / "cell.json").is_file() for k in cells)
    capsys.readouterr()
    assert bench.main(args) == 0  # everything is found done: no job runs
    assert "done in" not in capsys.readouterr().out
    assert json.loads((out / "cells.json").read_text()) == cells
