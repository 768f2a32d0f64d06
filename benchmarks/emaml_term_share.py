"""How much of E-MAML's meta-gradient is its pre-update credit term (issue "paper-budget
reproduction", the MAML-VPG ≈ E-MAML-VPG overlap of ProMP Fig. 3).

At fixed policy parameters (a fresh initialisation, or ``--checkpoint RUN_DIR``'s) and one set of
tasks, each of ``--batches`` independent batches (every adaptation step resampled) is turned into
both meta-gradients *on the same trajectories*: g_E of ``emaml-vpg`` (MAML's objective + the term
Σ_n ∇log π(τ⁽ⁿ⁾)·⊥R̂'_i, docs/algorithms.md "E-MAML term") and g_M of ``maml-vpg`` (MAML alone).
The difference d = g_E − g_M is the term's gradient. Reported per batch: ‖d‖/‖g_M‖ and
cos(g_E, g_M); across batches: the signal-to-noise of d, ‖mean_b d‖ / √(Σ_j Var_b d_j), against
the same figure for g_M. An SNR of d far below 1 means the term adds noise, not direction.

Usage: ``.venv/bin/python benchmarks/emaml_term_share.py [--env HalfCheetahRandDirec]
[--batches 5] [--preset paper] [--set KEY=VALUE ...] [--checkpoint RUN_DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform

import jax
import numpy as np

from adaptrl.algorithms.meta_rl import MetaRL, sample_and_adapt
from adaptrl.analysis.statistics import flatten
from adaptrl.analysis.studies import checkpoint_policy_params
from adaptrl.envs.host import default_num_threads
from adaptrl.experiment.config import build_config, parse_set
from adaptrl.meta.batch import stack_steps


def snr(samples: np.ndarray) -> float:
    """‖mean_b x‖ / √(Σ_j Var_b x_j) of ``[B, P]`` samples (B − 1 degrees of freedom)."""
    return float(np.linalg.norm(samples.mean(0)) / np.sqrt(samples.var(0, ddof=1).sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetahRandDirec")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint", default=None, help="a run directory whose policy to use")
    args = parser.parse_args()
    overrides = {**parse_set(args.set), "seed": args.seed}
    emaml = MetaRL.build(build_config("emaml-vpg", args.env, preset=args.preset, overrides=overrides))
    maml_config = dataclasses.replace(emaml.config, algo="maml-vpg", emaml=False)
    maml = MetaRL(maml_config, emaml.env, emaml.sampler,
                  type(emaml.learner)(maml_config, emaml.env.spec.obs_dim, emaml.env.spec.act_dim))
    state = emaml.learner.init(jax.random.PRNGKey(args.seed))
    if args.checkpoint:
        policy = checkpoint_policy_params(args.checkpoint, emaml.config)
        state = state._replace(meta_params={**state.meta_params, "policy": policy})
    c = emaml.config
    tasks = emaml.env.sample_tasks(c.tasks_per_iter, args.seed)
    print(f"machine: {platform.processor() or platform.machine()}, {default_num_threads()} cores; "
          f"{args.env} --preset {args.preset}: {c.tasks_per_iter} tasks × {c.rollouts_per_task} "
          f"trajectories × {c.horizon or 'paper'} steps, {c.inner_steps} inner step(s), reduction "
          f"{c.loss_reduction}; policy: {'checkpoint ' + args.checkpoint if args.checkpoint else 'fresh'}")
    print("| batch | ‖g_M‖ | ‖d‖ = ‖g_E − g_M‖ | ‖d‖ / ‖g_M‖ | cos(g_E, g_M) |")
    print("|---|---|---|---|---|")
    g_m, d = [], []
    for b in range(args.batches):
        key = jax.random.fold_in(jax.random.PRNGKey(1), b)
        result = sample_and_adapt(emaml, state.meta_params, tasks, key, c.inner_steps)
        batches = stack_steps(result.batches)
        ge = np.asarray(flatten(emaml.learner.meta_gradient(state.meta_params, batches)))
        gm = np.asarray(flatten(maml.learner.meta_gradient(state.meta_params, batches)))
        g_m.append(gm)
        d.append(ge - gm)
        cos = float(ge @ gm / (np.linalg.norm(ge) * np.linalg.norm(gm)))
        print(f"| {b} | {np.linalg.norm(gm):.4g} | {np.linalg.norm(ge - gm):.4g} | "
              f"{np.linalg.norm(ge - gm) / np.linalg.norm(gm):.3f} | {cos:.3f} |", flush=True)
    g_m, d = np.stack(g_m), np.stack(d)
    print(f"signal-to-noise across batches: MAML gradient {snr(g_m):.3f}, E-MAML term {snr(d):.3f}; "
          f"‖mean d‖ / ‖mean g_M‖ = {np.linalg.norm(d.mean(0)) / np.linalg.norm(g_m.mean(0)):.3f}")


if __name__ == "__main__":
    main()
