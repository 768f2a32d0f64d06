"""``adaptrl eval``: meta-test a run's latest checkpoint on fresh tasks."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``eval`` to ``subparsers`` (an argparse subparsers object); returns its parser."""
    parser = subparsers.add_parser("eval", help="meta-test a run on fresh tasks", description=(
        "Load RUN_DIR's latest checkpoint (or, with --iteration N, its snapshot after N iterations), "
        "sample --tasks fresh tasks, adapt --adapt-steps times "
        "(one freshly sampled batch per step; any K, not only the training K) and report the "
        "mean return after every step with a Student-t 95% confidence interval across tasks. Writes "
        "RUN_DIR/eval_kK_tasksN_seedS.csv (with the iteration, tasks, rollouts and seed in every "
        "row). The adaptation is the training one (plain steps θ + α⊙g) unless --inner-optimizer adam "
        "(the original ProMP meta-tester's: Adam, β1 0.9, β2 0.999, ε 1e-8, at the run's inner_lr, "
        "its state kept per task across the steps), --inner-lr or --inner-grad-norm say otherwise; "
        "then the file is eval_kK_tasksN_seedS_OPT_lrLR_gradnorm-NORM.csv and every row records the "
        "three settings (docs/algorithms.md, Meta-testing). Single-task envs (trpo, ppo, vpg) and "
        "model-based runs: --tasks fresh episodes of the one task (MB-MPO: of θ, step 0, and of the "
        "policies adapted on the model, step 1)."))
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by adaptrl train")
    parser.add_argument("--tasks", type=int, default=40, help="fresh tasks (default 40)")
    parser.add_argument("--adapt-steps", type=int, default=None,
                        help="adaptation steps (default: training K)")
    parser.add_argument("--rollouts", type=int, default=None, help="trajectories per task and step "
                        "(default: training value)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the test tasks (default: "
                        "training seed + 1000003, disjoint from training)")
    parser.add_argument("--inner-optimizer", default="sgd", metavar="NAME",
                        help="adaptation at meta-test: sgd (default: the training step θ + α⊙g) or "
                        "adam (the original meta-tester's Adam, state per task across steps)")
    parser.add_argument("--inner-lr", type=float, default=None, metavar="LR",
                        help="step size α of the meta-test adaptation, > 0 (default: the run's "
                        "inner_lr, or its learned per-parameter α)")
    parser.add_argument("--inner-grad-norm", default=None, metavar="NORM",
                        help="none or unit: normalise every inner gradient to norm 1, θ + α⊙g/‖g‖, so "
                        "estimators of different scale (DiCE vs LVC) compare at equal step size "
                        "(default: the run's inner_grad_norm)")
    parser.add_argument("--iteration", type=int, default=None, metavar="N",
                        help="evaluate the snapshot kept after N iterations (runs trained with "
                        "--set snapshot_every=M keep every M-th; default: the latest checkpoint)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Evaluate, write ``eval_kK_tasksN_seedS[_OPT_lrLR_gradnorm-NORM].csv`` and print the per-step
    table (or one JSON object)."""
    from rich.console import Console
    from rich.table import Table

    from adaptrl.experiment.evaluation import evaluate, write_eval

    report = evaluate(args.run_dir, tasks=args.tasks, adapt_steps=args.adapt_steps,
                      rollouts=args.rollouts, seed=args.seed, inner_optimizer=args.inner_optimizer,
                      inner_lr=args.inner_lr, inner_grad_norm=args.inner_grad_norm,
                      iteration=args.iteration)
    path = write_eval(args.run_dir, report)
    report.pop("result")
    if args.json:
        print(json.dumps(report))
        return
    from adaptrl.envs import is_single_task
    from adaptrl.experiment.rundir import load_run_config

    if is_single_task(load_run_config(args.run_dir).env):
        unit = "episodes" if report["rollouts"] == 1 else "batches"
        each = f" ({report['rollouts']} episodes each)" if report["rollouts"] > 1 else ""
        title = (f"{args.run_dir} (iteration {report['iteration']}): {report['tasks']} fresh {unit} of "
                 f"the one task{each}, seed {report['seed']}")
        spread_name = f"std across {unit}"
    else:
        title = (f"{args.run_dir} (iteration {report['iteration']}): {report['tasks']} fresh tasks, "
                 f"{report['rollouts']} rollouts each, seed {report['seed']}")
        if report.get("adaptation"):
            a = report["adaptation"]
            title += (f"; adaptation {a['inner_optimizer']}, α {a['inner_lr']}, "
                      f"gradient normalisation {a['inner_grad_norm']}")
        spread_name = "std across tasks"
    table = Table(title=title)
    for col in ("step", "mean return", "95% CI", spread_name):
        table.add_column(col, justify="right")
    for row in report["rows"]:
        interval = ("n/a (one task)" if math.isnan(row["ci95_low"])
                    else f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]")
        spread = "n/a" if math.isnan(row["std_across_tasks"]) else f"{row['std_across_tasks']:.2f}"
        table.add_row(str(row["step"]), f"{row['mean_return']:.2f}", interval, spread)
    console = Console()
    console.print(table)
    console.print(f"wrote {path}")
