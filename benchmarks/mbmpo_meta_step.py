"""One MB-MPO meta-step on HalfCheetah at the paper preset, split into its parts, and the TRPO
step with the exact KL Hessian against its Gauss-Newton form (docs/benchmarks.md).

Usage: ``.venv/bin/python benchmarks/mbmpo_meta_step.py [--rollouts R] [--repeats N]``.
Builds MB-MPO with ``--preset paper`` (20 tasks = 4 per member, R imagined rollouts per task of
200 steps; the paper's R is 50) on a freshly initialised ensemble, then times, after one
compiling call each, the median of N repeats of: the pre- and post-update imagined sampling
passes, the sample processing, the inner step, and the TRPO meta-step twice — with the KL's
Hessian-vector product through the adaptation computed exactly (forward-over-reverse of the
whole map) and in the Gauss-Newton form the learner uses (J_Uᵀ J_Dᵀ H_D J_D J_U, equal at the
sampling parameters; ``MetaLearner.outer_kl_curvature``). Both TRPO variants run in the same
process on the same batches; the report gives their ratio and how far their steps differ.

``--cg-subsample F,F,...`` also times the learner's own TRPO update (``trpo_update``, what
training runs) with each curvature subsample ``cg_subsample = F`` (docs/algorithms.md, "Outer
optimizers") on the same batches, and reports each step's surrogate improvement and KL on the
whole batch and its distance from the F = 1 step.

It also times the ensemble-disagreement diagnostic of the adaptation phase (``Member_k-EnsembleStd``,
thesis Fig. 11) on the pre-update batch: :func:`~adaptrl.algorithms.policy_on_model.ensemble_disagreement`
(one jitted, chunked program) against the same K-member prediction run op by op on the whole
batch at once, as it was computed before.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from adaptrl.algorithms.meta_rl import sample_and_adapt
from adaptrl.algorithms.policy_on_model import PolicyOnModel, ensemble_disagreement
from adaptrl.envs.host import default_num_threads
from adaptrl.experiment.config import build_config
from adaptrl.meta.batch import stack_steps
from adaptrl.meta.learner import MetaLearner, trpo_update
from adaptrl.models.simulator import model_sim_params
from adaptrl.optim.trpo import trpo_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rollouts", type=int, default=50, help="imagined rollouts per task (paper: 50)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cg-subsample", default="1,0.2,0.1",
                        help="curvature subsamples F to time the learner's TRPO update with")
    args = parser.parse_args()
    fractions = [float(f) for f in args.cg_subsample.split(",") if f]

    config = build_config("mb-mpo", "HalfCheetah", preset="paper",
                          overrides={"rollouts_per_task": args.rollouts})
    alg = PolicyOnModel(config)
    state = alg.init(jax.random.PRNGKey(0))
    obs_dim = alg.env.spec.obs_dim
    sim_params = model_sim_params(state.model.params, state.start_obs, np.full(obs_dim, -10.0),
                                  np.full(obs_dim, 10.0), config.model_members)
    learner_state = state.extra.learner
    learner = alg.meta.learner
    tasks = alg.imagined.sample_tasks(config.tasks_per_iter, seed=0)

    def loss_and_kl(meta_params, batches):
        terms = learner.terms(meta_params, batches)
        return -terms.objective, terms.outer_kl

    def step(meta_params, batches, gauss_newton):
        curvature = learner.outer_kl_curvature(meta_params, batches) if gauss_newton else None
        return trpo_step(lambda p: loss_and_kl(p, batches)[0], lambda p: loss_and_kl(p, batches)[1],
                         meta_params, max_kl=config.max_kl, cg_iters=config.cg_iters,
                         damping=config.cg_damping, loss_and_kl_fn=lambda p: loss_and_kl(p, batches),
                         curvature_fn=curvature)

    exact_step = jax.jit(lambda mp, b: step(mp, b, False))
    gn_step = jax.jit(lambda mp, b: step(mp, b, True))
    obs_dim, act_dim = alg.env.spec.obs_dim, alg.env.spec.act_dim

    def jitted_update(fraction: float):
        subsampled = MetaLearner(dataclasses.replace(config, cg_subsample=fraction), obs_dim, act_dim)
        return jax.jit(lambda st, b: trpo_update(subsampled, st, b))

    updates = {f: jitted_update(f) for f in fractions}
    parts = ("sampling", "processing", "inner", "trpo_exact", "trpo_gauss_newton", "disagreement_jitted",
             "disagreement_eager")
    times: dict[str, list[float]] = {k: [] for k in (*parts, *(f"update_f{f:g}" for f in fractions))}
    update_results: dict[float, tuple] = {}
    for repeat in range(args.repeats + 1):
        timings: dict[str, float] = {}
        result = sample_and_adapt(alg.meta, learner_state.meta_params, tasks, jax.random.PRNGKey(repeat),
                                  config.inner_steps, timings, sim_params=sim_params)
        batches = stack_steps(result.batches)
        pre = result.batches[0]
        flat_obs = np.asarray(pre.observations).reshape(-1, obs_dim)
        flat_act = np.asarray(pre.actions).reshape(-1, act_dim)  # raw policy actions: the same input to both
        model = state.model.params
        start = time.perf_counter()
        jitted_std = np.asarray(ensemble_disagreement(alg.mb.dynamics, model, flat_obs, flat_act))
        jitted_s = time.perf_counter() - start
        start = time.perf_counter()
        every = alg.mb.dynamics.all_next(model, jax.numpy.asarray(flat_obs),
                                         jax.numpy.asarray(flat_act), jax.random.PRNGKey(0))
        eager_std = np.asarray(every.std(axis=0).mean(-1))
        eager_s = time.perf_counter() - start
        np.testing.assert_allclose(jitted_std, eager_std, rtol=1e-4, atol=1e-6)
        start = time.perf_counter()
        exact, _ = jax.block_until_ready(exact_step(learner_state.meta_params, batches))
        exact_s = time.perf_counter() - start
        start = time.perf_counter()
        gauss_newton, _ = jax.block_until_ready(gn_step(learner_state.meta_params, batches))
        gn_s = time.perf_counter() - start
        for f, update in updates.items():
            start = time.perf_counter()
            update_results[f] = jax.block_until_ready(update(learner_state, batches))
            if repeat:
                times[f"update_f{f:g}"].append(time.perf_counter() - start)
        if repeat == 0:
            continue  # compilation
        times["sampling"].append(timings["Time-Sampling"])
        times["processing"].append(timings["Time-SampleProc"])
        times["inner"].append(timings["Time-InnerStep"])
        times["trpo_exact"].append(exact_s)
        times["trpo_gauss_newton"].append(gn_s)
        times["disagreement_jitted"].append(jitted_s)
        times["disagreement_eager"].append(eager_s)
    theta = ravel_pytree(learner_state.meta_params)[0]
    d_exact = ravel_pytree(exact)[0] - theta
    d_gn = ravel_pytree(gauss_newton)[0] - theta
    median = {k: statistics.median(v) for k, v in times.items()}
    update_steps = {f: ravel_pytree(new.meta_params)[0] - theta for f, (new, _) in update_results.items()}
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {default_num_threads()} threads",
        "imagined_steps_per_pass": config.tasks_per_iter * args.rollouts * config.horizon,
        "seconds": {k: round(v, 3) for k, v in median.items()},
        "trpo_exact_over_gauss_newton": round(median["trpo_exact"] / median["trpo_gauss_newton"], 2),
        "disagreement_eager_over_jitted": round(median["disagreement_eager"]
                                                / median["disagreement_jitted"], 2),
        "relative_step_difference": float(np.linalg.norm(d_gn - d_exact) / np.linalg.norm(d_exact)),
        "cg_subsample": {
            f"{f:g}": {
                "update_seconds": round(median[f"update_f{f:g}"], 3),
                "dLoss": float(info["dLoss"]), "MeanKL": float(info["MeanKL"]),
                "NumBacktracks": int(info["NumBacktracks"]),
                "step_distance_from_f1": (float(np.linalg.norm(update_steps[f] - update_steps[1.0])
                                                / np.linalg.norm(update_steps[1.0]))
                                          if 1.0 in update_steps else None),
            } for f, (_, info) in update_results.items()},
        "meta_step_seconds": round(median["sampling"] + median["processing"] + median["inner"]
                                   + median["trpo_gauss_newton"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
