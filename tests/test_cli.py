"""CLI: envs, sample, bench sampler, and clear errors."""

from __future__ import annotations

import json
import os

import pytest

from adaptrl.cli import main
from adaptrl.envs import ALIASES, family_names


def test_envs_json_lists_every_family(capsys):
    assert main(["envs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == family_names()
    by_name = {r["name"]: r for r in rows}
    assert by_name["HalfCheetahRandDirec"]["obs_dim"] == 17
    assert by_name["HalfCheetahRandDirec"]["horizon"] == 100
    assert by_name["AntRandDirec"]["aliases"] == ["AntFwdBack"]
    assert set(ALIASES) <= {a for r in rows for a in r["aliases"]}


def test_envs_table(capsys):
    assert main(["envs", "--details"]) == 0
    out = capsys.readouterr().out
    assert "PointCorners" in out and "reward sign fixed" in out


@pytest.mark.parametrize("env", ["HalfCheetahRandDirec", "PointCorners"])
def test_bench_sampler_json(capsys, env):
    argv = ["bench", "sampler", "--env", env, "--tasks", "2", "--rollouts", "3", "--horizon", "10",
            "--repeats", "1", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("sampler_steps_per_s", "raw_steps_per_s", "ratio"):
        assert result[key] > 0
    assert result["ratio"] == pytest.approx(result["sampler_steps_per_s"] / result["raw_steps_per_s"])
    assert result["env_steps_per_batch"] == 2 * 3 * 10


def test_sample_writes_csv_and_png(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sample", "--env", "PointCorners", "--tasks", "3", "--rollouts", "2",
                 "--horizon", "5", "--out", str(out)]) == 0
    lines = (out / "returns.csv").read_text().splitlines()
    assert lines[0] == "task,rollout,return,length" and len(lines) == 1 + 3 * 2
    assert os.path.getsize(out / "returns.png") > 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "sampler", "--env", "HalfCheetahRandDir"], "Did you mean 'HalfCheetahRandDirec'"),
        (["bench", "sampler", "--tasks", "0"], "--tasks must be a positive integer"),
        (["bench", "sampler", "--env", "PointCorners", "--threads", "2"], "--threads applies"),
        (["sample", "--rollouts", "-3"], "rollouts_per_task must be a positive integer"),
    ],
)
def test_bad_input_gives_one_clear_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err
