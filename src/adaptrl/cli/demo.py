"""``adaptrl demo``: the library's demonstration (``make demo``), ProMP on PointCorners."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to ``subparsers`` (an argparse subparsers object); returns its parser."""
    from adaptrl.experiment.demo import DEMO_EVAL_TASKS, DEMO_REASONS, DEMO_SETTINGS

    changes = "\n".join(textwrap.fill(f"{key}={value}: {DEMO_REASONS[key]}", 88, initial_indent="  ",
                                       subsequent_indent="    ") for key, value in DEMO_SETTINGS.items())
    parser = subparsers.add_parser(
        "demo", help="train ProMP on PointCorners and show what adaptation does (make demo)",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=textwrap.fill(
            "Train ProMP on PointCorners (ProMP Fig. 5: a sparse reward at one of four corner goals), "
            "meta-test it on fresh tasks and end with a table: the return before and after each "
            "adaptation step with its 95% interval, the post-update success per corner, the "
            "wall-clock and the paths of the pictures (plots/learning_curve.png, "
            "plots/exploration.png). The table is also written to OUT/summary.txt and "
            "OUT/summary.json.", 88) + "\n\nsettings: --preset paper (ProMP App. D) except\n" + changes)
    parser.add_argument("--out", default="demo-output/promp-PointCorners",
                        help="run directory, must not hold a run yet (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--iterations", type=int, default=None,
                        help=f"outer iterations (default {DEMO_SETTINGS['iterations']})")
    parser.add_argument("--eval-tasks", type=int, default=DEMO_EVAL_TASKS,
                        help="fresh tasks of the meta-test (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting (repeatable, as in adaptrl train), e.g. a smaller "
                             "demo: --set tasks_per_iter=4 --set rollouts_per_task=5")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Run the demo and print its closing table."""
    from rich.console import Console

    from adaptrl.experiment.config import parse_set
    from adaptrl.experiment.demo import print_summary, run_demo

    report = run_demo(args.out, iterations=args.iterations, seed=args.seed, eval_tasks=args.eval_tasks,
                      overrides=parse_set(args.set), show_progress=not args.no_progress)
    print_summary(report, Console())
