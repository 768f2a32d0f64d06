"""``adaptrl gradients``: meta-gradient variance and accuracy, ProMP Fig. 6 directions, or gradient
statistics along meta-training."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``gradients`` to ``subparsers`` (an argparse subparsers object); returns its parser."""
    from adaptrl.analysis.gradients import ESTIMATOR_LABELS

    names = "\n".join(f"  {name:<14} {text}" for name, text in ESTIMATOR_LABELS.items())
    g = subparsers.add_parser(
        "gradients", help="meta-gradient variance and accuracy study",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=(
            "At fixed policy parameters (a fresh init, or --checkpoint RUN_DIR) and fixed tasks, "
            "resample --batches independent batches per estimator and batch size (trajectories per "
            "task) and report the meta-gradient's relative std √ΣVar/‖mean‖, the per-coordinate "
            "relative std, the mean cosine to the mean gradient and, with --truth-rollouts N, the "
            "Pearson correlation with a large-sample ground truth. Writes OUT/gradients.csv and "
            "OUT/gradients.png (ProMP Fig. 4 / TMAML Fig. 4 style).\n"
            "--directions draws ProMP Fig. 6 instead (formulation I vs II on Point1D); "
            "--during-training N meta-trains --algo and logs Meta-GradientRStd into progress.csv "
            "every N iterations.\n\nestimators:\n" + names))
    g.add_argument("--env", default="Point1DRandGoal", help="task family (default Point1DRandGoal)")
    g.add_argument("--algo", default="lvc-vpg", help="base preset whose data settings are used "
                   "(default lvc-vpg); the estimator sets the composition")
    g.add_argument("--preset", default="default", choices=("default", "paper"))
    g.add_argument("--estimators", default="lvc,dice,dice-cv,dice-cv-paper",
                   help="comma-separated (default lvc,dice,dice-cv,dice-cv-paper)")
    g.add_argument("--batch-sizes", default="5,10,20", help="trajectories per task, comma-separated")
    g.add_argument("--batches", type=int, default=10, help="independent batches per point (default 10)")
    g.add_argument("--tasks", type=int, default=None, help="tasks (default: the preset's)")
    g.add_argument("--checkpoint", default=None, metavar="RUN_DIR",
                   help="evaluate at RUN_DIR's latest parameters (same env and policy architecture)")
    g.add_argument("--truth-rollouts", type=int, default=0,
                   help="trajectories per task of the ground truth (0 = no ground truth)")
    g.add_argument("--truth-batches", type=int, default=4, help="batches averaged for the truth")
    g.add_argument("--truth-estimator", default="dice", help="unbiased estimator of the truth")
    g.add_argument("--cv-warmup", type=int, default=5, help="batches that train a meta CV first")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    g.add_argument("--out", default=None, help="output folder (default gradients-ENV)")
    g.add_argument("--directions", action="store_true", help="ProMP Fig. 6 study (Point1D)")
    g.add_argument("--iterations", type=int, default=100,
                   help="--directions / --during-training: meta-training iterations")
    g.add_argument("--seeds", type=int, default=3, help="--directions: seeds per formulation")
    g.add_argument("--during-training", type=int, default=0, metavar="N",
                   help="meta-train --algo on --env, logging gradient statistics every N iterations")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=run)
    return g


def run(args: argparse.Namespace) -> None:
    """Run the study ``args`` select and print its results."""
    from rich.console import Console

    from adaptrl.analysis.studies import study_setup, train_with_gradient_stats
    from adaptrl.experiment.config import parse_int_list, parse_set

    console = Console(stderr=True)
    overrides = parse_set(args.set)
    if args.tasks is not None:
        overrides["tasks_per_iter"] = args.tasks
    if args.directions:
        _directions(args, overrides, console)
        return
    if args.during_training:
        run_dir = train_with_gradient_stats(
            args.algo, args.env, every=args.during_training, batches=args.batches,
            iterations=args.iterations, seed=args.seed, preset=args.preset, overrides=overrides,
            out=args.out, show_progress=not args.no_progress)
        console.print(f"wrote {run_dir}/progress.csv (Meta-GradientRStd every "
                      f"{args.during_training} iterations)")
        return
    base, policy_params = study_setup(args.algo, args.env, seed=args.seed, preset=args.preset,
                                      overrides=overrides, checkpoint=args.checkpoint)
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    sizes = parse_int_list(args.batch_sizes, "--batch-sizes")
    _study(args, base, policy_params, estimators, sizes, console)


def _directions(args: argparse.Namespace, overrides: dict[str, Any], console: Any) -> None:
    from rich.progress import Progress

    from adaptrl.analysis.directions import directions_study

    out = args.out or "gradients-directions"
    with Progress(disable=args.no_progress, transient=True) as bar:
        task = bar.add_task("formulations I and II", total=2 * args.seeds * args.iterations)
        result = directions_study(out, iterations=args.iterations, seeds=args.seeds,
                                  overrides=overrides or None, progress=lambda: bar.advance(task))
    for row in result.rows:
        console.print(f"formulation {row['formulation']} seed {row['seed']}: post-update return "
                      f"{row['final_post_update_return']:.3f}, "
                      f"θ = ({row['theta0']:.3f}, {row['theta1']:.3f}), "
                      f"direction spread {row['direction_spread_rad']:.2f} rad")
    console.print(f"wrote {result.csv_path} and {result.figure_path}")


def _study(args: argparse.Namespace, base: Any, policy_params: Any, estimators: list[str],
           sizes: list[int], console: Any) -> None:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from adaptrl.analysis.gradients import gradient_study
    from adaptrl.analysis.studies import result_columns, study_steps

    total = study_steps(estimators, sizes, args.batches, cv_warmup=args.cv_warmup,
                        truth_rollouts=args.truth_rollouts, truth_batches=args.truth_batches)
    with Progress(disable=args.no_progress, transient=True) as bar:
        task = bar.add_task("meta-gradients", total=total)
        result = gradient_study(
            base, estimators, sizes, num_batches=args.batches, out=args.out or f"gradients-{base.env}",
            policy_params=policy_params,
            truth_estimator=args.truth_estimator if args.truth_rollouts else None,
            truth_rollouts=args.truth_rollouts, truth_batches=args.truth_batches, cv_warmup=args.cv_warmup,
            seed=args.seed, progress=lambda name, n: bar.advance(task, n))
    table = Table(title=f"{base.env}: {args.batches} batches per point, {base.tasks_per_iter} tasks")
    cols = result_columns(result)
    for col in cols:
        table.add_column(col, justify="right")
    for row in result.rows:
        table.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols])
    Console().print(table)
    console.print(f"wrote {result.csv_path} and {result.figure_path}")
