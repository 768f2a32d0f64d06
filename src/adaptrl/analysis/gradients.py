"""Meta-gradient quality: variance across resampled batches and accuracy against a ground truth.

At fixed policy parameters θ (a fresh initialisation, or a run's checkpoint) and a fixed set of
tasks, each estimator's meta-gradient ĝ = ∇_θ mean_i J_i is computed on B independent batches
(fresh trajectories for every adaptation step; same tasks). Per estimator and batch size
(trajectories per task) we report (spec EST-8; ProMP Fig. 4 and TMAML Fig. 2 do not define their
metric, so this is ours):

* ``rsd`` — relative standard deviation √(Σ_j Var_b[ĝ_j]) / ‖mean_b ĝ‖: the total standard
  deviation of the estimate relative to the norm of its mean. Invariant to rescaling the rewards
  and the parameters' units; it is what ``Meta-GradientRStd`` logs during training.
  ``rsd_se`` is its bootstrap standard error over the B batches: with few batches ‖mean‖ carries
  noise (E‖ḡ‖² = ‖g‖² + ΣVar/B), which biases the RSD down and makes it noisy when it is large.
* ``rsd_coordinate`` — mean_j std_b[ĝ_j] / |mean_b ĝ_j|, the per-coordinate ratio averaged over
  coordinates (EST-8's default). Coordinates whose mean is near zero dominate it, so it is noisy.
* ``cos_to_mean`` — mean_b cos(ĝ_b, mean_b ĝ).
* ``pearson`` / ``cos_truth`` — mean_b of the Pearson correlation (and cosine) between ĝ_b and a
  ground-truth meta-gradient g* across parameter coordinates (TMAML Fig. 4). g* is a large-sample
  estimate — the mean of ``truth_batches`` batches of ``truth_rollouts`` trajectories per task of an
  unbiased estimator (DiCE by default); with few, cheap steps (the 1-D envs) it is accurate to a few
  parts in a thousand, which :func:`gradient_study` reports as ``truth_rsd_of_mean``.

All std's use B − 1 degrees of freedom. Resampling uses keys derived from the study's seed.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from adaptrl.errors import ConfigError, unknown_name_error

#: Estimators of the study → composition overrides (on top of a VPG-style base configuration).
ESTIMATOR_SPECS: dict[str, dict[str, Any]] = {
    "maml": dict(inner_estimator="pgt", outer_objective="log_likelihood"),
    "emaml": dict(inner_estimator="pgt", outer_objective="log_likelihood", emaml=True),
    "lvc": dict(inner_estimator="lvc", outer_objective="log_likelihood"),
    "dice": dict(inner_estimator="dice", outer_objective="dice"),
    "dice-cv": dict(inner_estimator="dice", outer_objective="dice", control_variate="meta",
                    cv_formula="corrected"),
    "dice-cv-paper": dict(inner_estimator="dice", outer_objective="dice", control_variate="meta",
                          cv_formula="paper"),
    "dice-task-cv": dict(inner_estimator="dice", outer_objective="dice", control_variate="task",
                         cv_formula="corrected"),
}

ESTIMATOR_LABELS: dict[str, str] = {
    "maml": "MAML (PGT)", "emaml": "E-MAML", "lvc": "LVC", "dice": "DiCE",
    "dice-cv": "DiCE + CV (corrected, meta)", "dice-cv-paper": "DiCE + CV (Eq. 7 as printed, meta)",
    "dice-task-cv": "DiCE + CV (corrected, per-task)",
}


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


# ------------------------------------------------------------------------------------ sampling
def sample_meta_gradients(exp, state, tasks: dict, key: jax.Array, num_batches: int,
                          on_batch: Callable[[], None] | None = None,
                          cv_explained_variance: list[float] | None = None) -> np.ndarray:
    """``[B, P]`` meta-gradients of ``exp``'s learner at ``state`` on ``num_batches`` independent
    batches for the same ``tasks`` (each batch: K + 1 fresh sampling rounds with adaptation).

    A control variate starts every batch from ``state.cv_params`` (its per-batch update is
    discarded), so the B estimates are independent given the state. With a control variate, the
    explained variance of Ψ̃ by its baselines (last sampling round) is appended to
    ``cv_explained_variance`` for each batch."""
    from adaptrl.experiment.trainer import sample_and_adapt
    from adaptrl.meta.batch import stack_steps

    grads = []
    for b in range(num_batches):
        result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.fold_in(key, b),
                                  exp.config.inner_steps, cv_params=state.cv_params)
        grads.append(flatten(exp.learner.meta_gradient(state.meta_params, stack_steps(result.batches))))
        if cv_explained_variance is not None and exp.learner.control_variate is not None:
            cv_explained_variance.append(result.cv_explained_variance)
        if on_batch is not None:
            on_batch()
    return np.stack(grads)


def training_gradient_stats(exp, state, tasks: dict, key: jax.Array) -> dict[str, float]:
    """The ``progress.csv`` columns of ``grad_stats_every`` (ProMP Fig. 4): statistics of
    ``grad_stats_batches`` meta-gradients resampled at the current parameters on this iteration's
    tasks (the original's ``Meta-GradientRStd`` etc., reference §7.5)."""
    stats = gradient_statistics(sample_meta_gradients(exp, state, tasks, key, exp.config.grad_stats_batches))
    return {"Meta-GradientRStd": stats["rsd"], "Meta-GradientRStdSE": stats["rsd_se"],
            "Meta-GradientRStdCoord": stats["rsd_coordinate"],
            "Meta-GradientStd": stats["std"], "Meta-GradientNorm": stats["mean_norm"],
            "Meta-GradientCos": stats["cos_to_mean"]}


# --------------------------------------------------------------------------------------- study
@dataclasses.dataclass
class StudyResult:
    rows: list[dict[str, Any]]
    csv_path: Path
    figure_path: Path
    truth: dict[str, Any] | None


def _warm_control_variate(exp, state, tasks, key, batches: int, on_batch):
    """Train a meta control variate for ``batches`` batches at the fixed policy (its state would
    otherwise be the untrained initialisation)."""
    from adaptrl.experiment.trainer import sample_and_adapt

    cv_params = state.cv_params
    for b in range(batches):
        result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.fold_in(key, 10_000 + b),
                                  exp.config.inner_steps, cv_params=cv_params)
        cv_params = result.cv_params
        if on_batch is not None:
            on_batch()
    return state._replace(cv_params=cv_params)


