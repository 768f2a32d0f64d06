"""TMAML — Taming MAML with control variates (Liu et al., ICML 2019, §4, Alg. 1–2).

DiCE in the inner and outer objectives, plus DiCE's baseline term and a control-variate
surrogate that removes variance from the Hessian estimate without bias (TMAML Alg. 2):

    J = J^DiCE + Σ_t [1 − □(log π_θ(a_t|s_t))]·b_t + J^CV(b)

with J^CV the corrected, unbiased form (docs/algorithms.md) or TMAML Eq. 7 as printed
(``cv_formula=paper``). The control variate b is learned from the samples:

* ``tmaml-meta-cv`` — one value network meta-learned across tasks with one MAML step on each
  task's half-batches, cross-fitted (Alg. 1);
* ``tmaml-task-cv`` — a Q-network fitted per task, made action-dependent per coordinate by
  integrating out a^i (Eq. 11).

The outer step is ProMP's (clipped ratio + η·KL, 5 Adam steps). ``--preset paper`` gives TMAML
App. E Table 1 and TMAML's task distributions (§5.1).
"""

from __future__ import annotations

from typing import Any

from adaptrl.algorithms import meta_rl
from adaptrl.algorithms.base import AlgorithmSpec, register
from adaptrl.algorithms.promp import COMPOSITION as PROMP

#: TMAML's task distributions (TMAML §5.1) as env options of our families.
TMAML_ENV_OPTIONS: dict[str, dict[str, Any]] = {
    "HalfCheetahRandVel": {"velocity_range": [0.0, 2.0]},
    "Walker2DRandVel": {"velocity_range": [0.0, 2.0]},
    "SwimmerRandVel": {"velocity_range": [0.0, 2.0]},
    "AntRandGoal": {"goal_distribution": "square", "goal_radius": 3.0},
}


def tmaml_table1_settings(env: str) -> dict[str, Any]:
    """TMAML App. E Table 1 for canonical family ``env``, as config overrides.

    64² policy (Humanoid 128²), one adaptation step (AntRandGoal two), α = 0.01, β = 0.001,
    α' = β' = 0.01 (plain gradient steps, as Alg. 1), 40 tasks × 20 trajectories, 5 gradient
    steps per iteration, clip ε = 0.3, KL η = 0.0005, trajectory length 100 in every environment,
    and TMAML's task distributions.
    """
    settings: dict[str, Any] = dict(
        inner_lr=0.01, outer_lr=1e-3, hidden_sizes=(64, 64), inner_steps=1, cv_inner_lr=0.01,
        cv_lr=0.01, cv_optimizer="sgd", tasks_per_iter=40, rollouts_per_task=20, outer_steps=5, clip_eps=0.3,
        kl_coef=5e-4, horizon=100)
    if env.startswith("Humanoid"):
        settings["hidden_sizes"] = (128, 128)
    if env == "AntRandGoal":
        settings["inner_steps"] = 2
    if env in TMAML_ENV_OPTIONS:
        settings["env_options"] = dict(TMAML_ENV_OPTIONS[env])
    return settings


register(AlgorithmSpec(
    name="tmaml-meta-cv",
    description="TMAML: DiCE + meta-learned control variate (Alg. 1) inner step, PPO-style outer step",
    composition=dict(PROMP, inner_estimator="dice", control_variate="meta"),
    build=meta_rl.build, paper_settings=tmaml_table1_settings,
    paper="TMAML (Liu et al., 2019) Alg. 1–2, App. E Table 1",
))
register(AlgorithmSpec(
    name="tmaml-task-cv",
    description="TMAML: DiCE + per-task action-dependent control variate (Eq. 11), PPO-style outer step",
    composition=dict(PROMP, inner_estimator="dice", control_variate="task"),
    build=meta_rl.build, paper_settings=tmaml_table1_settings,
    paper="TMAML (Liu et al., 2019) Eq. 11, App. E Table 1",
))
