"""The studies of ``adaptrl gradients`` from their settings: the meta-gradient study at fresh or
checkpointed parameters (:func:`adaptrl.analysis.gradients.gradient_study`), and gradient
statistics logged along meta-training. The ProMP Fig. 6 study is
:func:`adaptrl.analysis.directions.directions_study`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adaptrl.analysis.gradients import ESTIMATOR_SPECS, StudyResult
from adaptrl.errors import ConfigError
from adaptrl.experiment.config import build_config
from adaptrl.experiment.evaluation import load_run
from adaptrl.experiment.trainer import train
from adaptrl.meta.config import TrainConfig


def train_with_gradient_stats(algo: str, env: str, *, every: int, batches: int, iterations: int,
                              seed: int = 0, preset: str = "default",
                              overrides: Mapping[str, Any] | None = None, out: str | Path | None = None,
                              show_progress: bool = True) -> Path:
    """Meta-train ``algo`` on ``env`` logging ``Meta-GradientRStd`` (from ``batches`` resampled
    batches) every ``every`` iterations; returns the run directory (default
    ``runs/ALGO-ENV-gradstats-seedN``)."""
    values = {**(overrides or {}), "grad_stats_every": every, "grad_stats_batches": batches,
              "iterations": iterations, "seed": seed}
    config = build_config(algo, env, preset=preset, overrides=values)
    run_dir = Path(out or f"runs/{config.algo}-{config.env}-gradstats-seed{config.seed}")
    train(config, run_dir, show_progress=show_progress)
    return run_dir


def checkpoint_policy_params(run_dir: str | Path, config: TrainConfig) -> Any:
    """The policy parameters of ``run_dir``'s latest checkpoint; a :class:`ConfigError` unless the
    run trained the same policy architecture on the same env as ``config``."""
    run_config, state, _ = load_run(run_dir)
    if (run_config.env, tuple(run_config.hidden_sizes), run_config.policy) != \
            (config.env, tuple(config.hidden_sizes), config.policy):
        raise ConfigError(f"{run_dir} trained {run_config.policy} {run_config.hidden_sizes} "
                          f"on {run_config.env}; the study uses {config.policy} {config.hidden_sizes} on "
                          f"{config.env}. Pass the same --env and --set hidden_sizes=….")
    return state.meta_params["policy"]


def study_setup(algo: str, env: str, *, seed: int = 0, preset: str = "default",
                overrides: Mapping[str, Any] | None = None,
                checkpoint: str | Path | None = None) -> tuple[TrainConfig, Any]:
    """The study's base configuration and its policy parameters (None: the fresh initialisation;
    else ``checkpoint``'s, see :func:`checkpoint_policy_params`)."""
    base = build_config(algo, env, preset=preset, overrides={**(overrides or {}), "seed": seed})
    policy_params = checkpoint_policy_params(checkpoint, base) if checkpoint else None
    return base, policy_params


def study_steps(estimators: Sequence[str], batch_sizes: Sequence[int], num_batches: int, *,
                cv_warmup: int = 5, truth_rollouts: int = 0, truth_batches: int = 4) -> int:
    """How many progress ticks :func:`~adaptrl.analysis.gradients.gradient_study` reports with these
    settings (one per sampled batch, meta control-variate warm-up batches included)."""
    per_size = sum(num_batches + (cv_warmup if ESTIMATOR_SPECS.get(name, {}).get("control_variate") == "meta"
                                  else 0) for name in estimators)
    return len(batch_sizes) * per_size + (truth_batches if truth_rollouts else 0)


def result_columns(result: StudyResult) -> list[str]:
    """The columns worth showing of ``result.rows``: the truth columns only with a ground truth, the
    control-variate column only when some estimator has one."""
    with_cv = any(math.isfinite(r["cv_explained_variance"]) for r in result.rows)
    return (["estimator", "batch_size", "rsd", "rsd_se", "rsd_coordinate", "cos_to_mean"]
            + (["pearson", "cos_truth"] if result.truth else [])
            + (["cv_explained_variance"] if with_cv else []))
