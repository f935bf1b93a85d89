#!/usr/bin/env python
"""A few-minute vision demo: standard, PGD-10 and L2L-grad adversarial training side by side.

Trains a small PreActResNet-18 (width 8) on 2,000 Fashion-MNIST images for 3 epochs with each
method (eps 0.1), evaluates clean / FGSM / PGD-20 accuracy on 500 test images, and prints the
table and the TensorBoard command. Each invocation writes a fresh, timestamped experiment
under ``runs/vision/`` so re-running never collides with earlier results.

    make demo-vision        # or: .venv/bin/python scripts/demo_vision.py
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from l2l_gail.robust.attacks import FGSM, PGD
from l2l_gail.robust.evaluate import evaluate
from l2l_gail.runs import DEFAULT_ROOT, RunDir, tensorboard_command
from l2l_gail.vision.train import VisionConfig, load_classifier, train


def main() -> None:
    torch.set_num_threads(2)
    experiment = time.strftime("demo-%Y%m%d-%H%M%S")
    root = Path(DEFAULT_ROOT) / "vision" / experiment
    rows = []
    for method in ("standard", "pgd", "l2l-grad"):
        config = VisionConfig(dataset="fashion-mnist", train_subset=2000, eval_subset=500, width=8,
                              method=method, epochs=3, attacker_width=0.041, seed=0)
        run = RunDir(root / method, dataclasses.asdict(config))
        print(f"training {method} ...", flush=True)
        metrics = train(config, run)
        model, cfg, data = load_classifier(run.path)
        torch.manual_seed(0)
        ev = evaluate(model, data.test_x[:500], data.test_y[:500],
                      [FGSM(cfg.resolved_eps()), PGD(cfg.resolved_eps(), 20, 0.01)])
        rows.append((method, metrics["epoch_seconds_median"], ev))
    print("\n| method | epoch s | clean | FGSM | PGD-20 |\n|---|---|---|---|---|")
    for method, sec, ev in rows:
        print(f"| {method} | {sec:.1f} | {100 * ev['clean_acc']:.1f} | {100 * ev['fgsm_acc']:.1f} | "
              f"{100 * ev['pgd20_acc']:.1f} |")
    print(f"\nruns: {root}\ncurves: {tensorboard_command(root)}")


if __name__ == "__main__":
    main()
