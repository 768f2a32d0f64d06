"""``adaptrl`` command line.

Verbs: ``train`` (meta-train an algorithm preset into a run directory), ``eval`` (meta-test a
run on fresh tasks for any number of adaptation steps), ``plot`` (curves of runs, mean ± std over
seeds), ``gradients`` (meta-gradient variance/accuracy, ProMP Fig. 6 directions),
``reproduce`` (a named paper experiment: algorithms × seeds and its comparison figure), ``envs`` (the task
families), ``sample`` (random-policy returns per task, with a plot) and
``bench sampler`` (sampler throughput against raw batched MuJoCo stepping).
Bad input prints one ``error:`` line and exits with status 2.

Each verb is a module of this package with ``add_parser(subparsers)`` (which registers its
``run(args)`` as ``func``); the modules parse, call the library and print.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version

from adaptrl.cli import bench, envs, gradients, plot, reproduce, sample, train
from adaptrl.cli import eval as eval_verb
from adaptrl.errors import AdaptrlError

VERBS = (train, eval_verb, plot, gradients, reproduce, envs, sample, bench)
"""The verb modules, in the order ``adaptrl --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The ``adaptrl`` parser with every verb."""
    parser = argparse.ArgumentParser(
        prog="adaptrl",
        description="Fast-adapting RL: gradient-based meta-RL and model-based RL on batched MuJoCo.",
    )
    parser.add_argument("--version", action="version", version=f"adaptrl {version('adaptrl')}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adaptrl`` command."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AdaptrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if not str(exc):  # a verb that handled the interrupt says what it did itself
            print("interrupted", file=sys.stderr)
        return 130
    return 0
