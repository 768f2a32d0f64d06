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
    if env == "PointCorners":  # policy and dynamics fused in one scan: no split, and it says so
        assert result["sampler_policy_seconds"] is None and result["sampler_env_seconds"] is None
        assert len(result["notes"]) == 1 and "fused" in result["notes"][0]
    else:
        assert result["notes"] == []
        assert result["sampler_policy_seconds"] > 0 and result["sampler_env_seconds"] > 0
        assert result["sampler_policy_seconds"] + result["sampler_env_seconds"] <= batch_s
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
    assert "s per batch: policy and simulator fused in one jitted scan)" in out


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


def test_bench_meta_iteration_reports_both_runs(capsys):
    """On Point1D with --reference equal to --backend (both native) one run is made: the medians
    of iteration 2 onwards, with ``update`` the sum of its parts, and no ratio."""
    argv = ["bench", "meta-iteration", "--env", "Point1D", "--preset", "default", "--iterations", "2",
            "--set", "tasks_per_iter=2", "--set", "rollouts_per_task=2", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["backend"] == r["reference"] == "native" and "ratio" not in r  # same simulator: no second run
    times = r["backend_times"]
    assert times["ItrTime"] >= times["Time-Sampling"] > 0
    assert times["batch"].startswith("2 tasks × 2 rollouts")
    assert times["update"] == pytest.approx(times["Time-OuterStep"] + times["Time-InnerStep"]
                                            + times["Time-SampleProc"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "sampler", "--env", "HalfCheetahRandDir"], "Did you mean 'HalfCheetahRandDirec'"),
        (["bench", "sampler", "--tasks", "0"], "--tasks must be a positive integer"),
        (["bench", "sampler", "--env", "PointCorners", "--threads", "2"], "--threads applies"),
        (["bench", "meta-iteration", "--env", "Point1D", "--iterations", "1"],
         "iterations must be at least 2 (the first compiles"),
        (["bench", "meta-iteration", "--env", "PointCorners", "--backend", "mjx", "--preset", "default"],
         "the backend option is for the MuJoCo families"),
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
    verbs = ["train", "eval", "video", "plot", "gradients", "reproduce", "demo", "envs", "sample", "bench"]
    listed = re.findall(r"^    (\S+)", text, flags=re.MULTILINE)
    assert listed == verbs
    for verb in [*verbs, "bench sampler"]:
        with pytest.raises(SystemExit) as exit_info:
            main([*verb.split(), "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: adaptrl {verb} ")


def all_parsers(parser, prog="adaptrl"):
    """``(prog, parser)`` for ``parser`` and every sub-command parser below it."""
    import argparse

    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_parsers(sub, f"{prog} {name}")


def test_every_positional_argument_has_help():
    from adaptrl.cli import build_parser

    positionals = [(prog, action.metavar or action.dest, action.help)
                   for prog, parser in all_parsers(build_parser())
                   for action in parser._actions if not action.option_strings]
    assert {prog for prog, _, _ in positionals} >= {"adaptrl", "adaptrl eval", "adaptrl plot",
                                                    "adaptrl train", "adaptrl bench", "adaptrl reproduce"}
    for prog, name, text in positionals:
        assert text and text.strip(), f"{prog}: {name} has no help"


@pytest.mark.parametrize(("verb", "shown"), [("plot", "(default: plot.png)"),
                                             ("sample", "(default: demo-output)")])
def test_help_shows_the_default_output(capsys, monkeypatch, verb, shown):
    monkeypatch.setenv("COLUMNS", "300")  # one line per option
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out_line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("--out"))
    assert out_line.endswith(shown)


def test_train_help_names_the_paper_sources_of_every_family_of_algorithms(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = "".join(capsys.readouterr().out.split())  # without spaces: argparse's line breaks undone
    preset = text.rsplit("--preset{default,paper}", 1)[1].split("--seedSEED", 1)[0]  # not the usage line
    for source in ("ProMP App. D", "TMAML App. E Table 1", "§5.5.2/App. B (mb-mpc)",
                   "params-<env>.json, thesis App. A (me-trpo)", "App. B (mb-mpo, mb-promp)",
                   "(trpo, ppo, vpg)"):
        assert "".join(source.split()) in preset, source


def test_paper_preset_without_paper_settings_is_one_clear_error(capsys, tmp_path):
    """The ProMP paper ran its algorithms on no single-task environment: --preset paper there is an
    error naming what it covers, not the default preset under another name."""
    out = tmp_path / "run"
    assert main(["train", "promp", "--env", "Point2D", "--preset", "paper", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: promp has no paper settings for Point2D (its --preset paper covers ")
    assert "HalfCheetahRandDirec" in err and "PointCorners" in err and "--preset default" in err
    assert err.count("\n") == 1 and not out.exists()


def test_envs_table_keeps_every_name_whole_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    cells = {cell.strip() for line in out.splitlines() for cell in line.split("│")}
    for name in [*family_names(), *(f"({alias})" for alias in ALIASES)]:
        assert name in cells, name


@pytest.fixture
def jax_cache_config():
    """Restores JAX's compilation-cache options after the test."""
    import jax

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {name: getattr(jax.config, name) for name in names}
    yield jax.config
    for name, value in saved.items():
        jax.config.update(name, value)


def test_cli_turns_on_the_compilation_cache_in_the_user_cache_folder(tmp_path, monkeypatch,
                                                                      jax_cache_config):
    for variable in ("ADAPTRL_NO_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR",
                     "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    jax_cache_config.update("jax_compilation_cache_dir", None)
    jax_cache_config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    assert main(["envs", "--json"]) == 0
    folder = str(tmp_path / "xdg" / "adaptrl" / "jax")
    assert jax_cache_config.jax_compilation_cache_dir == folder
    assert jax_cache_config.jax_persistent_cache_min_compile_time_secs == 1.0
    import os

    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == folder  # what child processes inherit


def test_compilation_cache_respects_the_user_folder_and_the_opt_out(tmp_path, monkeypatch, jax_cache_config):
    from adaptrl.cli import configure_compilation_cache

    jax_cache_config.update("jax_compilation_cache_dir", None)
    mine = str(tmp_path / "mine")
    environ = {"JAX_COMPILATION_CACHE_DIR": mine, "XDG_CACHE_HOME": str(tmp_path / "xdg"),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "5"}
    jax_cache_config.update("jax_persistent_cache_min_compile_time_secs", 5.0)
    assert configure_compilation_cache(environ) == mine
    assert jax_cache_config.jax_compilation_cache_dir == mine
    assert jax_cache_config.jax_persistent_cache_min_compile_time_secs == 5.0  # the user's, kept
    jax_cache_config.update("jax_compilation_cache_dir", None)
    assert configure_compilation_cache({"ADAPTRL_NO_COMPILATION_CACHE": "1"}) is None
    assert jax_cache_config.jax_compilation_cache_dir is None


def test_importing_adaptrl_leaves_the_jax_configuration_alone(tmp_path):
    """Only the command configures the cache; a library user's process is untouched."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "ADAPTRL_NO_COMPILATION_CACHE")}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    code = ("import adaptrl, adaptrl.cli, adaptrl.experiment.trainer, jax; "
            "print(jax.config.jax_compilation_cache_dir)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


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
