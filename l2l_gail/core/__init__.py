"""The shared learned inner optimizers; no task code here (``docs/design.md``, "core").

Imports only torch, the standard library and :mod:`l2l_gail.errors`, so it can be used alone:

* update rules (functional: parameters in, parameters out): :class:`UpdateRule`, the interface;
  :class:`LSTMRule`, the coordinatewise LSTM ``g_phi``; :class:`MLPRule`, a per-parameter MLP over
  Adam-like features (:mod:`~l2l_gail.core.rule`, :mod:`~l2l_gail.core.lstm_rule`,
  :mod:`~l2l_gail.core.mlp_rule`); their versioned file (:mod:`~l2l_gail.core.rule_file`);
* meta-training helpers (:mod:`~l2l_gail.core.metalearn`): :func:`meta_step`, :func:`unroll`,
  :func:`lookahead_step`;
* the ``torch.optim`` optimizer (:mod:`~l2l_gail.core.optim`): :class:`LearnedOptimizer`;
* the input-space learned optimizer (:mod:`~l2l_gail.core.attacker`): :class:`LearnedAttacker`.

``LSTMOptimizer`` and ``LSTMOptimizerConfig``, the old names of :class:`LSTMRule` and
:class:`LSTMRuleConfig`, still import with a ``DeprecationWarning`` until the next release.
"""

import warnings
from typing import Any

from l2l_gail.core.attacker import LearnedAttacker, WideAttacker, input_gradient
from l2l_gail.core.lstm_rule import LSTMRule, LSTMRuleConfig
from l2l_gail.core.metalearn import (
    LookaheadStats,
    MetaStepStats,
    StepLoss,
    UnrollResult,
    detach_state,
    lookahead_step,
    meta_step,
    trainable_params,
    unroll,
    write_params,
)
from l2l_gail.core.mlp_rule import MLPRule, MLPRuleConfig
from l2l_gail.core.optim import LearnedOptimizer
from l2l_gail.core.preprocess import preprocess_gradients
from l2l_gail.core.rule import Memory, Params, State, UpdateRule, UpdateStats
from l2l_gail.core.rule_file import RULE_NAMES, StepUnits, rule_type

_DEPRECATED = {"LSTMOptimizer": "LSTMRule", "LSTMOptimizerConfig": "LSTMRuleConfig"}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        warnings.warn(f"l2l_gail.core.{name} is deprecated and will be removed in the next "
                      f"release; use l2l_gail.core.{new}", DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "RULE_NAMES",
    "LSTMRule",
    "LSTMRuleConfig",
    "LearnedAttacker",
    "LearnedOptimizer",
    "LookaheadStats",
    "MLPRule",
    "MLPRuleConfig",
    "Memory",
    "MetaStepStats",
    "Params",
    "State",
    "StepLoss",
    "StepUnits",
    "UnrollResult",
    "UpdateRule",
    "UpdateStats",
    "WideAttacker",
    "detach_state",
    "input_gradient",
    "lookahead_step",
    "meta_step",
    "preprocess_gradients",
    "rule_type",
    "trainable_params",
    "unroll",
    "write_params",
]
