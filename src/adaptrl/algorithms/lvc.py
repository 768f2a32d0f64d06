"""LVC — the low-variance curvature estimator (ProMP §5, Eq. 9) in the inner step:

    θ'_i = θ + α ∇_θ J^LVC_i(θ),    J^LVC = E_τ[ Σ_t π_θ(a_t|s_t)/⊥π_θ(a_t|s_t) · A_t ]

whose Hessian estimates H1 + H2 (Eq. 10): biased (no H12 terms) but far less variable than
DiCE's. Implemented as the likelihood ratio against the sampling policy, which equals J^LVC at
the sampling parameters. Outer steps as MAML (``lvc-trpo``, ``lvc-vpg``).
"""

from __future__ import annotations

from adaptrl.algorithms import meta_rl
from adaptrl.algorithms.base import AlgorithmSpec, register
from adaptrl.algorithms.maml import TRPO, VPG

register(AlgorithmSpec(
    name="lvc-trpo",
    description="LVC-TRPO: LVC (likelihood-ratio) inner step, TRPO outer step",
    composition=dict(TRPO, inner_estimator="likelihood_ratio"),
    build=meta_rl.build, paper_settings=meta_rl.promp_paper_settings,
    paper="ProMP §5, §7.1",
))
register(AlgorithmSpec(
    name="lvc-vpg",
    description="LVC-VPG: LVC inner step, one Adam step",
    composition=dict(VPG, inner_estimator="likelihood_ratio"),
    build=meta_rl.build, paper_settings=meta_rl.promp_paper_settings,
    paper="ProMP §7.2, Fig. 3",
))
