"""ProMP Fig. 6 (§7.4): meta-gradient update directions of formulation I vs II in 1-D.

The environment is ``Point1D`` (goal ±1, horizon 5, reward exp(−0.1(s' − g)²)) and the policy the
two-parameter a ~ N(θ₀·s² + θ₁, 1) of the original ProMP code's ``point_1d_hand_grads.py``
(docs/environments.md, "Point and 1-D families"; docs/reproductions.md, "ProMP Fig. 6"),
started at θ = (0.09, 0.05). Settings follow that script's sweep: 40 tasks × 100 trajectories,
inner step 0.1 on the plain Monte-Carlo gradient (no baseline, no normalisation, γ = 1).

* Formulation I (DiCE-VPG): DiCE inner step (full Hessian), DiCE outer objective.
* Formulation II (E-MAML-VPG): PGT inner step plus the E-MAML pre-update credit term.

Both are meta-trained with the same Adam step from the same start, for several seeds; the figure
shows the parameter paths over the (θ₀, θ₁) plane on top of each formulation's normalised mean
update direction on a grid, and the CSV gives per formulation and seed the final post-update
return, the distance of the final θ to the best θ found, and the spread of the update directions
(circular std of the step angles along the path).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.algorithms.meta_rl import MetaRL, sample_meta_gradients, task_seed
from adaptrl.errors import ConfigError
from adaptrl.experiment.config import build_config
from adaptrl.experiment.seeding import init_key, iteration_key
from adaptrl.plots import pyplot

FORMULATIONS: dict[str, dict[str, Any]] = {
    "I": dict(algo="dice-vpg", label="Formulation I (DiCE-VPG)", color="tab:red"),
    "II": dict(algo="emaml-vpg", label="Formulation II (E-MAML-VPG)", color="tab:green"),
}

STUDY_SETTINGS: dict[str, Any] = dict(
    policy="quadratic_feature", tasks_per_iter=40, rollouts_per_task=100, inner_lr=0.1, discount=1.0,
    baseline="zero", normalize_advantages=False, loss_reduction="per_trajectory", outer_lr=0.01)


def formulation_config(name: str, *, seed: int = 0, iterations: int = 100, overrides: dict | None = None):
    """The configuration of formulation ``name`` (``I`` or ``II``) on Point1D."""
    if name not in FORMULATIONS:
        raise ConfigError(f"unknown formulation {name!r}; valid: {', '.join(FORMULATIONS)}.")
    values = {**STUDY_SETTINGS, **(overrides or {}), "seed": seed, "iterations": iterations}
    return build_config(FORMULATIONS[name]["algo"], "Point1D", overrides=values)


def theta_of(state) -> np.ndarray:
    return np.asarray(state.meta_params["policy"]["params"]["theta"], np.float64)


def with_theta(state, theta: Sequence[float]):
    policy = {"params": {"theta": jnp.asarray(theta, jnp.float32)}}
    return state._replace(meta_params={**state.meta_params, "policy": policy})


def meta_train_path(config, on_iteration: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """θ after every iteration (``[I + 1, 2]``, starting point first) and the post-update return of
    every iteration (``[I]``)."""
    exp = MetaRL.build(config)
    try:
        state = exp.init(init_key(config.seed))
        path, returns = [theta_of(state)], []
        for itr in range(config.iterations):
            state, row, _ = exp.iteration(state, itr, iteration_key(config.seed, itr))
            path.append(theta_of(state))
            returns.append(row[f"Step_{config.inner_steps}-AverageReturn"])
            if on_iteration is not None:
                on_iteration()
    finally:
        exp.close()
    return np.stack(path), np.asarray(returns)


def direction_field(config, thetas: np.ndarray, batches: int = 2, seed: int = 0) -> np.ndarray:
    """Mean meta-gradient (``[G, 2]``) of ``config``'s estimator at every θ of ``thetas``."""
    exp = MetaRL.build(config)
    try:
        state = exp.init(init_key(config.seed))
        key = jax.random.PRNGKey(seed)
        tasks = exp.env.sample_tasks(config.tasks_per_iter, seed=task_seed(key))
        return np.stack([sample_meta_gradients(exp, with_theta(state, th), tasks,
                                               jax.random.fold_in(key, i), batches).mean(axis=0)
                         for i, th in enumerate(thetas)])
    finally:
        exp.close()


