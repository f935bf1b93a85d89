"""scripts/gail_normaliser_rows.py: which rows enter the generator's observation statistics."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from l2l_gail.errors import L2LError
from l2l_gail.gail.config import GAILConfig
from l2l_gail.gail.factory import prepare

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gail_normaliser_rows.py"
spec = importlib.util.spec_from_file_location("gail_normaliser_rows", SCRIPT)
diag = importlib.util.module_from_spec(spec)
spec.loader.exec_module(diag)


def test_every_discriminator_batch_enters_the_generators_statistics(tmp_path):
    # imitation evaluates the policy on each discriminator batch in training mode (see the script)
    config = prepare(GAILConfig(task="inverted-pendulum", timesteps=1_000_000, seed=0, obs_norm=True)).config
    rows = diag.rows_per_round("inverted-pendulum", {"method": "gail"})
    assert rows["train_disc"] == 2 * config.demo_batch_size * config.n_disc_updates_per_round
    assert rows["total"] == rows["train_disc"] + config.ppo["n_epochs"] * rows["rollout_steps"]
    assert rows["other_disc_batches"] == 0
    out = tmp_path / "rows"
    assert diag.main(["--task", "inverted-pendulum", "--output", str(out)]) == 0
    saved = json.loads(out.with_suffix(".json").read_text())["rows_per_round"]
    assert saved["gail"] == rows and saved["l2l-v2"]["other_disc_batches"] > 0  # its held-out batches
    assert "| gail |" in out.with_suffix(".md").read_text()
    with pytest.raises(L2LError, match="exists: pass --force"):
        diag.main(["--task", "inverted-pendulum", "--output", str(out)])


@pytest.mark.parametrize("options", [{"method": "gail"}, diag.METHODS["l2l-v2"]])
def test_without_the_pass_only_ppos_update_enters_the_statistics(options):
    rows = diag.rows_per_round("inverted-pendulum", {**options, "gen_norm_disc_batches": False})
    config = prepare(GAILConfig(task="inverted-pendulum", timesteps=1_000_000, seed=0)).config
    assert rows["train_disc"] == rows["other_disc_batches"] == 0
    assert rows["total"] == rows["ppo_update"] == config.ppo["n_epochs"] * rows["rollout_steps"]
