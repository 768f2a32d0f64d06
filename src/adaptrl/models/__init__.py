"""Learned dynamics ensembles for model-based RL (thesis §4.2, §5.2.1; docs/model-based.md).

K members live in one parameter pytree with a leading member axis and are evaluated in one
``vmap``. Each member is an MLP on z-scored ``(s, a)`` predicting the z-scored state change, so
``s' = s + f_k(s, a)`` with ``f_k = μ_Δ + σ_Δ·MLP_k(x̂)``; members differ in initialisation, data
split and minibatch order. :mod:`~adaptrl.models.ensemble` defines the model and its loss,
:mod:`~adaptrl.models.training` fits it (Adam, rolling-average early stopping, one jitted call per
epoch), :mod:`~adaptrl.models.buffer` holds the real transitions (FIFO) and
:mod:`~adaptrl.models.diagnostics` measures model bias (k-step open-loop errors).
"""

from adaptrl.models.buffer import TransitionBuffer, add_transitions, buffer_contents, empty_buffer
from adaptrl.models.diagnostics import k_step_errors
from adaptrl.models.ensemble import (
    EnsembleParams,
    EnsembleSpec,
    Normalization,
    init_ensemble,
    member,
    member_loss,
    next_obs,
    next_obs_all,
    normalization,
    predict_delta,
    soft_bound_logvar,
    weight_norm_kernel,
)
from adaptrl.models.training import (
    FitReport,
    FitSettings,
    ModelTrainState,
    fit,
    init_model_state,
    rolling_stop,
)

__all__ = [
    "EnsembleParams",
    "EnsembleSpec",
    "FitReport",
    "FitSettings",
    "ModelTrainState",
    "Normalization",
    "TransitionBuffer",
    "add_transitions",
    "buffer_contents",
    "empty_buffer",
    "fit",
    "init_ensemble",
    "init_model_state",
    "k_step_errors",
    "member",
    "member_loss",
    "next_obs",
    "next_obs_all",
    "normalization",
    "predict_delta",
    "rolling_stop",
    "soft_bound_logvar",
    "weight_norm_kernel",
]