def direction_spread(path: np.ndarray) -> float:
    """Circular standard deviation (radians) of the angles of the steps along a path."""
    steps = np.diff(path, axis=0)
    steps = steps[np.linalg.norm(steps, axis=1) > 0]
    if len(steps) < 2:
        return math.nan
    angles = np.arctan2(steps[:, 1], steps[:, 0])
    r = math.hypot(np.mean(np.cos(angles)), np.mean(np.sin(angles)))
    return math.sqrt(-2.0 * math.log(max(r, 1e-12)))


@dataclasses.dataclass
class DirectionsResult:
    paths: dict[str, list[np.ndarray]]
    returns: dict[str, list[np.ndarray]]
    rows: list[dict[str, Any]]
    csv_path: Path
    figure_path: Path


def directions_study(out: str | Path = "directions", *, iterations: int = 100, seeds: int = 3,
                     grid: int = 9, grid_batches: int = 2, overrides: dict | None = None,
                     progress: Callable[[], None] | None = None) -> DirectionsResult:
    """Meta-train formulations I and II on Point1D for ``seeds`` seeds and draw ProMP Fig. 6:
    ``directions.png`` (paths over the update-direction fields) and ``directions.csv``."""
    if iterations < 1 or seeds < 1 or grid < 2:
        raise ConfigError(f"need iterations ≥ 1, seeds ≥ 1 and grid ≥ 2, got {iterations}, {seeds}, {grid}.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[np.ndarray]] = {}
    returns: dict[str, list[np.ndarray]] = {}
    for name in FORMULATIONS:
        for seed in range(seeds):
            path, ret = meta_train_path(formulation_config(name, seed=seed, iterations=iterations,
                                                           overrides=overrides), progress)
            paths.setdefault(name, []).append(path)
            returns.setdefault(name, []).append(ret)
    everything = np.concatenate([p for ps in paths.values() for p in ps])
    lo, hi = everything.min(axis=0), everything.max(axis=0)
    pad = np.maximum(0.25 * (hi - lo), 0.05)
    lo, hi = lo - pad, hi + pad
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    thetas = np.stack([g0.ravel(), g1.ravel()], axis=-1)
    fields = {name: direction_field(formulation_config(name, iterations=1, overrides=overrides), thetas,
                                    grid_batches) for name in FORMULATIONS}
    # θ with the best late post-update return over all runs: the reference point for "distance".
    best_name, best_seed = max(((n, s) for n in returns for s in range(seeds)),
                               key=lambda ns: float(np.mean(returns[ns[0]][ns[1]][-10:])))
    best = paths[best_name][best_seed][-1]
    rows = []
    for name in FORMULATIONS:
        for seed in range(seeds):
            path, ret = paths[name][seed], returns[name][seed]
            rows.append({"formulation": name, "seed": seed, "iterations": iterations,
                         "final_post_update_return": float(np.mean(ret[-10:])),
                         "theta0": float(path[-1, 0]), "theta1": float(path[-1, 1]),
                         "distance_to_best": float(np.linalg.norm(path[-1] - best)),
                         "direction_spread_rad": direction_spread(path)})
    csv_path = out / "directions.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figure = plot_directions(paths, fields, thetas, grid, out / "directions.png")
    return DirectionsResult(paths, returns, rows, csv_path, figure)


def plot_directions(paths: dict[str, list[np.ndarray]], fields: dict[str, np.ndarray], thetas: np.ndarray,
                    grid: int, out: str | Path) -> Path:
    """One panel per formulation: unit arrows of its mean meta-gradient, and all seeds' paths."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(paths), figsize=(5.2 * len(paths), 4.4), dpi=120, squeeze=False)
    for ax, name in zip(axes[0], paths, strict=True):
        spec = FORMULATIONS[name]
        field = fields[name]
        norm = np.maximum(np.linalg.norm(field, axis=1, keepdims=True), 1e-12)
        unit = field / norm
        ax.quiver(thetas[:, 0], thetas[:, 1], unit[:, 0], unit[:, 1], color="0.55", angles="xy",
                  pivot="mid", width=0.004)
        for i, path in enumerate(paths[name]):
            ax.plot(path[:, 0], path[:, 1], color=spec["color"], lw=1.2, alpha=0.85,
                    label=spec["label"] if i == 0 else None)
            ax.plot(path[-1, 0], path[-1, 1], "o", color=spec["color"], ms=4)
        ax.plot(paths[name][0][0, 0], paths[name][0][0, 1], "k*", ms=10, label="start θ = (0.09, 0.05)")
        ax.set_xlabel("θ₀ (weight of s²)")
        ax.set_ylabel("θ₁ (bias)")
        ax.set_title(spec["label"], fontsize=10)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Point1D meta-gradient updates (ProMP Fig. 6): arrows = mean update direction", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
