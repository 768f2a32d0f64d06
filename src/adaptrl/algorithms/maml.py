"""MAML for RL (Finn et al., 2017, Alg. 3) as ProMP evaluates it (ProMP §7.1): MAML-TRPO and
MAML-VPG.

The inner step is the policy-gradient-theorem surrogate (score function), whose automatic
second derivative estimates only H2 of the meta-gradient's Hessian (ProMP §4):

    θ'_i = θ + α ∇_θ J^PGT_i(θ),     J^PGT = E_τ[ Σ_t log π_θ(a_t|s_t) · A_t ]

Outer step:
* ``maml-trpo`` — TRPO on the post-update surrogate mean_i E[Σ_t π_θ'/π_θ'o · A_t] within
  mean_i KL(π_θ'o ‖ π_θ') ≤ δ = 0.01 (ProMP App. C.2), the KL's Hessian-vector products through
  the inner step in Gauss-Newton form J_Uᵀ H J_U, exact at the sampling parameters
  (``trpo_curvature``; docs/algorithms.md);
* ``maml-vpg`` — one Adam step on mean_i E[Σ_t log π_θ'(a_t|s_t) · A_t] (β = 10⁻³).
"""

from __future__ import annotations

from typing import Any

from adaptrl.algorithms import meta_rl
from adaptrl.algorithms.base import AlgorithmSpec, register

TRPO = dict(outer_objective="ratio", optimizer="trpo", max_kl=0.01)
VPG = dict(outer_objective="log_likelihood", optimizer="adam", outer_steps=1, outer_lr=1e-3)

#: MAML's own 2-D navigation setting (Finn et al. 2017 §5.3, App. A.2): meta-batch 20 tasks ×
#: 20 trajectories of 100 steps, one VPG inner step of α = 0.1, TRPO δ = 0.01, a policy with two
#: hidden layers of 100 (ReLU in the paper; tanh here). 100 iterations is our budget.
MAML_NAVIGATION = dict(tasks_per_iter=20, rollouts_per_task=20, inner_steps=1, inner_lr=0.1, horizon=100,
                       hidden_sizes=(100, 100), max_kl=0.01, iterations=100)


def maml_trpo_paper_settings(env: str) -> dict[str, Any]:
    """``--preset paper``: MAML's setting on ``Point2DNavigation``, ProMP's elsewhere."""
    return dict(MAML_NAVIGATION) if env == "Point2DNavigation" else meta_rl.promp_paper_settings(env)

register(AlgorithmSpec(
    name="maml-trpo",
    description="MAML-TRPO: PGT (log-likelihood) inner step, TRPO outer step (original RL-MAML)",
    composition=dict(TRPO, inner_estimator="pgt"),
    build=meta_rl.build, paper_settings=maml_trpo_paper_settings,
    paper="Finn et al. (2017) Alg. 3, §5.3 (Point2DNavigation); ProMP §7.1",
))
register(AlgorithmSpec(
    name="maml-vpg",
    description="MAML-VPG: PGT inner step, one Adam step on log-likelihood × advantage",
    composition=dict(VPG, inner_estimator="pgt"),
    build=meta_rl.build, paper_settings=meta_rl.promp_paper_settings,
    paper="ProMP §7.1, Fig. 3",
))
