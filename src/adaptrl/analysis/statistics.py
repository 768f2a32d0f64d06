"""Statistics of a set of gradient estimates: relative standard deviation, its bootstrap error,
cosines and Pearson correlation with a ground truth (docs/reproductions.md defines each).

Pure numpy; used during training (``grad_stats_every``) and by the gradient studies
(:mod:`adaptrl.analysis.gradients`). All std's use B − 1 degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from adaptrl.errors import ConfigError


def flatten(tree: Any) -> np.ndarray:
    """All leaves of a pytree as one float64 vector (fixed leaf order)."""
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(tree)])


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two vectors across their coordinates."""
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else math.nan


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else math.nan


def relative_std(grads: np.ndarray) -> float:
    """RSD = √(Σ_j Var_b[ĝ_{b,j}]) / ‖mean_b ĝ_b‖ of ``grads`` ``[B, P]`` (docs/reproductions.md)."""
    norm = float(np.linalg.norm(grads.mean(axis=0)))
    return math.sqrt(float(grads.var(axis=0, ddof=1).sum())) / norm if norm > 0 else math.nan


def bootstrap_se(grads: np.ndarray, statistic: Callable[[np.ndarray], float], resamples: int = 200,
                 seed: int = 0) -> float:
    """Standard error of ``statistic`` by resampling the B batches with replacement (fixed seed,
    so a study is reproducible). With few batches the RSD is itself noisy: ‖mean‖ is inflated by
    the noise (E‖ḡ‖² = ‖g‖² + ΣVar/B), so compare rows only beyond this error."""
    rng = np.random.default_rng(seed)
    b = grads.shape[0]
    values = [statistic(grads[rng.integers(0, b, b)]) for _ in range(resamples)]
    values = np.asarray([v for v in values if np.isfinite(v)])
    return float(values.std(ddof=1)) if values.size > 1 else math.nan


def gradient_statistics(grads: np.ndarray, truth: np.ndarray | None = None) -> dict[str, float]:
    """Statistics of B gradient estimates ``grads`` ``[B, P]`` (module docstring)."""
    grads = np.asarray(grads, np.float64)
    if grads.ndim != 2 or grads.shape[0] < 2:
        raise ConfigError(f"need at least 2 gradient samples as [B, P], got shape {grads.shape}.")
    mean = grads.mean(axis=0)
    var = grads.var(axis=0, ddof=1)
    norm = float(np.linalg.norm(mean))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_coordinate = np.sqrt(var) / np.abs(mean)
    out = {
        "rsd": relative_std(grads),
        "rsd_se": bootstrap_se(grads, relative_std),
        "rsd_coordinate": float(np.mean(per_coordinate[np.isfinite(per_coordinate)]))
        if np.isfinite(per_coordinate).any() else math.nan,
        "std": math.sqrt(float(var.mean())),
        "mean_norm": norm,
        "cos_to_mean": float(np.mean([cosine(g, mean) for g in grads])),
    }
    if truth is not None:
        truth = np.asarray(truth, np.float64)
        pearsons = [pearson(g, truth) for g in grads]
        out["pearson"] = float(np.mean(pearsons))
        out["pearson_std"] = float(np.std(pearsons, ddof=1))
        out["cos_truth"] = float(np.mean([cosine(g, truth) for g in grads]))
        out["pearson_of_mean"] = pearson(mean, truth)
    return out


def eval_row(step: int, values: np.ndarray) -> dict[str, float]:
    """One row of ``adaptrl eval``: adaptation ``step``, the mean of ``values`` (one return per task
    or episode) with its 95 % Student-t interval (:func:`mean_interval`) and their sample std
    (NaN for a single value)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    mean, low, high = mean_interval(values)
    spread = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return {"step": step, "mean_return": mean, "std_across_tasks": spread, "ci95_low": low, "ci95_high": high}


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student-t confidence interval ``mean ± t_{n−1}·s/√n`` at
    ``level`` (s the sample std, ddof = 1). With one value the interval is undefined: NaN."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64).ravel()
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, mean - half, mean + half
