"""How much of the DiCE reward-to-go Ψ̃ can any state-dependent control variate predict?

A TMAML control variate b(s_t, t/T) can only remove the part of Ψ̃_t that is predictable from
the state (docs/reproductions.md). This script samples one batch at a run's checkpoint, fits a
value network per task with Adam on half of the task's trajectories, and reports the explained
variance of Ψ̃ on that half (in-sample) and on the other half (held out, which is what a
cross-fitted control variate achieves). Usage:

    python examples/cv_predictability.py RUN_DIR [--tasks 4] [--rollouts 40] [--steps 20,100,1500]
"""

from __future__ import annotations

import argparse
import dataclasses

import jax

from adaptrl import estimators as est
from adaptrl.algorithms.meta_rl import MetaRL, sample_and_adapt, task_seed
from adaptrl.experiment.evaluation import load_run
from adaptrl.meta import control_variates as cv


def fit_value(features, targets, mask, steps: int, lr: float = 1e-3, hidden=(64, 64)):
    """A value network ValueMLP(s, t/T) fitted with Adam; returns its prediction function."""
    net = cv.ValueMLP(hidden)
    params = cv.fit_regression(net.apply, net.init(jax.random.PRNGKey(0), features[:1, 0]), features,
                               targets, mask, lr, steps)
    return lambda f: net.apply(params, f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=40, help="trajectories per task (two halves)")
    parser.add_argument("--steps", default="20,100,1500", help="Adam steps of the fit, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config, state, _ = load_run(args.run_dir)
    config = dataclasses.replace(config, tasks_per_iter=args.tasks, rollouts_per_task=args.rollouts)
    exp = MetaRL.build(config)
    try:
        tasks = exp.env.sample_tasks(args.tasks, seed=task_seed(jax.random.PRNGKey(args.seed)))
        result = sample_and_adapt(exp, state.meta_params, tasks, jax.random.PRNGKey(args.seed + 1),
                                  config.inner_steps)
        batch = result.batches[-1]  # the post-update round, which the outer objective uses
    finally:
        exp.close()
    print("task  std(Ψ̃)  " + "  ".join(f"EV in/held-out @{s}" for s in args.steps.split(",")))
    for i in range(args.tasks):
        features = cv.state_features(batch.observations[i])
        targets = est.reward_to_go(batch.dice_rewards[i], batch.mask[i])
        (fa, fb), (ya, yb), (ma, mb) = (cv.halves(x, False) for x in (features, targets, batch.mask[i]))
        cells = []
        for steps in (int(s) for s in args.steps.split(",")):
            value = fit_value(fa, ya, ma, steps)
            cells.append(f"{float(cv.explained_variance(value(fa), ya, ma)):6.3f} / "
                         f"{float(cv.explained_variance(value(fb), yb, mb)):6.3f}")
        print(f"{i:4d}  {float(targets.std()):7.2f}  " + "   ".join(cells))


if __name__ == "__main__":
    main()
