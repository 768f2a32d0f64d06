"""Shared fixtures for the environment tests."""

from __future__ import annotations

import pytest

from adaptrl.envs import make


@pytest.fixture
def make_env():
    """``make`` that closes every environment it made (host envs own a thread pool) at teardown."""
    made = []

    def factory(name, **options):
        env = make(name, **options)
        made.append(env)
        return env

    yield factory
    for env in made:
        env.close()


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a temporary directory (MuJoCo writes MUJOCO_LOG.TXT to the cwd on warnings)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
