"""``adaptrl sample``: random-policy returns per task, with ``returns.csv`` and ``returns.png``."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sample`` to ``subparsers`` (an argparse subparsers object); returns its parser."""
    parser = subparsers.add_parser("sample", help="collect trajectories with a random policy", description=(
        "Sample TASKS tasks, collect ROLLOUTS trajectories per task with a freshly initialised "
        "Gaussian MLP policy, print the return of every task and write returns.csv and "
        "returns.png to --out."))
    parser.add_argument("--env", default="HalfCheetahRandDirec", help="task family (see `adaptrl envs`)")
    parser.add_argument("--tasks", type=int, default=8, help="number of tasks (default 8)")
    parser.add_argument("--rollouts", type=int, default=10, help="trajectories per task (default 10)")
    parser.add_argument("--horizon", type=int, default=None, help="steps per trajectory (default: family's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of tasks, resets, noise and init")
    parser.add_argument("--out", default="demo-output",
                        help="folder for returns.csv and returns.png (default: %(default)s)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Sample, print the per-task table and write the CSV and the plot."""
    from rich.console import Console
    from rich.table import Table

    from adaptrl.envs import canonical_name
    from adaptrl.sampler_demo import sample_random_policy, write_returns

    console = Console()
    with console.status(f"sampling {args.tasks}×{args.rollouts} trajectories of {canonical_name(args.env)}"):
        result = sample_random_policy(args.env, tasks=args.tasks, rollouts=args.rollouts,
                                      horizon=args.horizon, seed=args.seed)
    table = Table(title=f"{result.env}: random-policy returns per task")
    table.add_column("task")
    for key in result.task_keys:
        table.add_column(key)
    for col in ("mean return", "std", "mean length"):
        table.add_column(col, justify="right")
    for i, (entries, returns, lengths) in enumerate(zip(result.entries, result.returns, result.lengths,
                                                        strict=True)):
        table.add_row(str(i), *entries, f"{returns.mean():.2f}", f"{returns.std():.2f}",
                      f"{lengths.mean():.1f}")
    console.print(table)
    csv_path, png_path = write_returns(result, args.out)
    console.print(f"{result.num_env_steps} env steps · wrote {csv_path} and {png_path}")
