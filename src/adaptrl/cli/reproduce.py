"""``adaptrl reproduce``: a named experiment of the papers (see :mod:`adaptrl.experiment.campaigns`)."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from adaptrl.errors import AdaptrlError, ConfigError

if TYPE_CHECKING:
    from adaptrl.experiment.campaigns import ReproduceResult

REPRODUCE_DESCRIPTION = (
    "Reproduce a named experiment of the papers: train every labelled run for each seed into "
    "OUT/NAME/LABEL-sSEED (OUT/NAME/ENV/LABEL-sSEED for experiments on several environments; "
    "ordinary run directories), then draw OUT/NAME/comparison.png (mean ± std across seeds per "
    "label), OUT/NAME/summary.csv (final pre-/post-update and reported real return, mean and std, "
    "environment steps, real steps to reach the target return, wall-clock) and OUT/NAME/commands.txt "
    "(the equivalent `adaptrl train` commands). The model-based experiments have a budget of real "
    "environment steps: each run trains the iterations that reach it. Rerunning the same command "
    "skips finished runs and resumes interrupted ones from their checkpoints; a folder holding "
    "another configuration is an error. --list shows the experiments.")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``reproduce`` to ``subparsers`` (an argparse subparsers object); returns its parser."""
    from adaptrl.experiment.campaigns import DEFAULT_OUT, EXPERIMENTS

    parser = subparsers.add_parser("reproduce", help="reproduce an experiment of the papers",
                                   description=REPRODUCE_DESCRIPTION)
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help=f"experiment: {', '.join(EXPERIMENTS)} (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="seeds 0..N-1 (default 3)")
    parser.add_argument("--seed-list", default=None, metavar="S,S,...", help="explicit seeds, e.g. 0,1,2")
    parser.add_argument("--scale", type=float, default=1.0, metavar="F",
                        help="train round(F × the paper's iterations) iterations, at least 1, or for a "
                        "real-step budget the iterations that reach F × that budget (default 1)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"root folder (default {DEFAULT_OUT})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting of every run that is trained (all, or those --only and "
                             "--envs select; repeatable); see adaptrl train --help. ALGO:KEY=VALUE sets it "
                             "for every run of algorithm ALGO, trained or only drawn (pass the same flags "
                             "to --plot-only), e.g. --set me-trpo:rollouts_per_task=50")
    parser.add_argument("--only", default=None, metavar="LABEL,...", help="train only these labels")
    parser.add_argument("--envs", default=None, metavar="ENV,...",
                        help="train (with --plot-only: draw) only these environments of a "
                             "multi-environment experiment")
    parser.add_argument("--ray", action="store_true", help="run each run as a Ray task (pip install "
                        "'adaptrl[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="the Ray cluster to use, e.g. auto (the one `ray start` started here) or "
                        "HOST:PORT (default: a new local cluster)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="at most N runs at once (N > 1 uses Ray; default 1)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, metavar="C",
                        help="CPUs Ray reserves per run (default 1)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each run, its status and its `adaptrl train` command; train nothing")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw comparison.png and summary.csv from the existing runs (of "
                             "the --envs environments when given, else of all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """List, plan (``--dry-run``), redraw (``--plot-only``) or train the experiment ``args.name``."""
    from rich.console import Console

    from adaptrl.experiment.campaign_output import format_plan
    from adaptrl.experiment.campaign_runner import (
        check_scale,
        plan_experiment,
        plot_experiment,
        run_experiment,
        select_envs,
        select_labels,
    )
    from adaptrl.experiment.campaigns import EXPERIMENTS, format_registry, get_experiment
    from adaptrl.experiment.config import parse_int_list, parse_set

    if args.list:
        print(format_registry())
        return
    if not args.name:
        raise ConfigError(f"reproduce needs NAME, one of {', '.join(EXPERIMENTS)} (or --list).")
    exp = get_experiment(args.name)
    if args.seed_list is not None and args.seeds is not None:
        raise ConfigError("give either --seeds N or --seed-list S,S,..., not both.")
    seeds = args.seeds if args.seed_list is None else parse_int_list(args.seed_list, "--seed-list")
    overrides = parse_set(args.set)
    only = None if args.only is None else [label.strip() for label in args.only.split(",") if label.strip()]
    labels = select_labels(exp, only)
    envs = None if args.envs is None else [env.strip() for env in args.envs.split(",") if env.strip()]
    env_list = select_envs(exp, envs)
    check_scale(args.scale)
    if args.dry_run:
        planned = plan_experiment(exp.name, seeds=seeds, scale=args.scale, out=args.out, overrides=overrides,
                                  envs=env_list, train_labels=labels)
        print(format_plan(exp, [item for item in planned if item.label in labels], args.out))
        return
    if args.plot_only:
        _print_summary(plot_experiment(exp.name, seeds=seeds, scale=args.scale, out=args.out,
                                       overrides=overrides, envs=envs))
        return
    console = Console(stderr=True)
    result = run_experiment(exp.name, seeds=seeds, scale=args.scale, out=args.out, overrides=overrides,
                            workers=args.workers, use_ray=args.ray, ray_address=args.ray_address,
                            cpus_per_run=args.cpus_per_run, show_progress=not args.no_progress, only=only,
                            envs=envs, log=console.print)
    if result.interrupted:
        console.print(f"interrupted: checkpoint written; rerun the same command to resume {exp.name}.")
        raise KeyboardInterrupt
    _print_summary(result)
    if result.failed:
        raise AdaptrlError(f"{len(result.failed)} run(s) diverged (the others finished): "
                           + " | ".join(f"{path}: {message}" for path, message in result.failed.items()))


def _steps(steps: float, target: float) -> str:
    if math.isnan(target):
        return "–"
    return f"{steps:.3g} (≥ {target:.0f})" if math.isfinite(steps) else f"not reached ({target:.0f})"


def _mean_std(row: dict[str, Any], column: str) -> str:
    mean, std = row[f"{column}_mean"], row[f"{column}_std"]
    return "–" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def _print_summary(result: ReproduceResult) -> None:
    """The summary table of ``result``, its notes and the files written."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.summary:
        several = len({row["env"] for row in result.summary}) > 1
        stated = any(math.isfinite(row.get("target", math.nan)) for row in result.summary)
        yardstick = any(math.isfinite(row.get("yardstick_return", math.nan)) for row in result.summary)
        table = Table(title=f"{result.name}: final iteration, mean ± std across seeds")
        meta = all(row["return_key"].startswith("Step_") for row in result.summary)
        returns = ["pre-update", "post-update"] if meta else ["real return"]
        columns = ["env"] * several + ["label", "seeds", "itr", "env steps", *returns] + \
            ["steps to target"] * stated + ["steps to yardstick's final"] * yardstick + ["wall-clock"]
        for col in columns:
            table.add_column(col, justify="left" if col in ("env", "label") else "right")
        for row in result.summary:
            cells = [row["env"]] * several + [
                row["label"], row["seeds"], f"{row['final_itr'] + 1}/{row['iterations']}",
                f"{row['n_timesteps']:.3g}"]
            cells += [_mean_std(row, "pre_update"), _mean_std(row, "post_update")] if meta else \
                [_mean_std(row, "return")]
            if stated:
                cells.append(_steps(row["steps_to_target"], row["target"]))
            if yardstick:
                ratio = row["data_vs_yardstick"]
                cells.append(_steps(row["steps_to_yardstick_return"], row["yardstick_return"])
                             + (f", {ratio:.2g}×" if math.isfinite(ratio) else ""))
            table.add_row(*cells, f"{row['wall_clock_s']:.0f} s")
        console.print(table)
    for note in result.notes:
        console.print(f"note: {note}")
    written = [p for p in (result.figure, result.summary_csv, result.commands_txt) if p is not None]
    if written:
        console.print("wrote " + ", ".join(str(p) for p in written))
