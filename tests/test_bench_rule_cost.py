"""scripts/bench_rule_cost.py: the FLOP counts beside the timings, and the report's verdicts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

from l2l_gail.core import LearnedOptimizer, MLPRule, MLPRuleConfig

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_rule_cost.py"
spec = importlib.util.spec_from_file_location("bench_rule_cost", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_step_flops_count_the_pass_and_the_rules_products_per_coordinate():
    model = nn.Linear(6, 3)  # 21 parameters
    x, y = torch.rand(4, 6), torch.randint(0, 3, (4,))
    fwd_bwd, adam = bench.step_flops(model, torch.optim.Adam(model.parameters()), x, y)
    # forward 2 * 4 * 6 * 3, the weight's gradient as much again; the input needs no gradient
    assert (fwd_bwd, adam) == (2 * 2 * 4 * 6 * 3, 0.0)
    config = MLPRuleConfig(hidden_size=3)
    _, rule = bench.step_flops(model, LearnedOptimizer(model.parameters(), learned=MLPRule(config)), x, y)
    # per coordinate: 7 feature rows into two blocks of 3 units, one 3 x 3 hidden layer, 2 outputs;
    # once per step: the time embedding's share of the bias
    assert rule == 21 * 2 * (7 * 2 * 3 + 3 * 3 + 3 * 2) + 2 * len(config.time_scales) * 3


def test_report_states_the_flop_share_and_the_verdicts(tmp_path):
    assert bench.main(["--repeats", "2", "--steps", "1", "--warmup", "1", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "rule_cost.json").read_text())
    text = (tmp_path / "rule_cost.md").read_text()
    for key in ("mlp_optimizee", "small_cnn"):
        row = record["cost"][key]
        flops = row["flops_per_param"]
        assert row["mlp_rule_flop_share"] == flops["mlp_rule"] / flops["fwd_bwd"]
        verdicts = ["met" if row[f"{rule}_ratio"] <= bench.TARGETS[key] else "not met"
                    for rule in ("mlp_rule", "mlp_compact")]
        assert f"<= {bench.TARGETS[key]}: {', '.join(verdicts)} |" in text
    assert "the rule's products alone are 31% of its arithmetic" in text
    # the compact shape: 7 - 2 feature rows into two blocks of 4 units, no 4 x 4 layer, 2 outputs
    assert "| mlp_optimizee | 514 | 0 | 160 | 96 | 31.1% | 18.7% |" in text
