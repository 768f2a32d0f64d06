"""CLI: envs, sample, bench sampler, and clear errors."""

from __future__ import annotations

import csv
import json
import math
import re
import time

import pytest
from matplotlib.image import imread

from adaptrl.cli import main
from adaptrl.envs import ALIASES, family_names
from adaptrl.plots import DPI


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
    start = time.perf_counter()
    assert main(argv) == 0
    elapsed = time.perf_counter() - start
    result = json.loads(capsys.readouterr().out)
    steps = 2 * 3 * 10
    assert result["env_steps_per_batch"] == steps
    # one timed batch: its rate is its steps over its own reported duration, and the policy and
    # simulator shares of that duration fit in it
    batch_s = result["sampler_seconds_per_batch"]
    assert result["sampler_steps_per_s"] == pytest.approx(steps / batch_s, rel=1e-9)
    assert 0 <= result["sampler_policy_seconds"] + result["sampler_env_seconds"] <= batch_s
    # both the timed batch and the raw reference (same batch size) ran inside this call
    assert 0 < batch_s < elapsed
    assert math.isfinite(result["raw_steps_per_s"]) and result["raw_steps_per_s"] > steps / elapsed
    assert math.isfinite(result["ratio"]) and result["ratio"] > 0
    assert result["ratio"] == pytest.approx(result["sampler_steps_per_s"] / result["raw_steps_per_s"])


def test_bench_sampler_prints_the_ratio_of_its_rates(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # no wrapped lines
    argv = ["bench", "sampler", "--env", "PointCorners", "--tasks", "2", "--rollouts", "3", "--horizon", "10",
            "--repeats", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    def rate(label: str) -> float:
        return float(re.search(rf"{label}:\s+([\d,]+) env-steps/s", out)[1].replace(",", ""))

    sampler, raw = rate(r"sampler \(policy in the loop\)"), rate("raw batched stepping")
    ratio = float(re.search(r"ratio sampler / raw:\s+([\d.]+)", out)[1])
    assert sampler > 0 and raw > 0
    # rates are printed to the step/s, the ratio to 3 decimals
    rounding = 5e-4 + sampler / raw * (0.5 / sampler + 0.5 / raw)
    assert abs(ratio - sampler / raw) <= rounding
    assert "PointCorners" in out and "2 tasks × 3 rollouts × 10 steps (6 envs" in out


def test_sample_writes_csv_and_png(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # no wrapped lines
    out = tmp_path / "out"
    assert main(["sample", "--env", "HalfCheetahRandDirec", "--tasks", "3", "--rollouts", "2",
                 "--horizon", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out / "returns.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["task", "rollout", "return", "length"]
        rows = list(reader)
    assert [(r["task"], r["rollout"]) for r in rows] == [(str(i), str(j)) for i in range(3) for j in range(2)]
    assert all(r["length"] == "5" and math.isfinite(float(r["return"])) for r in rows)
    assert any(float(r["return"]) != 0 for r in rows)
    # the printed table agrees with the CSV: task, direction, mean return, std, mean length
    table = {cells[0]: cells[1:] for line in printed.splitlines()
             if len(cells := [c.strip() for c in line.strip("│ ").split("│")]) == 5 and cells[0].isdigit()}
    assert sorted(table) == ["0", "1", "2"]
    for i, (direction, mean, std, length) in table.items():
        returns = [float(r["return"]) for r in rows if r["task"] == i]
        assert direction in ("1", "-1")
        assert float(mean) == pytest.approx(sum(returns) / 2, abs=0.0051)
        assert float(std) == pytest.approx(abs(returns[0] - returns[1]) / 2, abs=0.0051)
        assert length == "5.0"
    assert f"30 env steps · wrote {out / 'returns.csv'} and {out / 'returns.png'}" in printed
    image = imread(out / "returns.png")
    # the box plot's figure is max(4, 0.7 · tasks + 2) × 3.6 inches at the plots' DPI
    assert image.shape[:2] == (pytest.approx(3.6 * DPI, abs=1), pytest.approx(4.1 * DPI, abs=1))
    assert image[..., :3].std() > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "sampler", "--env", "HalfCheetahRandDir"], "Did you mean 'HalfCheetahRandDirec'"),
        (["bench", "sampler", "--tasks", "0"], "--tasks must be a positive integer"),
        (["bench", "sampler", "--env", "PointCorners", "--threads", "2"], "--threads applies"),
        (["sample", "--rollouts", "-3"], "rollouts_per_task must be a positive integer"),
        (["sample", "--env", "PointCornrs"], "Did you mean 'PointCorners'"),
    ],
)
def test_bad_input_gives_one_clear_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_help_of_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    verbs = ["train", "eval", "plot", "gradients", "reproduce", "envs", "sample", "bench"]
    listed = re.findall(r"^    (\S+)", text, flags=re.MULTILINE)
    assert listed == verbs
    for verb in [*verbs, "bench sampler"]:
        with pytest.raises(SystemExit) as exit_info:
            main([*verb.split(), "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: adaptrl {verb} ")


def test_train_help_lists_every_registered_part(capsys):
    """`adaptrl train --help` is built from the registries: every algorithm, inner surrogate,
    outer objective, outer optimizer and baseline appears with its description."""
    from adaptrl.algorithms import ALGORITHMS
    from adaptrl.meta.learner import OUTER_OPTIMIZERS
    from adaptrl.meta.surrogates import INNER_SURROGATES, OUTER_SURROGATES
    from adaptrl.processing import BASELINES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    lines = [line.strip() for line in text.splitlines()]
    for registry in (ALGORITHMS, INNER_SURROGATES, OUTER_SURROGATES, OUTER_OPTIMIZERS, BASELINES):
        for name, description in registry.descriptions().items():
            assert any(line.startswith(name) and line.endswith(description) for line in lines), name


def test_version(capsys):
    from adaptrl import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"adaptrl {__version__}"
