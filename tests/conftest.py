"""Shared test settings and fixtures.

The suite runs on one torch thread (it must stay fast and deterministic on 2 cores).
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """Commands under test pin torch to their ``--threads``: every test leaves the thread count
    as it found it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- GAIL trainers
GAIL_TRAINERS = ("gail", "gail-gp", "l2l-gail", "l2l-gail-both", "sign-sgd", "l2l-frozen", "adam-matched",
                 "l2l-adam-norm", "l2l-ttur", "l2l-logit", "l2l-kl", "l2l-next-round")
"""The trainers of ``l2l_gail.gail.methods`` as the GAIL tests build them: ``l2l-gail-both`` is
the L2L-GAIL trainer with the learned policy optimizer (``L2LPPO``) as its generator; the others
after it are the controls and v2 configurations of :data:`L2L_OPTIONS` and ``sign-sgd``."""
L2L_OPTIONS: dict[str, dict[str, Any]] = {
    "l2l-frozen": {"meta_lr": 0.0},
    "adam-matched": {"step_direction": "adam"},
    "l2l-adam-norm": {"step_norm": "adam"},
    "l2l-ttur": {"step_norm": "ttur"},
    "l2l-logit": {"constraint": "logit", "budget": 0.01},
    "l2l-kl": {"constraint": "kl", "budget": 1e-4},
    "l2l-next-round": {"heldout": "next-round"},
}
"""``L2LGAILTrainer``'s options of each of its named configurations in :data:`GAIL_TRAINERS`."""


@pytest.fixture(params=GAIL_TRAINERS)
def gail_method(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over :data:`GAIL_TRAINERS`."""
    return str(request.param)


def energy_pumping(obs: Any, states: Any, episode_starts: Any) -> tuple[Any, None]:
    """The Pendulum-v1 "expert" of the GAIL trainer tests: full torque along the angular
    velocity, which pumps energy into the swing (an imitation ``PolicyCallable``)."""
    import numpy as np

    return np.where(obs[:, 2:3] >= 0, 2.0, -2.0).astype(np.float32), None


@pytest.fixture(scope="session")
def pendulum_demos() -> Any:
    """400 Pendulum-v1 transitions of :func:`energy_pumping`."""
    import gymnasium as gym
    import numpy as np
    from imitation.data import rollout
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    venv.seed(0)
    try:
        return rollout.generate_transitions(energy_pumping, venv, n_timesteps=400,
                                            rng=np.random.default_rng(0))
    finally:
        venv.close()


@pytest.fixture
def make_gail_trainer(pendulum_demos: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Builds a small trainer of one of :data:`GAIL_TRAINERS` on Pendulum-v1, the way
    ``l2l_gail.gail.factory.build`` does (PPO generator, discriminator with input normalisation,
    learned optimizers started from the Adam clone): ``make_gail_trainer(method, seed=0,
    demo_batch_size=16, disc_lr=1e-3, **trainer_kwargs)``. Seeds torch's global RNG with ``seed`` first, so
    two calls build identical trainers."""
    import gymnasium as gym
    import numpy as np
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util import logger, networks
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from l2l_gail.gail.methods import GAILGPTrainer, GAILTrainer, L2LGAILTrainer
    from l2l_gail.gail.phi_init import adam_clone
    from l2l_gail.gail.policy import L2LPPO, LookaheadPolicyOptimizer
    from l2l_gail.gail.steps import SignSGD

    venvs = []

    def make(method: str, *, seed: int = 0, demo_batch_size: int = 16, disc_lr: float = 1e-3,
             **kwargs: Any) -> Any:
        torch.manual_seed(seed)
        venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
        venv.seed(seed)
        venvs.append(venv)
        policy_kwargs: dict[str, Any] = {"net_arch": [16, 16]}
        algo: type[PPO] = PPO
        if method == "l2l-gail-both":
            algo = L2LPPO
            policy_kwargs.update(optimizer_class=LookaheadPolicyOptimizer,
                                 optimizer_kwargs={"learned": adam_clone()[0]})
        gen_algo = algo("MlpPolicy", venv, n_steps=32, batch_size=16, n_epochs=2, seed=seed,
                        device="cpu", policy_kwargs=policy_kwargs)
        common = {"demonstrations": pendulum_demos, "rng": np.random.default_rng(seed),
                  "demo_batch_size": demo_batch_size, "venv": venv, "gen_algo": gen_algo,
                  "reward_net": BasicRewardNet(venv.observation_space, venv.action_space,
                                               normalize_input_layer=networks.RunningNorm),
                  "custom_logger": logger.configure(str(tmp_path / f"log{len(venvs)}"), format_strs=[]),
                  **kwargs}
        if method == "gail":
            return GAILTrainer(disc_opt_kwargs={"lr": disc_lr}, **common)
        if method == "gail-gp":
            return GAILGPTrainer(gp_coef=10.0, disc_opt_kwargs={"lr": disc_lr}, **common)
        if method == "sign-sgd":
            return GAILTrainer(disc_opt_cls=SignSGD, disc_opt_kwargs={"lr": disc_lr}, **common)
        options = {"meta_lr": 1e-3, **L2L_OPTIONS.get(method, {})}
        return L2LGAILTrainer(learned=adam_clone()[0], disc_lr=disc_lr, **options, **common)

    yield make
    for venv in venvs:
        venv.close()