def gradient_study(base_config, estimators: Sequence[str], batch_sizes: Sequence[int], *,
                   num_batches: int = 10, out: str | Path = "gradients", policy_params: Any = None,
                   truth_estimator: str | None = "dice", truth_rollouts: int = 0,
                   truth_batches: int = 4, cv_warmup: int = 5, seed: int = 0,
                   progress: Callable[[str, int], None] | None = None) -> StudyResult:
    """Run the study: for every estimator and batch size, ``num_batches`` resampled meta-gradients
    at the same parameters (``policy_params``, or the base configuration's initialisation) on the
    same tasks; write ``gradients.csv`` and ``gradients.png`` under ``out``.

    ``truth_rollouts > 0`` computes a ground truth with ``truth_estimator``; 0 skips it."""
    from adaptrl.experiment.config import build_config
    from adaptrl.experiment.trainer import Experiment, init_key, task_seed

    unknown = [e for e in estimators if e not in ESTIMATOR_SPECS]
    if unknown:
        raise unknown_name_error("estimator", unknown[0], ESTIMATOR_SPECS)
    if not estimators or not batch_sizes:
        raise ConfigError("give at least one estimator and one batch size.")
    if any(int(n) < 2 for n in batch_sizes):
        raise ConfigError(f"batch sizes (trajectories per task) must be ≥ 2, got {list(batch_sizes)}.")
    if num_batches < 2:
        raise ConfigError(f"--batches must be ≥ 2 to estimate a variance, got {num_batches}.")
    if truth_estimator is not None and truth_estimator not in ESTIMATOR_SPECS:
        raise unknown_name_error("truth estimator", truth_estimator, ESTIMATOR_SPECS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(seed)

    def config_for(name: str, rollouts: int):
        values = {k: v for k, v in dataclasses.asdict(base_config).items() if k not in ("algo", "env")}
        values.update(ESTIMATOR_SPECS[name], rollouts_per_task=int(rollouts))
        return build_config(base_config.algo, base_config.env, overrides=values)

    def state_for(exp):
        state = exp.learner.init(init_key(base_config.seed))
        if policy_params is not None:
            meta = dict(state.meta_params, policy=policy_params)
            state = state._replace(meta_params=meta)
        return state

    probe = Experiment.build(config_for(estimators[0], batch_sizes[0]))
    try:
        tasks = probe.env.sample_tasks(base_config.tasks_per_iter, seed=task_seed(jax.random.fold_in(key, 1)))
    finally:
        probe.close()

    truth_info = None
    truth = None
    if truth_estimator is not None and truth_rollouts > 0:
        exp = Experiment.build(config_for(truth_estimator, truth_rollouts))
        try:
            state = state_for(exp)
            if exp.learner.control_variate is not None:
                state = _warm_control_variate(exp, state, tasks, jax.random.fold_in(key, 2), cv_warmup, None)
            samples = sample_meta_gradients(
                exp, state, tasks, jax.random.fold_in(key, 3), truth_batches,
                on_batch=(lambda: progress("truth", 1)) if progress else None)
        finally:
            exp.close()
        truth = samples.mean(axis=0)
        stats = gradient_statistics(samples)
        truth_info = {"estimator": truth_estimator, "rollouts_per_task": truth_rollouts,
                      "batches": truth_batches,
                      "truth_rsd_of_mean": stats["rsd"] / math.sqrt(truth_batches)}

    rows = []
    for name in estimators:
        for n in batch_sizes:
            exp = Experiment.build(config_for(name, n))
            try:
                state = state_for(exp)
                if exp.config.control_variate == "meta" and cv_warmup:
                    state = _warm_control_variate(
                        exp, state, tasks, jax.random.fold_in(key, 4), cv_warmup,
                        (lambda name=name: progress(name, 1)) if progress else None)
                cv_quality: list[float] = []
                grads = sample_meta_gradients(
                    exp, state, tasks, jax.random.fold_in(key, 5 + int(n)), num_batches,
                    on_batch=(lambda name=name: progress(name, 1)) if progress else None,
                    cv_explained_variance=cv_quality)
            finally:
                exp.close()
            row = {"estimator": name, "batch_size": int(n), "batches": num_batches,
                   "tasks": base_config.tasks_per_iter, **gradient_statistics(grads, truth),
                   "cv_explained_variance": float(np.mean(cv_quality)) if cv_quality else math.nan}
            rows.append(row)
    csv_path = out / "gradients.csv"
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    if truth_info is not None:
        (out / "truth.txt").write_text("".join(f"{k}: {v}\n" for k, v in truth_info.items()))
    figure = plot_study(rows, out / "gradients.png", title=f"{base_config.env}: meta-gradient estimators")
    return StudyResult(rows, csv_path, figure, truth_info)


def plot_study(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """ProMP Fig. 4 style (relative std) and TMAML Fig. 4 style (Pearson correlation with the
    ground truth) against the batch size, one line per estimator."""
    from adaptrl.plots import _pyplot

    plt = _pyplot()
    has_truth = any("pearson" in r for r in rows)
    panels = [("rsd", "relative std of the meta-gradient"),
              ("cos_to_mean", "mean cosine to the mean gradient")]
    if has_truth:
        panels.append(("pearson", "Pearson r with the ground truth"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), dpi=120, squeeze=False)
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for name in names:
            sel = sorted((r for r in rows if r["estimator"] == name), key=lambda r: r["batch_size"])
            x = [r["batch_size"] for r in sel]
            y = [r.get(key, math.nan) for r in sel]
            if key == "pearson":
                err = [r.get("pearson_std", 0.0) for r in sel]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=ESTIMATOR_LABELS.get(name, name))
            else:
                ax.plot(x, y, marker="o", label=ESTIMATOR_LABELS.get(name, name))
        ax.set_xscale("log")
        ax.set_xlabel("trajectories per task")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def relative_std_ratio(rows: Sequence[dict[str, Any]], numerator: str, denominator: str) -> list[float]:
    """rsd(numerator) / rsd(denominator) per batch size present for both (e.g. DiCE / LVC)."""
    by = {(r["estimator"], r["batch_size"]): r["rsd"] for r in rows}
    sizes = sorted({r["batch_size"] for r in rows})
    return [by[(numerator, n)] / by[(denominator, n)] for n in sizes
            if (numerator, n) in by and (denominator, n) in by]
