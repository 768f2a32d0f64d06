"""ME-TRPO — model-ensemble trust-region policy optimisation (Kurutach et al., ICLR 2018; thesis
ch. 4, Alg. 2).

TRPO on imagined rollouts of a dynamics ensemble in which every step of every rollout uses a
uniformly random member (``member_choice=step_rand``, thesis §4.2), so the policy must do well
under all of them:

    max_θ E_{τ ~ π_θ, p̂_{k_t}}[ Σ_t π_θ(a_t|s_t)/π_θold(a_t|s_t) · A_t ]
    s.t. mean KL(π_θold ‖ π_θ) ≤ δ,     k_t ~ U{1..K} per step

(the meta-learner with no inner step, ``inner_steps=0``, and its TRPO outer step). The updates of
an iteration stop by ensemble validation (thesis Eq. 5;
:class:`~adaptrl.algorithms.policy_on_model.ValidationStop`): every 5 updates the deterministic
returns J_k of the policy under each member k from fixed start states are compared with those of
the last kept policy; the policy is kept while at least 70 % of the members strictly improve, and
the phase ends 25 updates after the last kept policy (or at ``policy_steps_per_iter`` = 400),
restoring it. Real data: a uniform random controller first, then the policy's mean with
exploration noise (σ ~ U(0, 3) per episode and parameter noise N(0, (3·|θ − θ_prev|)²), thesis
App. A.1.3; ``exploration_noise=step`` is the original code's per-step σ).

Ablations (thesis App. A.4): sampling ``member_choice`` = ``mean`` or ``task`` with one task (one
model); validation ``policy_validation`` = ``one_model``, ``model_mean``, ``real_oracle``, or
``none`` with a fixed ``policy_steps_per_iter`` (no_early_5 / no_early_50).

``--preset paper`` is the original code's ``params-<env>.json`` (docs/model-based.md, "Presets").
"""

from __future__ import annotations

from adaptrl.algorithms import maml
from adaptrl.algorithms.base import AlgorithmSpec, register
from adaptrl.algorithms.policy_on_model import PolicyOnModel, reported_return

COMMON = dict(inner_steps=0, tasks_per_iter=1, member_choice="step_rand", policy_validation="ensemble",
              validation_every=5, validation_patience=25, validation_threshold=0.7,
              reset_policy_std=True, real_data_policy="pre_update", exploration_noise="episode",
              model_shared_split=True, baseline="linear", normalize_advantages=True, gae_lambda=1.0)

#: A small configuration for trying it out.
QUICK = dict(rollouts_per_task=50, policy_steps_per_iter=50, validation_rollouts=100, iterations=20,
             initial_random_steps=2000, real_steps_per_iter=2000, model_members=5,
             model_hidden_sizes=(200, 200), model_max_epochs=50, model_batch_size=256,
             hidden_sizes=(32, 32), discount=0.99, exploration_std=1.0, param_noise_scale=1.0,
             real_eval_episodes=10)

#: The original code's ``params-<env>.json`` (thesis App. A.1): 5 × (1024, 1024) ReLU models
#: re-initialised every 5 iterations with fresh Adam moments, one shared 2/3–1/3 split, batch
#: 1000; TRPO δ = 0.01 on 50,000 imagined steps per update, γ = 1; 32-32 tanh policy whose σ is
#: reset to 1 every phase; 3000 real steps per iteration; validation on 500 start states.
PAPER = dict(rollouts_per_task=250, policy_steps_per_iter=400, validation_rollouts=500, iterations=100,
             horizon=200, max_kl=0.01, discount=1.0, hidden_sizes=(32, 32), init_std=1.0,
             initial_random_steps=3000, real_steps_per_iter=3000, buffer_size=300_000,
             model_members=5, model_hidden_sizes=(1024, 1024), model_activation="relu",
             model_weight_norm=False, model_lr=1e-3, model_batch_size=1000, model_max_epochs=500,
             model_valid_split=1 / 3, model_reinit_every=5, model_reset_optimizer=True,
             exploration_std=3.0, param_noise_scale=3.0, real_eval_episodes=20, checkpoint_every=1)

#: Per-environment differences of ``params-<env>.json``.
PAPER_ENV = {"Swimmer": dict(model_hidden_sizes=(512, 512), buffer_size=150_000),
             "Ant": dict(iterations=200),
             "Point2D": dict(model_hidden_sizes=(128, 128), hidden_sizes=(16, 16), exploration_std=1.0,
                             param_noise_scale=1.0, horizon=30, rollouts_per_task=500)}


register(AlgorithmSpec(
    name="me-trpo",
    description="ME-TRPO: TRPO on imagined rollouts with a random ensemble member per step, "
                "validation-stopped",
    composition=dict(maml.TRPO, **COMMON, **QUICK),
    build=PolicyOnModel, paper_settings=lambda env: dict(PAPER, **PAPER_ENV.get(env, {})),
    paper="Kurutach et al. (2018); thesis §4.2, Alg. 2, App. A",
    settings=("run", "meta", "model", "imagination"), reported_return=reported_return,
))
