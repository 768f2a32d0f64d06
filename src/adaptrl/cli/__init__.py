"""``adaptrl`` command line.

Verbs: ``train`` (meta-train an algorithm preset into a run directory), ``eval`` (meta-test a
run on fresh tasks for any number of adaptation steps), ``video`` (mp4s of a meta-RL run's
pre-update and adapted episodes on fresh tasks), ``plot`` (curves of runs, mean ± std over
seeds), ``gradients`` (meta-gradient variance/accuracy, ProMP Fig. 6 directions),
``reproduce`` (a named paper experiment: algorithms × seeds and its comparison figure), ``envs`` (the task
families), ``sample`` (random-policy returns per task, with a plot) and
``demo`` (ProMP on PointCorners with its closing table, ``make demo``) and ``bench sampler``
(sampler throughput against raw batched MuJoCo stepping).
Bad input prints one ``error:`` line and exits with status 2.

The command (not ``import adaptrl``) turns on JAX's persistent compilation cache
(:func:`configure_compilation_cache`), so a second ``adaptrl`` command does not compile again.

Each verb is a module of this package with ``add_parser(subparsers)`` (which registers its
``run(args)`` as ``func``); the modules parse, call the library and print.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path

from adaptrl.cli import bench, demo, envs, gradients, plot, reproduce, sample, train, video
from adaptrl.cli import eval as eval_verb
from adaptrl.errors import AdaptrlError

VERBS = (train, eval_verb, video, plot, gradients, reproduce, demo, envs, sample, bench)
"""The verb modules, in the order ``adaptrl --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The ``adaptrl`` parser with every verb."""
    parser = argparse.ArgumentParser(
        prog="adaptrl",
        description="Fast-adapting RL: gradient-based meta-RL and model-based RL on batched MuJoCo.",
    )
    parser.add_argument("--version", action="version", version=f"adaptrl {version('adaptrl')}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True,
                                  help="the command to run (adaptrl VERB --help for its options)")
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


NO_CACHE_VARIABLE = "ADAPTRL_NO_COMPILATION_CACHE"
"""Set to 1 to keep adaptrl from configuring JAX's compilation cache."""

CACHE_MIN_COMPILE_SECONDS = 1.0
"""Only programs that took at least this long to compile are cached (JAX's default)."""


def compilation_cache_dir(environ: Mapping[str, str]) -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/adaptrl/jax``, else ``~/.cache/adaptrl/jax``."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "adaptrl" / "jax"


def configure_compilation_cache(environ: Mapping[str, str] | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache for this process; returns its folder, or None.

    ``JAX_COMPILATION_CACHE_DIR``, when set (the Makefile sets ``.jax_cache``), is used as it is
    (JAX reads it itself); otherwise the cache goes to :func:`compilation_cache_dir`. With
    ``ADAPTRL_NO_COMPILATION_CACHE=1`` nothing is changed. The folder is also exported in
    ``JAX_COMPILATION_CACHE_DIR`` so that child processes (``adaptrl reproduce``'s runs, local Ray
    workers) share it. Only the command calls this: importing adaptrl leaves JAX's configuration
    alone."""
    environ = os.environ if environ is None else environ
    if environ.get(NO_CACHE_VARIABLE, "").strip() not in ("", "0"):
        return None
    import jax

    path = environ.get("JAX_COMPILATION_CACHE_DIR") or str(compilation_cache_dir(environ))
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)
    if environ is os.environ:
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adaptrl`` command."""
    args = build_parser().parse_args(argv)
    configure_compilation_cache()
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
