"""Meta-gradient quality: variance across resampled batches and accuracy against a ground truth.

At fixed policy parameters θ (a fresh initialisation, or a run's checkpoint) and a fixed set of
tasks, each estimator's meta-gradient ĝ = ∇_θ mean_i J_i is computed on B independent batches
(fresh trajectories for every adaptation step; same tasks). Per estimator and batch size
(trajectories per task) we report (ProMP §7.2, Fig. 4 and TMAML §5.2, Fig. 2 do not define their
metric, so this is ours; docs/reproductions.md, "The metric"):

* ``rsd`` — relative standard deviation √(Σ_j Var_b[ĝ_j]) / ‖mean_b ĝ‖: the total standard
  deviation of the estimate relative to the norm of its mean. Invariant to rescaling the rewards
  and the parameters' units; it is what ``Meta-GradientRStd`` logs during training.
  ``rsd_se`` is its bootstrap standard error over the B batches: with few batches ‖mean‖ carries
  noise (E‖ḡ‖² = ‖g‖² + ΣVar/B), which biases the RSD down and makes it noisy when it is large.
* ``rsd_coordinate`` — mean_j std_b[ĝ_j] / |mean_b ĝ_j|, the per-coordinate ratio averaged over
  coordinates (docs/reproductions.md). Coordinates whose mean is near zero dominate it, so it is noisy.
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

from adaptrl import memory
from adaptrl.algorithms.meta_rl import MetaRL, sample_and_adapt, sample_meta_gradients, task_seed
from adaptrl.analysis.statistics import gradient_statistics
from adaptrl.errors import ConfigError, unknown_name_error
from adaptrl.experiment.config import build_config
from adaptrl.experiment.seeding import init_key
from adaptrl.meta.learner import MetaLearner
from adaptrl.plots import pyplot

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

    ``truth_rollouts > 0`` computes a ground truth with ``truth_estimator``; 0 skips it. The
    memory of the largest batch of every estimator (and of the truth) is checked before anything
    is sampled (:func:`check_study_memory`)."""
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
    with memory.no_training_check():  # the study checks its own sizes (check_study_memory)
        return _run_study(base_config, list(estimators), [int(n) for n in batch_sizes],
                          num_batches=num_batches, out=Path(out), policy_params=policy_params,
                          truth_estimator=truth_estimator if truth_rollouts > 0 else None,
                          truth_rollouts=truth_rollouts, truth_batches=truth_batches, cv_warmup=cv_warmup,
                          key=jax.random.PRNGKey(seed), progress=progress)


def study_config(base_config, name: str, rollouts: int):
    """The base configuration with estimator ``name``'s composition and ``rollouts`` per task."""
    values = {k: v for k, v in dataclasses.asdict(base_config).items() if k not in ("algo", "env")}
    values.update(ESTIMATOR_SPECS[name], rollouts_per_task=int(rollouts))
    return build_config(base_config.algo, base_config.env, overrides=values)


def check_study_memory(base_config, env_spec: Any, checks: Sequence[tuple[str, int, str, str]]) -> None:
    """A :class:`ConfigError` before anything is sampled when one meta-gradient of a batch would not
    fit in memory (:func:`adaptrl.memory.estimate_batch_bytes`, phase ``gradient``). ``checks``:
    (estimator, trajectories per task, what the batch is, the name of its size) per batch."""
    for name, rollouts, what, label in checks:
        learner = MetaLearner(study_config(base_config, name, rollouts), env_spec.obs_dim, env_spec.act_dim)
        memory.check_fits(learner.batch_shape(), "gradient", request=f"the gradient study's {what}",
                          vary="rollouts", label=label,
                          alternatives="--tasks or --set horizon=N")


def _run_study(base_config, estimators: list[str], batch_sizes: list[int], *, num_batches: int, out: Path,
               policy_params: Any, truth_estimator: str | None, truth_rollouts: int, truth_batches: int,
               cv_warmup: int, key: jax.Array, progress: Callable[[str, int], None] | None) -> StudyResult:
    def config_for(name: str, rollouts: int):
        return study_config(base_config, name, rollouts)

    def state_for(exp):
        state = exp.learner.init(init_key(base_config.seed))
        if policy_params is not None:
            meta = dict(state.meta_params, policy=policy_params)
            state = state._replace(meta_params=meta)
        return state

    probe = MetaRL.build(config_for(estimators[0], batch_sizes[0]))
    try:
        n = max(batch_sizes)
        checks = [(name, n, f"batch size {n} of {name}", "batch size") for name in estimators]
        if truth_estimator is not None:
            checks.append((truth_estimator, truth_rollouts,
                           f"ground truth (--truth-rollouts {truth_rollouts}, {truth_estimator})",
                           "--truth-rollouts"))
        check_study_memory(base_config, probe.env.spec, checks)
        tasks = probe.env.sample_tasks(base_config.tasks_per_iter, seed=task_seed(jax.random.fold_in(key, 1)))
    finally:
        probe.close()
    out.mkdir(parents=True, exist_ok=True)

    truth_info = None
    truth = None
    if truth_estimator is not None:
        exp = MetaRL.build(config_for(truth_estimator, truth_rollouts))
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
            exp = MetaRL.build(config_for(name, n))
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
    plt = pyplot()
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
