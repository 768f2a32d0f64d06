"""``adaptrl plot``: learning curves of run directories."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``plot`` to ``subparsers`` (an argparse subparsers object); returns its parser."""
    parser = subparsers.add_parser("plot", help="plot learning curves of runs", description=(
        "Draw progress.csv curves of one or many run directories; runs with the same algorithm "
        "and env are one curve, mean ± std across seeds. Default keys: the pre-update and the "
        "final post-update average return."))
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories written by adaptrl train (each seed counted once)")
    parser.add_argument("--key", action="append", default=None, help="progress.csv column (repeatable)")
    parser.add_argument("--x", default="n_timesteps", help="x-axis column (default n_timesteps; or Itr)")
    parser.add_argument("--out", default="plot.png",
                        help="output image, .png, .svg or .pdf (default: %(default)s)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> None:
    """Draw the figure and print its path."""
    import sys
    import warnings

    from adaptrl.plots import plot_runs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        path = plot_runs(args.run_dirs, keys=args.key, out=args.out, x_key=args.x)
    for note in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {path}")
