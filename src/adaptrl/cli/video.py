"""``adaptrl video``: mp4s of a meta-RL run's pre-update and adapted policies on fresh tasks."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``video`` to ``subparsers`` (an argparse subparsers object); returns its parser."""
    parser = subparsers.add_parser("video", help="videos of pre-update and adapted episodes", description=(
        "Load RUN_DIR's latest checkpoint (or, with --iteration N, its snapshot after N iterations; "
        "a meta-RL run on a task family), sample --tasks N fresh tasks "
        "(those adaptrl eval --tasks N draws with the same seed), adapt --adapt-steps times as in "
        "meta-testing, and "
        "film one episode of the pre-update policy and of each adapted policy, in sequence, in "
        "DIR/task_00.mp4, … with the task, the step and the running return on every frame (one frame "
        "per env step), plus DIR/task_00.png, … (the last frame of the final adapted episode). Point "
        "families are drawn without OpenGL; MuJoCo families need EGL or OSMesa (MUJOCO_GL; "
        "docs/environments.md, Rendering). Needs pip install -e \".[video]\"."))
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by adaptrl train")
    parser.add_argument("--tasks", type=int, default=2, help="fresh tasks, one video each (default 2)")
    parser.add_argument("--adapt-steps", type=int, default=None,
                        help="adaptation steps K; steps 0..K are filmed (default: training K)")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default RUN_DIR/videos)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the tasks, adaptation batches and "
                        "start states (default: training seed + 1000003, as adaptrl eval)")
    parser.add_argument("--fps", type=int, default=None, help="frames per second (default: the env's "
                        "real-time rate 1/dt, within 10..30)")
    parser.add_argument("--width", type=int, default=320, help="frame width in pixels, even (default 320)")
    parser.add_argument("--height", type=int, default=240, help="frame height in pixels, even (default 240)")
    parser.add_argument("--iteration", type=int, default=None, metavar="N",
                        help="film the snapshot kept after N iterations (runs trained with --set "
                        "snapshot_every=M keep every M-th; default: the latest checkpoint; default "
                        "--out then RUN_DIR/videos/itr_N)")
    parser.add_argument("--stochastic", action="store_true",
                        help="sample actions from the policy (default: its mean, deterministic)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Write the videos and stills and print one row per task and step with the episode's return."""
    from rich.console import Console
    from rich.table import Table

    from adaptrl.video import make_videos, mean_returns, step_label

    report = make_videos(args.run_dir, tasks=args.tasks, adapt_steps=args.adapt_steps, out=args.out,
                         seed=args.seed, fps=args.fps, width=args.width, height=args.height,
                         stochastic=args.stochastic, iteration=args.iteration)
    actions = "sampled actions" if report.stochastic else "mean actions"
    table = Table(title=(f"{report.run_dir} (iteration {report.iteration}) on {report.env}: "
                         f"{len(report.videos)} tasks, {actions}, seed {report.seed}"))
    for col, justify in (("file", "left"), ("task", "left"), ("step", "left"), ("return", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for video in report.videos:
        for k, ret in enumerate(video.returns):
            first = k == 0
            table.add_row(f"{video.video.name}, {video.still.name}" if first else "",
                          video.label if first else "", step_label(k), f"{ret:.2f}")
    console = Console()
    console.print(table)
    means = ", ".join(f"step {k} {m:.2f}" for k, m in enumerate(mean_returns(report)))
    console.print(f"mean return: {means}")
    console.print(f"wrote {len(report.videos)} videos ({report.width}x{report.height}, {report.fps} fps) "
                  f"and stills to {report.out}")
