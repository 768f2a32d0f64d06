"""``adaptrl train``: meta-train an algorithm preset (or ``--resume`` a run) into a run directory."""

from __future__ import annotations

import argparse
from typing import Any

from adaptrl.errors import ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``train`` to ``subparsers`` (an argparse subparsers object); returns its parser."""
    from adaptrl.algorithms import ALGORITHMS
    from adaptrl.experiment.config import PAPER_PRESET_SOURCES
    from adaptrl.meta.config import FIELD_HELP, setting_group
    from adaptrl.meta.learner import OUTER_OPTIMIZERS
    from adaptrl.meta.surrogates import INNER_SURROGATES, OUTER_SURROGATES
    from adaptrl.processing import BASELINES

    algos = "\n".join(f"  {name:<11} {text}" for name, text in ALGORITHMS.descriptions().items())
    registries = (("inner_estimator", INNER_SURROGATES), ("outer_objective", OUTER_SURROGATES),
                  ("optimizer", OUTER_OPTIMIZERS), ("baseline", BASELINES))
    parts = "\n".join(
        f"  {setting}:\n" + "\n".join(f"    {name:<17} {text}"
                                       for name, text in registry.descriptions().items())
        for setting, registry in registries)
    group_titles = {"run": "run", "meta": "policy and meta-RL (meta-RL algorithms)",
                    "model": "model-based: real data, dynamics ensemble, model as a simulator",
                    "planner": "model-based: MPC planner"}
    settings = "\n".join(
        f"  [{title}]\n" + "\n".join(f"    {name:<22} {text}" for name, text in FIELD_HELP.items()
                                     if name not in ("algo", "env") and setting_group(name) == group)
        for group, title in group_titles.items())
    parser = subparsers.add_parser(
        "train", help="meta-train an algorithm", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Meta-train ALGO on the task family --env and write a run directory: config.yaml, "
            "progress.csv (ProMP key names: Itr, n_timesteps, Step_k-AverageReturn, ...), "
            "TensorBoard events, checkpoints/ and plots/. Ctrl-C writes a checkpoint; continue "
            "with --resume RUN_DIR.\n\nalgorithms:\n" + algos
            + "\n\nparts an algorithm is composed of (--set SETTING=NAME):\n" + parts
            + "\n\nsettings for --set KEY=VALUE:\n" + settings))
    parser.add_argument("algo", nargs="?", help="algorithm preset (omit with --resume)")
    parser.add_argument("--env", help="task family (see `adaptrl envs`)")
    parser.add_argument("--preset", default="default", choices=("default", "paper"),
                        help="paper: each algorithm's paper settings for the environment, on top of "
                             f"its recipe's values: {PAPER_PRESET_SOURCES}. default: the recipe alone")
    parser.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="outer iterations (default: the preset's, e.g. 1000 for the meta-RL "
                             "recipes, 20 for the model-based ones)")
    parser.add_argument("--out", default=None, help="run directory (default runs/ALGO-ENV-seedN)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting (repeatable), e.g. --set inner_lr=0.05")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue RUN_DIR from its last checkpoint (--iterations may extend it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Build (or load, with ``--resume``) the configuration, train it and report the last row."""
    import dataclasses
    from pathlib import Path

    from rich.console import Console

    from adaptrl.experiment.checkpoints import read_checkpoint
    from adaptrl.experiment.config import build_config, parse_set
    from adaptrl.experiment.rundir import load_run_config
    from adaptrl.experiment.trainer import train

    console = Console(stderr=True)
    if args.resume:
        if args.algo or args.env or args.set or args.seed is not None or args.out or args.preset != "default":
            raise ConfigError("--resume continues a run with its own config.yaml; give only "
                              "--resume RUN_DIR (and optionally --iterations).")
        config = load_run_config(args.resume)
        if args.iterations is not None:
            config = dataclasses.replace(config, iterations=int(args.iterations))
        run_dir = Path(args.resume)
        done = int(read_checkpoint(run_dir)[1]["iteration"])
        if done >= config.iterations:
            console.print(f"{run_dir} is already complete: {done} iterations done, {config.iterations} "
                          "asked for; nothing to do (extend it with --iterations N).")
            return
    else:
        if not args.algo or not args.env:
            raise ConfigError("train needs ALGO and --env (or --resume RUN_DIR); see adaptrl train --help.")
        overrides = parse_set(args.set)
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.iterations is not None:
            overrides["iterations"] = args.iterations
        config = build_config(args.algo, args.env, preset=args.preset, overrides=overrides)
        run_dir = Path(args.out or f"runs/{config.algo}-{config.env}-seed{config.seed}")
    console.print(f"[bold]{config.algo}[/bold] on {config.env}: {describe(config)} → {run_dir}")
    result = train(config, run_dir, resume=bool(args.resume), show_progress=not args.no_progress)
    if result.interrupted:
        console.print(f"interrupted: checkpoint written; continue with adaptrl train --resume {run_dir}")
        raise KeyboardInterrupt("reported")
    last = result.rows[-1] if result.rows else {}
    if last:
        shown = ", ".join(f"{label} {last.get(key, float('nan')):.2f}"
                          for label, key in result.headline.items())
        console.print(f"done: itr {int(last['Itr'])}, {shown}; results in {run_dir}")


def describe(config: Any) -> str:
    """One line on what a run does, from the setting groups its algorithm uses."""
    from adaptrl.algorithms import ALGORITHMS

    groups = ALGORITHMS.get(config.algo).settings
    parts = []
    if "model" in groups:
        sizes = "×".join(str(h) for h in config.model_hidden_sizes)
        parts.append(f"{config.model_members} models ({sizes}), {config.real_steps_per_iter} real steps "
                     f"per iteration × {config.horizon}-step episodes")
    if "planner" in groups:
        parts.append(f"{config.planner} planner ({config.plan_candidates} candidates × "
                     f"{config.plan_horizon} steps)")
    if "imagination" in groups:
        most = "≤ " if config.policy_validation != "none" else ""
        parts.append(f"{most}{config.policy_steps_per_iter} policy updates per iteration on "
                     f"{config.tasks_per_iter} imagined tasks × {config.rollouts_per_task} rollouts, "
                     f"K = {config.inner_steps}")
    if "meta" in groups and "model" not in groups:
        if config.inner_steps == 0 and config.tasks_per_iter == 1:
            parts.append(f"{config.rollouts_per_task} episodes × {config.horizon} steps per iteration")
        else:
            parts.append(f"{config.tasks_per_iter} tasks × {config.rollouts_per_task} rollouts × "
                         f"{config.horizon} steps, K = {config.inner_steps}")
    return "; ".join(parts)
