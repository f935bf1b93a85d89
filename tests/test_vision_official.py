"""The official code's details as options of the vision mode, and the evaluation that does not flatter.

Generated data of MNIST's shape (1x28x28, 10 classes); tiny models, a few steps.
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_problems import clean_small_cnn

from l2l_gail.core.attacker import LearnedAttacker
from l2l_gail.errors import L2LError
from l2l_gail.robust import data as D
from l2l_gail.robust import evaluate as E
from l2l_gail.robust.attacks import FGSM, PGD, build_attack
from l2l_gail.robust.models import build_model
from l2l_gail.runs import RunDir, safe_torch_load
from l2l_gail.vision import train as T
from l2l_gail.vision.methods import build_method, official_attacker_init

EPS = 0.1
ATTACK_EPS = 0.05  # the fixture classifier: 97% clean, about 15% under PGD-10 at this radius


@pytest.fixture(scope="module")
def mnist_like() -> D.ImageData:
    return D.synthetic((1, 28, 28), num_classes=10, train_size=512, test_size=64, seed=3)


@pytest.fixture(scope="module")
def classifier(mnist_like):
    """A small CNN trained briefly on clean data: the fixed classifier the attacks face."""
    return clean_small_cnn(mnist_like.train_x, mnist_like.train_y, channels=1, classes=10, width=4,
                           image_size=28)


def _bn_batches_tracked(model: torch.nn.Module) -> int:
    return int(next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).num_batches_tracked)


@pytest.mark.parametrize("name", ["l2l-grad", "l2l-2step"])
def test_train_mode_grad_updates_bn_running_stats_with_the_clean_batch(mnist_like, name):
    x, y = D.to_float(mnist_like.train_x[:32]), mnist_like.train_y[:32]
    seen = {}
    for train_mode in (False, True):
        torch.manual_seed(0)
        model = build_model("preact-resnet18", 1, 10, width=2).train()
        method = build_method(name, eps=EPS, channels=1, attacker_width=0.05, train_mode_grad=train_mode)
        before = model.bn.running_mean.clone()
        method.loss(model, x, y)
        seen[train_mode] = (_bn_batches_tracked(model), model.bn.running_mean.clone(), before)
        assert model.training  # the caller's mode is left as it was
    steps = 1 if name == "l2l-grad" else 2
    # eval mode: only the classifier's own forward on x_adv moves the statistics; train mode: every
    # input-gradient forward of the attacker's steps (the clean batch first) does too
    assert seen[False][0] == 1
    assert seen[True][0] == 1 + steps
    assert not torch.equal(seen[True][1], seen[False][1])


def test_att_iter_takes_that_many_attacker_steps_per_classifier_step(mnist_like):
    x, y = D.to_float(mnist_like.train_x[:16]), mnist_like.train_y[:16]
    model = build_model("small-cnn", 1, 10, width=4, image_size=28)
    for att_iter in (1, 3):
        method = build_method("l2l-grad", eps=EPS, channels=1, attacker_width=0.05, att_iter=att_iter)
        stats = method.after_step(model, x, y)
        opt = method.attacker.optimizer
        assert {int(s["step"]) for s in opt.state.values()} == {att_iter}
        assert set(stats) == {"attacker_loss"}
    with pytest.raises(L2LError, match="att-iter"):
        build_method("l2l-grad", eps=EPS, channels=1, att_iter=0)


def _saturated(attacker: LearnedAttacker, x: torch.Tensor) -> float:
    inp = torch.cat([x, torch.randn_like(x).sign() * torch.rand_like(x)], 1)  # image + a gradient-like input
    with torch.no_grad():
        out = attacker.net(inp) / attacker.eps
    return float((out.abs() > 0.9).float().mean())


@pytest.mark.parametrize("seed", range(3))
def test_official_init_starts_far_less_saturated(mnist_like, seed):
    # over 5 seeds and widths 0.041 .. 1: ours 31-50% saturated, official 0.1-4%
    x = D.to_float(mnist_like.train_x[:64])
    frac = {}
    for init in ("ours", "official"):
        torch.manual_seed(seed)
        method = build_method("l2l-grad", eps=EPS, channels=1, attacker_width=0.125, attacker_init=init)
        frac[init] = _saturated(method.attacker, x)
    assert frac["official"] < 0.1 < 0.2 < frac["ours"]
    with pytest.raises(L2LError, match="attacker-init"):
        build_method("l2l-grad", eps=EPS, channels=1, attacker_init="xavier")


def test_official_init_keeps_the_optimizer_on_the_same_parameters():
    attacker = LearnedAttacker(1, EPS, width=0.05)
    ids = {id(p) for g in attacker.optimizer.param_groups for p in g["params"]}
    head = attacker.net.head[-1]
    bound = 1 / (head.in_channels * 9) ** 0.5
    official_attacker_init(attacker.net)
    assert ids == {id(p) for p in attacker.net.parameters()}
    assert float(head.weight.detach().abs().max()) <= bound  # PyTorch's default: U(+-1/sqrt(fan_in))


def test_validation_split_is_disjoint_and_keeps_the_training_images(mnist_like):
    sub = mnist_like.subset(100, None, seed=5)
    data, (vx, vy) = mnist_like.validation_split(100, 40, seed=5)
    assert torch.equal(data.train_x, sub.train_x) and torch.equal(data.test_x, mnist_like.test_x)
    assert len(vy) == 40
    rows = {bytes(r.numpy()) for r in data.train_x.flatten(1)}
    assert not rows & {bytes(r.numpy()) for r in vx.flatten(1)}
    whole, (wx, _) = mnist_like.validation_split(None, 40, seed=5)
    assert len(whole.train_y) == len(mnist_like.train_y) - 40 and len(wx) == 40
    with pytest.raises(L2LError, match="val-size"):
        mnist_like.validation_split(480, 40, seed=5)


def test_best_epoch_is_chosen_on_the_validation_split_and_both_are_recorded(tmp_path, monkeypatch):
    config = T.VisionConfig(dataset="synthetic", synthetic_shape="1x28x28", train_subset=96, eval_subset=16,
                            model="small-cnn", width=4, method="fgsm-rs", epochs=3, batch_size=32,
                            lr=0.05, val_size=24, device="cpu")
    _, (vx, _) = T.load_data_and_validation(config)
    calls: list[torch.Tensor] = []
    real = T.evaluate

    def spy(model, x, y, attacks, **kw):
        calls.append(x)
        return real(model, x, y, attacks, **kw)

    monkeypatch.setattr(T, "evaluate", spy)
    run = RunDir(tmp_path / "run", {"x": 1})
    m = T.train(config, run, progress=False)
    # per epoch: the test-subset curve, then the validation split -- which is what selects
    assert len(calls) == 2 * config.epochs
    assert all(torch.equal(c, vx) for c in calls[1::2])
    accs = [h["val_pgd_acc"] for h in m["history"]]
    assert m["best_epoch"] == max(i for i, a in enumerate(accs) if a == max(accs))
    best = m["history"][m["best_epoch"]]
    assert m["best_test_pgd10_acc"] == best["test_pgd_acc"]
    assert m["final_test_pgd10_acc"] == m["history"][-1]["test_pgd_acc"]
    blob = safe_torch_load(run.path / "model-best.pt")
    assert blob["epoch"] == m["best_epoch"] and safe_torch_load(run.path / "model.pt")["epoch"] == 2
    assert json.loads((run.path / "metrics.json").read_text())["best_model"] == "model-best.pt"
    model, _, _ = T.load_classifier(run.path / "model-best.pt")
    assert isinstance(model, torch.nn.Module)


def test_worst_iterate_restarts_break_every_example_a_single_run_breaks(mnist_like, classifier):
    x, y = D.to_float(mnist_like.test_x), mnist_like.test_y
    torch.manual_seed(7)
    single = PGD(ATTACK_EPS, 10)(classifier, x, y)
    torch.manual_seed(7)  # the same first random start
    worst = PGD(ATTACK_EPS, 10, restarts=3, worst_iterate=True)(classifier, x, y)
    with torch.no_grad():
        ok_single, ok_worst = classifier(single).argmax(1) == y, classifier(worst).argmax(1) == y
    assert not ok_single.all()  # the attack breaks some examples: the next line is not vacuous
    assert not (ok_worst & ~ok_single).any()
    assert (worst - x).abs().max() <= ATTACK_EPS + 1e-6 and worst.min() >= 0 and worst.max() <= 1
    assert build_attack("pgd50x5", EPS).name == "pgd50x5"
    assert build_attack("apgd", EPS).name == "apgd"


def test_worst_case_is_below_every_attack_also_on_prefixes(mnist_like, classifier):
    x, y = mnist_like.test_x, mnist_like.test_y
    torch.manual_seed(0)
    attacks = [FGSM(ATTACK_EPS), PGD(ATTACK_EPS, 5, restarts=2, worst_iterate=True), PGD(ATTACK_EPS, 10)]
    sizes = {"pgd10": 20}
    correct, _ = E.evaluate_per_example(classifier, x, y, attacks, batch_size=16, subset_sizes=sizes)
    assert len(correct["pgd10"]) == 20 and len(correct["fgsm"]) == len(y)
    worst = E.worst_case(correct)
    for flags in correct.values():
        assert not (worst[: len(flags)] & ~flags).any()
    torch.manual_seed(0)
    out = E.evaluate(classifier, x, y, attacks, batch_size=16, subset_sizes=sizes)
    assert out["pgd10_n"] == 20 and out["n"] == len(y)
    assert out["worst_case_acc"] <= min(out["clean_acc"], out["fgsm_acc"], out["pgd5x2_acc"])
    assert out["worst_case_acc_first_20"] <= out["pgd10_acc"]


def test_robust_evaluation_combines_pgd_apgd_and_autoattack(mnist_like, classifier):
    out = E.robust_evaluation(classifier, mnist_like.test_x[:12], mnist_like.test_y[:12], ATTACK_EPS,
                              pgd_steps=3, pgd_restarts=2, autoattack_n=4, batch_size=12)
    assert out["autoattack_n"] == 4 and out["n"] == 12
    assert out["worst_case_acc"] <= min(out["pgd3x2_acc"], out["apgd_acc"])
    assert out["worst_case_acc_first_4"] <= out["autoattack_acc"]
    with pytest.raises(L2LError):
        E.robust_evaluation(classifier, mnist_like.test_x[:4], mnist_like.test_y[:4], ATTACK_EPS,
                            pgd_restarts=0)


def test_eval_config_autoattack_subset(tmp_path):
    config = T.VisionConfig(dataset="synthetic", synthetic_shape="1x28x28", train_subset=32, eval_subset=8,
                            model="small-cnn", width=2, method="standard", epochs=1, batch_size=32,
                            device="cpu")
    run = RunDir(tmp_path / "run", {"x": 1})
    T.train(config, run, progress=False)
    out = T.evaluate_checkpoint(run.path, T.EvalConfig(attacks="fgsm,pgd3x2,apgd,autoattack", test_subset=10,
                                                       autoattack_subset=3, autoattack_version="fast"))
    assert out["autoattack_n"] == 3 and out["n"] == 10 and "worst_case_acc_first_3" in out
    with pytest.raises(L2LError, match="autoattack-subset"):
        T.EvalConfig(autoattack_subset=0).validate()


def test_cli_trains_with_the_official_options_and_evaluates_both_checkpoints(tmp_path, capsys):
    from l2l_gail.cli import main

    args = ["vision", "train", "--dataset", "synthetic", "--synthetic-shape", "1x28x28", "--model",
            "small-cnn", "--width", "4", "--method", "l2l-grad", "--epochs", "2", "--train-subset", "96",
            "--val-size", "32", "--eval-subset", "16", "--attacker-width", "0.05", "--attacker-init",
            "official", "--train-mode-grad", "--att-iter", "2", "--no-progress", "--runs-dir", str(tmp_path),
            "--name", "o"]
    assert main(args) == 0
    assert "best epoch by validation PGD-10 (32 training images held out)" in capsys.readouterr().out
    run = tmp_path / "vision" / "o"
    for model in ("model.pt", "model-best.pt"):
        assert main(["vision", "eval", str(run / model), "--attacks", "pgd5x2,fgsm", "--test-subset", "12",
                     "--no-progress"]) == 0
        assert "pgd5x2_acc" in capsys.readouterr().out
    assert main([*args[:-1], "p", "--attacker-init", "xavier"]) == 2
    assert "--attacker-init must be one of ours, official" in capsys.readouterr().err
