"""ProMP — Proximal Meta-Policy Search (Rothfuss et al., ICLR 2019, §6, Alg. 1).

Per task T_i, one inner step on the likelihood-ratio surrogate of the pre-update data D_i
(ProMP Eq. 12; equal to the LVC surrogate at the sampling parameters, so its Hessian is
H1 + H2, Eq. 10), then the clipped post-update objective with a KL penalty on the pre-update
policy (Eq. 13):

    θ'_i   = θ + α ∇_θ J^LR_i(θ),           J^LR = E_{τ∼π_θo}[ Σ_t π_θ(a_t|s_t)/π_θo(a_t|s_t) · A_t ]
    J(θ)   = mean_i [ J^CLIP_i(θ'_i) − η · KL(π_θo ‖ π_θ) ]
    J^CLIP = E_{τ'∼π_θ'o}[ Σ_t min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t) ],  ρ_t = π_θ'/π_θ'o

maximised with ``outer_steps`` (N = 5) Adam steps on the same data. ProMP Table 1: ε = 0.3,
η = 5·10⁻⁴, β = 10⁻³, α = 0.1 as released (the table prints 0.01; docs/algorithms.md).
"""

from __future__ import annotations

from adaptrl.algorithms import meta_rl
from adaptrl.algorithms.base import AlgorithmSpec, register

COMPOSITION = dict(inner_estimator="likelihood_ratio", outer_objective="clip", optimizer="adam",
                   outer_steps=5, clip_eps=0.3, kl_coef=5e-4, adaptive_kl=False, target_kl=0.01)

register(AlgorithmSpec(
    name="promp",
    description="ProMP: J^LR inner step, clipped outer ratio + η·KL inner penalty, 5 Adam steps",
    composition=COMPOSITION,
    build=meta_rl.build,
    paper_settings=lambda env: meta_rl.promp_paper_settings(env, promp=True),
    paper="ProMP (Rothfuss et al., 2019) Alg. 1, App. D",
))
