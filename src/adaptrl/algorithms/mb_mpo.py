"""MB-MPO — model-based meta-policy optimisation (Clavera et al., CoRL 2018; thesis ch. 5, Alg. 3)
and its ProMP variant MB-ProMP.

The ensemble members are the tasks: M_k = (S, A, p̂_φk, r, γ, p₀), k = 1…K, with the known
reward and each member's dynamics for the whole rollout (task i ↦ member i mod K). The policy is
meta-learned to adapt to any of them in one step (thesis Eq. 7–8):

    max_θ (1/K) Σ_k J_k(θ'_k),   θ'_k = θ + α ∇_θ J_k(θ),
    J_k(θ) = E_{π_θ}[ Σ_{t<H} r(s_t, a_t) | s_{t+1} = p̂_φk(s_t, a_t), s₀ ~ p₀ ]

* ``mb-mpo`` — the MAML-TRPO composition: a vanilla-PG inner step (log-likelihood × advantage)
  and a TRPO outer step within mean KL ≤ δ = 0.01 of the post-update policies (thesis §5.2.3);
* ``mb-promp`` — the ProMP composition: J^LR inner step, clipped outer ratio (ε = 0.3) with an
  adaptive inner KL penalty, 5 Adam steps (the meta-mb ``mbpromp`` scripts, thesis ch. 6).

Real data come from the K adapted policies (tailored exploration; ``real_data_policy=pre_update``
is the ablation of thesis Fig. 39), the first iteration from a uniform random controller; each
iteration takes ``policy_steps_per_iter`` = 30 meta-steps on fresh imagined batches. The loop is
:class:`~adaptrl.algorithms.policy_on_model.PolicyOnModel`. The biased-model experiment of thesis
§5.5.3 is ``--set model_output_bias_max=B,model_output_noise_std=0.1``.

``--preset paper`` is thesis App. B / the original code's settings (docs/model-based.md, "Presets").
"""

from __future__ import annotations

from adaptrl.algorithms import maml, promp
from adaptrl.algorithms.base import AlgorithmSpec, register
from adaptrl.algorithms.policy_on_model import PolicyOnModel, reported_return

SETTINGS = ("run", "meta", "model", "imagination")

COMMON = dict(inner_steps=1, member_choice="task", real_data_policy="adapted", policy_validation="none",
              baseline="linear", normalize_advantages=True, discount=0.99, gae_lambda=1.0)

#: A small configuration for trying it out: 5 tasks (one per member) × 20 imagined rollouts,
#: 30 meta-steps per iteration (about 1–2 minutes per iteration on 2 cores for HalfCheetah).
QUICK = dict(tasks_per_iter=5, rollouts_per_task=20, policy_steps_per_iter=30, iterations=20,
             initial_random_steps=2000, real_steps_per_iter=2000, model_members=5,
             model_hidden_sizes=(200, 200), model_max_epochs=50, model_batch_size=256,
             hidden_sizes=(32, 32), real_eval_episodes=10)

#: Thesis App. B.2–B.3 and the original code (reference settings in docs/model-based.md):
#: 20 tasks = 4 per member, 50 imagined rollouts per task of 200 steps, 30 meta-steps per
#: iteration, α = 0.001, δ = 0.01, 5 × (512, 512) ReLU models with weight normalisation,
#: 5000 random + 4000 real steps per iteration (20 adapted policies × 1 episode), buffer 10⁵.
PAPER = dict(tasks_per_iter=20, rollouts_per_task=50, policy_steps_per_iter=30, iterations=100,
             horizon=200, inner_lr=0.001, max_kl=0.01, cg_damping=1e-5, hidden_sizes=(32, 32),
             init_std=1.0, initial_random_steps=5000, real_steps_per_iter=4000, buffer_size=100_000,
             model_members=5, model_hidden_sizes=(512, 512), model_activation="relu",
             model_weight_norm=True, model_lr=1e-3, model_batch_size=500, model_max_epochs=500,
             model_valid_split=0.2, model_persistency=0.95, real_eval_episodes=20,
             checkpoint_every=1)

#: The meta-mb MB-ProMP sweep: (500, 500) models, 64-64 policy, 5 Adam steps, α = 0.001.
PROMP_PAPER = dict(PAPER, hidden_sizes=(64, 64), model_hidden_sizes=(500, 500), outer_steps=5,
                   outer_lr=1e-3, inner_lr=0.001, adaptive_kl=True, kl_coef=5e-4, target_kl=0.01)


def build(config) -> PolicyOnModel:
    return PolicyOnModel(config)


register(AlgorithmSpec(
    name="mb-mpo",
    description="MB-MPO: meta-learn to adapt to every ensemble member (VPG inner, TRPO outer step)",
    composition=dict(maml.TRPO, inner_estimator="pgt", **COMMON, **QUICK),
    build=build, paper_settings=lambda env: dict(PAPER),
    paper="Clavera et al. (2018); thesis §5.2, Alg. 3, App. B",
    settings=SETTINGS, reported_return=reported_return,
))
register(AlgorithmSpec(
    name="mb-promp",
    description="MB-ProMP: MB-MPO with ProMP's meta-step (J^LR inner, clipped outer, 5 Adam steps)",
    composition=dict(promp.COMPOSITION, **COMMON, **dict(QUICK, inner_lr=0.001)),
    build=build, paper_settings=lambda env: dict(PROMP_PAPER),
    paper="thesis ch. 5–6; the meta-mb MB-ProMP scripts",
    settings=SETTINGS, reported_return=reported_return,
))
