"""Shared fixtures: environments that close themselves, and the interrupted-and-resumed run.

The tests call ``adaptrl.cli.main`` in this process; it would point JAX's compilation cache at the
user's cache folder for the rest of the session, so the tests opt out
(``ADAPTRL_NO_COMPILATION_CACHE``) unless told otherwise. ``make test`` still caches in
``.jax_cache`` (its ``JAX_COMPILATION_CACHE_DIR``, which JAX reads itself).

Most of the suite's time is XLA compiling small programs that then run for milliseconds, so the
tests compile with LLVM's optimisation level 0 (``--xla_backend_optimization_level=0`` in
``XLA_FLAGS``, set before JAX starts its backend): it halves the TMAML tests' time, and the
programs compute the same operations (the level changes LLVM's code generation, not XLA's
graph). Set ``ADAPTRL_TEST_XLA_OPTIMIZED=1`` to test at the default level users run at.
"""

from __future__ import annotations

import os
import warnings

if not os.environ.get("ADAPTRL_TEST_XLA_OPTIMIZED") and \
        "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""),
                                        "--xla_backend_optimization_level=0"]).strip()

import gymnasium
import pytest

import adaptrl  # noqa: F401  (registers the Gymnasium ids)
from adaptrl.envs import make

os.environ.setdefault("ADAPTRL_NO_COMPILATION_CACHE", "1")


def gym_make(name, **kwargs):
    """``gymnasium.make("adaptrl/<name>-v0")`` without the checker's space-bound warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gymnasium.make(f"adaptrl/{name}-v0", **kwargs)


def closing(constructor):
    """Generator for a fixture: yields ``constructor`` wrapped so that every environment it made
    is closed at teardown (host envs own a thread pool)."""
    made = []

    def factory(*args, **kwargs):
        env = constructor(*args, **kwargs)
        made.append(env)
        return env

    yield factory
    for env in made:
        env.close()


@pytest.fixture
def make_env():
    """``adaptrl.envs.make`` that closes what it made."""
    yield from closing(make)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a temporary directory, so files written relative to the cwd stay out of the checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def gym_env():
    """:func:`gym_make` that closes what it made."""
    yield from closing(gym_make)


@pytest.fixture
def interrupted_run():
    """``run(config, tmp_path, after=1, plots=False) → (straight_dir, resumed_dir)``: train ``config``
    uninterrupted into ``straight``, and into ``resumed`` with a Ctrl-C after iteration ``after``
    (checked to be interrupted), which is then resumed to the end."""
    from adaptrl.experiment.trainer import train

    def run(config, tmp_path, after=1, plots=False, between=None):
        quiet = dict(show_progress=False, tensorboard=False)
        train(config, tmp_path / "straight", make_plots=False, **quiet)

        def interrupt(row):
            if row["Itr"] == after:
                raise KeyboardInterrupt

        result = train(config, tmp_path / "resumed", callback=interrupt, make_plots=False, **quiet)
        assert result.interrupted
        if between is not None:
            between(tmp_path / "resumed")
        train(config, tmp_path / "resumed", resume=True, make_plots=plots, **quiet)
        return tmp_path / "straight", tmp_path / "resumed"

    return run
