"""The shared learned inner optimizers (DESIGN.md, "The shared core"); no task code here."""

from l2l_gail.core.attacker import LearnedAttacker, WideAttacker, input_gradient
from l2l_gail.core.lstm_optimizer import (
    LearnedOptimizer,
    LookaheadStats,
    LSTMOptimizer,
    LSTMOptimizerConfig,
    MetaStepStats,
    Params,
    State,
    UnrollResult,
    UpdateStats,
    detach_state,
    lookahead_step,
    meta_step,
    trainable_params,
    unroll,
    write_params,
)
from l2l_gail.core.preprocess import preprocess_gradients

__all__ = [
    "LSTMOptimizer",
    "LSTMOptimizerConfig",
    "LearnedAttacker",
    "LearnedOptimizer",
    "LookaheadStats",
    "MetaStepStats",
    "Params",
    "State",
    "UnrollResult",
    "UpdateStats",
    "WideAttacker",
    "detach_state",
    "input_gradient",
    "lookahead_step",
    "meta_step",
    "preprocess_gradients",
    "trainable_params",
    "unroll",
    "write_params",
]
