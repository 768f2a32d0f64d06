"""`adaptrl reproduce`: registry, run folders, skip/resume/conflicts, figure, summary and CLI."""

from __future__ import annotations

import argparse
import csv
import fcntl
import math
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.image import imread

from adaptrl.cli import build_parser
from adaptrl.cli import reproduce as reproduce_cli
from adaptrl.errors import AdaptrlError, ConfigError
from adaptrl.experiment import campaign_runner
from adaptrl.experiment.campaign_output import count_rows
from adaptrl.experiment.campaign_runner import plan_experiment, plot_experiment, run_experiment
from adaptrl.experiment.campaigns import EXPERIMENTS, ExperimentSpec, RunSpec
from adaptrl.experiment.checkpoints import has_checkpoint
from adaptrl.experiment.config import build_config, parse_set
from adaptrl.experiment.rundir import load_run_config
from adaptrl.experiment.trainer import TrainingDiverged
from adaptrl.plots import DPI, read_progress

SMALL = {"tasks_per_iter": 2, "rollouts_per_task": 2, "horizon": 10, "hidden_sizes": (8, 8)}
TINY = ExperimentSpec(
    name="tiny", description="test-only reproduction", paper="none (tests)", env="Point1D",
    iterations=4, runs=(RunSpec("promp", "promp", SMALL), RunSpec("lvc-vpg", "lvc-vpg", SMALL)),
    preset="default", seeds=2)
LABELS = ("promp", "lvc-vpg")


def cli(argv, capsys=None):
    """Parse ``adaptrl reproduce ARGV`` with a throwaway parser and run it; returns stdout."""
    parser = argparse.ArgumentParser(prog="adaptrl")
    reproduce_cli.add_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["reproduce", *argv])
    assert args.func is reproduce_cli.run
    args.func(args)
    return capsys.readouterr().out if capsys is not None else None


def assert_comparison_png(path, panels=2):
    """``path`` decodes as the comparison figure: ``panels`` panels of 4.6 inches (plus a 0.4 inch
    margin) by 3.8 inches and a 0.3 inch title, at the plots' DPI; not blank."""
    image = imread(path)
    height, width = 4.1 * DPI, (4.6 * panels + 0.4) * DPI
    assert image.shape[:2] == (pytest.approx(height, abs=1), pytest.approx(width, abs=1))
    assert image[..., :3].std() > 0


def never_train(*args, **kwargs):
    pytest.fail("a finished run was trained again")


def read_summary(path):
    with open(path, newline="") as f:
        return {row["label"]: row for row in csv.DictReader(f)}


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(EXPERIMENTS, "tiny", TINY)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """One real tiny reproduction (2 labels × 2 seeds × 2 iterations), interrupted in its first run's
    second iteration (Ctrl-C after its first row) and then rerun, which resumes that run and trains
    the others."""
    out = tmp_path_factory.mktemp("repro")
    real_train = campaign_runner.train

    def interrupt(row):
        raise KeyboardInterrupt

    def interrupted_train(config, run_dir, **kwargs):
        return real_train(config, run_dir, callback=interrupt, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(EXPERIMENTS, "tiny", TINY)
        mp.setattr(campaign_runner, "train", interrupted_train)
        first = run_experiment("tiny", seeds=2, scale=0.5, out=out, show_progress=False)
        partial_rows = count_rows(out / "tiny" / "promp-s0")
        mp.setattr(campaign_runner, "train", real_train)
        lines: list[str] = []
        second = run_experiment("tiny", seeds=2, scale=0.5, out=out, show_progress=False, log=lines.append)
    return {"out": out, "first": first, "partial_rows": partial_rows, "second": second, "log": lines}


def test_interrupted_run_stops_the_reproduction_and_resumes(reproduced):
    first, second = reproduced["first"], reproduced["second"]
    assert first.interrupted and first.figure is None and first.trained == []
    assert reproduced["partial_rows"] == 1
    assert [r.status for r in second.runs] == ["resume", "new", "new", "new"]
    assert [(r.label, r.seed) for r in second.runs] == [("promp", 0), ("lvc-vpg", 0), ("promp", 1),
                                                         ("lvc-vpg", 1)]
    assert second.trained == second.run_dirs and not second.interrupted and not second.failed
    assert reproduced["log"][0].startswith("[1/4] promp seed 0: resume at 1/2")
    progress = read_progress(reproduced["out"] / "tiny" / "promp-s0")
    np.testing.assert_array_equal(progress["Itr"], [0, 1])
    assert np.all(np.diff(progress["n_timesteps"]) > 0)


def test_run_directories_hold_the_recipe(reproduced):
    out = reproduced["out"]
    for label in LABELS:
        for seed in (0, 1):
            run_dir = out / "tiny" / f"{label}-s{seed}"
            expected = build_config(label, "Point1D", overrides={**SMALL, "seed": seed, "iterations": 2})
            assert load_run_config(run_dir) == expected
            assert len(read_progress(run_dir)["Itr"]) == 2
            assert has_checkpoint(run_dir)
            assert (run_dir / "plots" / "learning_curve.png").is_file()
            assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_figure_summary_and_commands(reproduced):
    out, result = reproduced["out"], reproduced["second"]
    assert result.figure == out / "tiny" / "comparison.png"
    assert_comparison_png(result.figure)
    summary = read_summary(out / "tiny" / "summary.csv")
    assert list(summary) == list(LABELS)
    assert [row["label"] for row in result.summary] == list(LABELS)
    for label in LABELS:
        progresses = [read_progress(out / "tiny" / f"{label}-s{seed}") for seed in (0, 1)]
        row = summary[label]
        assert row["seeds"] == "0 1" and row["complete"] == "2" and row["iterations"] == "2"
        assert row["final_itr"] == "1" and row["inner_steps"] == "1"
        for column, key in (("pre_update", "Step_0-AverageReturn"), ("post_update", "Step_1-AverageReturn")):
            finals = [p[key][-1] for p in progresses]
            assert math.isclose(float(row[f"{column}_mean"]), np.mean(finals), rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(float(row[f"{column}_std"]), np.std(finals), rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(float(row["n_timesteps"]), np.mean([p["n_timesteps"][-1] for p in progresses]))
        # the meta-RL papers report the return after the last adaptation step
        assert row["return_key"] == "Step_1-AverageReturn" and row["return_mean"] == row["post_update_mean"]
        assert math.isclose(float(row["wall_clock_s"]), sum(p["Time"][-1] for p in progresses))
    commands = (out / "tiny" / "commands.txt").read_text().splitlines()
    train_lines = [line for line in commands if line.startswith("adaptrl train")]
    assert train_lines == [run.command for run in result.runs]
    assert train_lines[0] == ("adaptrl train promp --env Point1D --preset default --seed 0 "
                              "--iterations 2 --set tasks_per_iter=2 --set rollouts_per_task=2 "
                              f"--set horizon=10 --set hidden_sizes=8,8 --out {out / 'tiny' / 'promp-s0'}")


def test_commands_rebuild_the_same_config(reproduced):
    """Each printed `adaptrl train` command, parsed by the CLI, builds exactly the run's config."""
    for run in reproduced["second"].runs:
        args = build_parser().parse_args(shlex.split(run.command)[1:])
        overrides = {**parse_set(args.set), "seed": args.seed, "iterations": args.iterations}
        assert build_config(args.algo, args.env, preset=args.preset, overrides=overrides) == run.config
        assert Path(args.out) == run.run_dir


def test_rerun_skips_finished_runs(reproduced, registered, monkeypatch, capsys):
    out = reproduced["out"]
    progress_files = sorted((out / "tiny").glob("*/progress.csv"))
    mtimes = [p.stat().st_mtime_ns for p in progress_files]
    monkeypatch.setattr(campaign_runner, "train", never_train)
    text = cli(["tiny", "--seeds", "2", "--scale", "0.5", "--out", str(out), "--no-progress"], capsys)
    assert [p.stat().st_mtime_ns for p in progress_files] == mtimes and len(mtimes) == 4
    assert "final iteration, mean ± std across seeds" in text and "promp" in text and "lvc-vpg" in text
    again = run_experiment("tiny", seeds=[0, 1], scale=0.5, out=out, show_progress=False)
    assert [r.status for r in again.runs] == ["done"] * 4 and again.trained == []
    assert again.summary == reproduced["second"].summary


def test_dry_run_lists_commands_and_status(reproduced, registered, tmp_path, capsys):
    out = reproduced["out"]
    text = cli(["tiny", "--seed-list", "0,1", "--scale", "0.5", "--out", str(out), "--dry-run",
                "--only", "lvc-vpg"], capsys)
    assert text.startswith("tiny: 1 label × 2 seeds, 2 of 4 iterations each")
    assert "lvc-vpg seed 1: done (2/2) [skip]" in text and "promp seed" not in text
    assert "adaptrl train lvc-vpg --env Point1D --preset default --seed 1 --iterations 2" in text
    fresh = cli(["tiny", "--seeds", "1", "--scale", "0.1", "--out", str(tmp_path), "--dry-run",
                 "--set", "inner_lr=0.05"], capsys)
    assert "promp seed 0: new [train]" in fresh and "--iterations 1 " in fresh
    assert "--set inner_lr=0.05 --out" in fresh
    assert not (tmp_path / "tiny").exists()


def test_plot_only_redraws_from_existing_runs(reproduced, registered, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(reproduced["out"] / "tiny", out / "tiny")
    for name in ("comparison.png", "summary.csv", "commands.txt"):
        (out / "tiny" / name).unlink()
    shutil.rmtree(out / "tiny" / "lvc-vpg-s1")
    # any scale: plot-only accepts runs of any length
    text = cli(["tiny", "--out", str(out), "--plot-only"], capsys)
    assert_comparison_png(out / "tiny" / "comparison.png")
    summary = read_summary(out / "tiny" / "summary.csv")
    assert summary["lvc-vpg"]["seeds"] == "0" and summary["promp"]["seeds"] == "0 1"
    assert "wrote" in text
    with pytest.raises(ConfigError, match="no run of tiny has progress"):
        plot_experiment("tiny", out=tmp_path / "empty")


def test_conflicting_config_is_an_error(reproduced, registered):
    out = reproduced["out"]
    with pytest.raises(ConfigError, match=r"another configuration \(inner_lr: 0\.1 there, 0\.05 here\)"
                                          r".*another --out.*delete"):
        run_experiment("tiny", seeds=2, scale=0.5, out=out, overrides={"inner_lr": "0.05"})
    with pytest.raises(ConfigError, match=r"iterations: 2 there, 4 here\)\. It was trained with "
                                          r"--scale 0\.5"):
        run_experiment("tiny", seeds=2, scale=1.0, out=out)
    # how often checkpoints (or snapshots) are written does not change the run: the same, finished run
    for setting in ({"checkpoint_every": 3}, {"snapshot_every": 1}):
        planned = plan_experiment("tiny", seeds=2, scale=0.5, out=out, overrides=setting)
        assert {run.status for run in planned} == {"done"}


def test_runs_left_out_by_only_may_have_any_length(reproduced, registered, tmp_path):
    """`--only lvc-vpg` at another scale trains lvc-vpg; the promp runs of the other scale are
    only drawn, so their length is no conflict (before, they blocked the command)."""
    out = tmp_path / "copy"
    shutil.copytree(reproduced["out"] / "tiny", out / "tiny")
    for seed in (0, 1):
        shutil.rmtree(out / "tiny" / f"lvc-vpg-s{seed}")
    with pytest.raises(ConfigError, match=r"promp-s0 holds a run of another configuration"):
        plan_experiment("tiny", seeds=2, scale=1.0, out=out)
    planned = plan_experiment("tiny", seeds=2, scale=1.0, out=out, train_labels=["lvc-vpg"])
    assert [(run.label, run.status, run.rows) for run in planned] == [
        ("promp", "done", 2), ("lvc-vpg", "new", 0), ("promp", "done", 2), ("lvc-vpg", "new", 0)]
    with pytest.raises(ConfigError, match=r"promp-s0 holds a run of another configuration"):
        plan_experiment("tiny", seeds=2, scale=1.0, out=out, train_labels=["promp"])
    # --set applies to the trained label only: the drawn promp runs keep their own settings
    planned = plan_experiment("tiny", seeds=2, scale=1.0, out=out, train_labels=["lvc-vpg"],
                              overrides={"inner_lr": "0.05"})
    assert [(run.label, run.status, run.config.inner_lr) for run in planned[:2]] == [
        ("promp", "done", planned[0].config.inner_lr), ("lvc-vpg", "new", 0.05)]
    assert planned[0].config.inner_lr != 0.05 and "inner_lr=0.05" in planned[1].command
    assert "inner_lr" not in planned[0].command


def test_algorithm_scoped_set_applies_to_drawn_runs_too(reproduced, registered, tmp_path):
    """`--set promp:inner_lr=0.05` describes promp runs trained with that setting in every command:
    training another label next to them, and --plot-only. A plain --set could not: it applies to the
    trained labels only, so the changed promp runs were a conflict."""
    out = tmp_path / "copy"
    shutil.copytree(reproduced["out"] / "tiny", out / "tiny")
    for seed in (0, 1):
        shutil.rmtree(out / "tiny" / f"lvc-vpg-s{seed}")
        config = out / "tiny" / f"promp-s{seed}" / "config.yaml"
        text = config.read_text()
        assert "inner_lr: 0.1\n" in text
        config.write_text(text.replace("inner_lr: 0.1\n", "inner_lr: 0.05\n"))
    # the error names the scoped flag that describes the drawn runs; training them says another thing
    with pytest.raises(ConfigError, match=r"promp-s0 holds a run of another configuration \(inner_lr: "
                                          r"0\.05 there, 0\.1 here\)\. This command only draws it.*"
                                          r"--set promp:inner_lr=0\.05; or choose another --out"):
        plan_experiment("tiny", seeds=2, scale=0.5, out=out, train_labels=["lvc-vpg"])
    with pytest.raises(ConfigError, match=r"0\.1 here\)\. Choose another --out, or delete") as trained:
        plan_experiment("tiny", seeds=2, scale=0.5, out=out, train_labels=["promp"])
    assert "promp:inner_lr" not in str(trained.value)
    scoped = {"promp:inner_lr": "0.05"}
    planned = plan_experiment("tiny", seeds=2, scale=0.5, out=out, train_labels=["lvc-vpg"], overrides=scoped)
    assert [(run.label, run.status, run.config.inner_lr) for run in planned[:2]] == [
        ("promp", "done", 0.05), ("lvc-vpg", "new", 0.1)]
    assert "inner_lr=0.05" in planned[0].command and "inner_lr" not in planned[1].command
    with pytest.raises(ConfigError, match=r"promp-s0 holds a run of another configuration"):
        plot_experiment("tiny", seeds=2, out=out)
    result = plot_experiment("tiny", seeds=2, out=out, overrides=scoped)
    assert result.figure is not None and result.figure.is_file()
    with pytest.raises(ConfigError, match=r"no run of tiny uses algorithm 'maml-trpo'; its algorithms are "
                                          r"lvc-vpg, promp\."):
        plan_experiment("tiny", seeds=2, out=out, overrides={"maml-trpo:inner_lr": "0.05"})
    with pytest.raises(ConfigError, match=r"give a setting after promp:"):
        plan_experiment("tiny", seeds=2, out=out, overrides={"promp:": "0.05"})
    # a drawn run of another seed cannot be described by a scoped --set: the plain conflict error
    config = out / "tiny" / "promp-s0" / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0\n", "seed: 5\n"))
    with pytest.raises(ConfigError, match=r"seed: 5 there, 0 here\)\. Choose another --out") as seeded:
        plan_experiment("tiny", seeds=2, scale=0.5, out=out, train_labels=["lvc-vpg"], overrides=scoped)
    assert "promp:seed" not in str(seeded.value)


def test_scoped_settings_merge_plain_scoped_and_env_options():
    settings = {"outer_lr": "0.2", "promp:inner_lr": "0.05", "promp:env_options.reward_type": "dense",
                "lvc-vpg:inner_lr": "0.3", "env_options": {"horizon": 7}}
    assert campaign_runner.scoped_settings(TINY, settings, "promp", trained=True) == {
        "outer_lr": "0.2", "inner_lr": "0.05", "env_options": {"horizon": 7, "reward_type": "dense"}}
    assert campaign_runner.scoped_settings(TINY, settings, "promp", trained=False) == {
        "inner_lr": "0.05", "env_options": {"reward_type": "dense"}}
    assert campaign_runner.scoped_settings(TINY, settings, "lvc-vpg", trained=False) == {"inner_lr": "0.3"}


def test_progress_without_checkpoint_blocks(reproduced, registered, tmp_path):
    run_dir = tmp_path / "tiny" / "promp-s0"
    shutil.copytree(reproduced["out"] / "tiny" / "promp-s0", run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    lines = (run_dir / "progress.csv").read_text().splitlines()
    (run_dir / "progress.csv").write_text("\n".join(lines[:2]) + "\n")
    planned = plan_experiment("tiny", seeds=[0], scale=0.5, out=tmp_path)
    assert [(r.label, r.status, r.rows) for r in planned] == [("promp", "stalled", 1), ("lvc-vpg", "new", 0)]
    with pytest.raises(ConfigError, match=r"1/2 rows\): progress without a checkpoint.*delete the folder"):
        run_experiment("tiny", seeds=[0], scale=0.5, out=tmp_path, only=["promp"])
    (run_dir / "config.yaml").unlink()
    with pytest.raises(ConfigError, match=r"training output but no config\.yaml"):
        plan_experiment("tiny", seeds=[0], scale=0.5, out=tmp_path)


def test_bad_input_gives_clear_errors(registered, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"unknown experiment 'promp-fig9'\. Did you mean 'promp-fig"):
        cli(["promp-fig9", "--dry-run"])
    with pytest.raises(ConfigError, match=r"unknown label 'lvc'\. Did you mean 'lvc-vpg'.*"
                                          r"Valid labels: lvc-vpg, promp"):
        cli(["tiny", "--only", "promp,lvc", "--dry-run"])
    for scale in ("0", "-1", "nan"):
        with pytest.raises(ConfigError, match="scale must be a positive number"):
            cli(["tiny", "--scale", scale, "--dry-run"])
    with pytest.raises(ConfigError, match="seeds must be a positive integer"):
        cli(["tiny", "--seeds", "0", "--dry-run"])
    with pytest.raises(ConfigError, match="--seed-list expects integers"):
        cli(["tiny", "--seed-list", "0,a", "--dry-run"])
    with pytest.raises(ConfigError, match="repeats a seed"):
        cli(["tiny", "--seed-list", "1,1", "--dry-run"])
    with pytest.raises(ConfigError, match="either --seeds N or --seed-list"):
        cli(["tiny", "--seeds", "2", "--seed-list", "0,1", "--dry-run"])
    with pytest.raises(ConfigError, match="cannot --set seed in a reproduction"):
        cli(["tiny", "--set", "seed=3", "--dry-run"])
    with pytest.raises(ConfigError, match="cannot --set iterations"):
        cli(["tiny", "--set", "iterations=3", "--dry-run"])
    with pytest.raises(ConfigError, match="unknown setting 'inner_rl'"):
        cli(["tiny", "--set", "inner_rl=3", "--dry-run"])
    with pytest.raises(ConfigError, match="reproduce needs NAME"):
        cli([])
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        run_experiment("tiny", workers=0, out=tmp_path)
    assert not (tmp_path / "tiny").exists()


def test_list_prints_the_registry(capsys):
    text = cli(["--list"], capsys)
    for exp in EXPERIMENTS.values():
        assert f"{exp.name}: {exp.description}" in text and exp.paper in text
        assert all(f"run {spec.label}" in text for spec in exp.runs)
    assert "600 iterations" in text and "1000 iterations" in text


def test_ray_missing_is_a_clear_error(registered, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    for kwargs in ({"use_ray": True}, {"workers": 2}):
        with pytest.raises(ConfigError, match=r"needs Ray, which is not installed: "
                                              r"pip install 'adaptrl\[ray\]'"):
            run_experiment("tiny", out=tmp_path, show_progress=False, **kwargs)


def fake_train(calls):
    """A stand-in for the trainer's train writing 3 synthetic rows; lvc-vpg seed 1 diverges after 1 row."""

    def train(config, run_dir, *, resume=False, show_progress=True, tensorboard=True, make_plots=True):
        calls.append((config.algo, config.seed, resume, show_progress))
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
        diverges = config.algo == "lvc-vpg" and config.seed == 1
        rows = ["Itr,n_timesteps,Step_0-AverageReturn,Step_2-AverageReturn,Time"]
        for i in range(1 if diverges else config.iterations):
            pre = (10.0 if config.algo == "promp" else 0.0) + i
            rows.append(f"{i},{100 * (i + 1)},{pre + config.seed},{pre + 3 * config.seed},{i + 1.5}")
        (run_dir / "progress.csv").write_text("\n".join(rows) + "\n")
        if diverges:
            raise TrainingDiverged("iteration 1: non-finite LossAfter")
        return SimpleNamespace(run_dir=run_dir, rows=[], interrupted=False)

    return train


def test_diverged_run_is_reported_and_the_others_go_on(monkeypatch, tmp_path):
    k2 = ExperimentSpec(name="tiny-k2", description="K = 2", paper="none", env="PointCorners", iterations=3,
                        runs=tuple(RunSpec(s.label, s.algo, {**SMALL, "inner_steps": 2}) for s in TINY.runs),
                        preset="default")
    monkeypatch.setitem(EXPERIMENTS, "tiny-k2", k2)
    calls = []
    monkeypatch.setattr(campaign_runner, "train", fake_train(calls))
    result = run_experiment("tiny-k2", seeds=2, out=tmp_path, show_progress=True)
    assert calls == [("promp", 0, False, True), ("lvc-vpg", 0, False, True), ("promp", 1, False, True),
                     ("lvc-vpg", 1, False, True)]
    assert list(result.failed) == [tmp_path / "tiny-k2" / "lvc-vpg-s1"]
    assert "non-finite LossAfter" in result.failed[tmp_path / "tiny-k2" / "lvc-vpg-s1"]
    assert len(result.trained) == 3
    assert_comparison_png(result.figure)
    promp, lvc = result.summary
    # promp: seeds 0 and 1 finished 3 rows; post-update (Step_2) at row 2 = 10 + 3·seed + 2
    assert (promp["final_itr"], promp["inner_steps"], promp["complete"]) == (2, 2, 2)
    assert promp["post_update_mean"] == pytest.approx(13.5) and promp["post_update_std"] == pytest.approx(1.5)
    assert promp["pre_update_mean"] == pytest.approx(12.5) and promp["wall_clock_s"] == pytest.approx(7.0)
    # lvc-vpg: seed 1 stopped after one row, so the common final row is 0
    assert (lvc["final_itr"], lvc["complete"], lvc["n_timesteps"]) == (0, 1, 100.0)
    assert lvc["post_update_mean"] == pytest.approx(1.5) and lvc["post_update_std"] == pytest.approx(1.5)
    assert lvc["wall_clock_s"] == pytest.approx(3.5 + 1.5)
    # the CLI reports the divergence as an error after drawing the figure
    (tmp_path / "tiny-k2" / "lvc-vpg-s1" / "progress.csv").unlink()
    (tmp_path / "tiny-k2" / "lvc-vpg-s1" / "config.yaml").unlink()
    with pytest.raises(AdaptrlError, match=r"1 run\(s\) diverged \(the others finished\): .*lvc-vpg-s1: "
                                           r"iteration 1: non-finite LossAfter"):
        cli(["tiny-k2", "--seeds", "2", "--out", str(tmp_path), "--no-progress"])
    assert calls[4:] == [("lvc-vpg", 1, False, False)]


# ------------------------------------------------------------------------------------------ Ray
# The real `ray` package (the test extra): the code under test starts a local cluster, as a user's
# `adaptrl reproduce --ray` does, and must shut it down.
RAY_PROCESS = re.compile(r"^ray::|/ray/(core|_private|dashboard|autoscaler)/")
"""Command lines of Ray's processes: workers and agents (``ray::IDLE``, ``ray::train_run``,
``ray::DashboardAgent``) and the gcs_server, raylet and monitors of its installation."""


def ray_processes():
    """Ray's live processes on this machine: ``{pid: command line}`` (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # the process ended meanwhile
            continue
        if RAY_PROCESS.search(command):
            found[int(entry.name)] = command
    return found


@pytest.fixture
def ray_session(tmp_path_factory, monkeypatch):
    """The real ``ray`` module for a test whose code under test starts Ray itself. Ray tests take
    turns across pytest-xdist workers (a lock file), start with no Ray running on this machine and
    must leave neither a Ray session (``ray.is_initialized()``) nor a Ray process behind."""
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    lock_path = tmp_path_factory.getbasetemp().parent / "adaptrl-ray-tests.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert not ray.is_initialized()
        assert not ray_processes(), f"Ray is already running on this machine: {ray_processes()}"
        yield ray
        assert not ray.is_initialized(), "Ray was left initialised"
        deadline = time.monotonic() + 30
        while ray_processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not ray_processes(), f"Ray processes were left running: {ray_processes()}"


RAY_STARTS_FROM_JAX = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
"""This process has run JAX (earlier tests' runs) when Ray starts its processes (fork, then exec),
which JAX warns about; a user's `adaptrl reproduce --ray` starts Ray before its JAX runs anything."""


def without_timing(progress):
    """A run's progress columns apart from the timing ones (``Time``, ``ItrTime``, ``Time-*``)."""
    return {key: values for key, values in progress.items() if "Time" not in key}


def run_span(run_dir):
    """When a run was trained, from its own files: ``config.yaml`` is written first, the learning
    curve last."""
    start, end = run_dir / "config.yaml", run_dir / "plots" / "learning_curve.png"
    return start.stat().st_mtime, end.stat().st_mtime


def most_at_once(spans):
    """The most ``(start, end)`` spans open at one time (a run ending as another starts is not two)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    open_now = most = 0
    for _, step in events:
        open_now += step
        most = max(most, open_now)
    return most


@RAY_STARTS_FROM_JAX
def test_ray_trains_the_runs_it_would_train_without_ray(reproduced, registered, ray_session, tmp_path,
                                                          monkeypatch, capsys):
    """`--ray --workers 2` on a local Ray of 2 CPUs trains the same 4 runs (same configs, same rows
    apart from timing, same summary) as the campaign trained in this process, at most 2 at once,
    into a relative --out, with the compilation cache folder of this process's environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax-cache"))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    text = cli(["tiny", "--seeds", "2", "--scale", "0.5", "--out", "ray-out", "--ray", "--workers", "2",
                "--no-progress"], capsys)
    assert "final iteration, mean ± std across seeds" in text
    here, there = reproduced["out"] / "tiny", tmp_path / "ray-out" / "tiny"
    run_names = sorted(p.name for p in here.iterdir() if p.is_dir())
    assert run_names == sorted(p.name for p in there.iterdir() if p.is_dir()) and len(run_names) == 4
    for name in run_names:
        assert load_run_config(there / name) == load_run_config(here / name)
        expected = without_timing(read_progress(here / name))
        got = without_timing(read_progress(there / name))
        assert list(got) == list(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}: {key}")
        assert has_checkpoint(there / name) and list((there / name / "tensorboard").glob("events.out.*"))
    summary_here, summary_there = read_summary(here / "summary.csv"), read_summary(there / "summary.csv")
    for row in (*summary_here.values(), *summary_there.values()):
        row.pop("wall_clock_s")
    assert summary_there == summary_here
    assert_comparison_png(there / "comparison.png")
    assert most_at_once([run_span(there / name) for name in run_names]) == 2
    # the workers inherited JAX_COMPILATION_CACHE_DIR (this process's JAX read it before it was set)
    assert any((tmp_path / "jax-cache").iterdir())


@RAY_STARTS_FROM_JAX
def test_a_run_failing_in_ray_is_one_clear_error(registered, ray_session, tmp_path):
    """An error inside a run's Ray task (here the environment rejecting an option, which only
    building the environment checks) stops the campaign with its own message and the run's name,
    not Ray's remote traceback."""
    with pytest.raises(ConfigError) as caught:
        cli(["tiny", "--seeds", "1", "--out", str(tmp_path), "--ray", "--workers", "2",
             "--set", "env_options.bogus=1", "--no-progress"])
    message = str(caught.value)
    pattern = (rf"(promp|lvc-vpg) seed 0 \({re.escape(str(tmp_path))}/tiny/\1-s0\) failed in its Ray task: "
               r"Point1D: unknown option\(s\) bogus\. Valid task options: .*")
    assert re.fullmatch(pattern, message), message
    assert "Traceback" not in message and "ray::" not in message and "\x1b" not in message


def test_ray_address_auto_without_a_cluster_is_a_clear_error(registered, ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where `ray start` records its cluster: none here
    with pytest.raises(ConfigError, match=r"cannot connect to a Ray cluster at --ray-address auto \(Could "
                                          r"not find any running Ray instance.*\)\. Start one \(ray start "
                                          r"--head\) or leave out --ray-address"):
        cli(["tiny", "--seeds", "1", "--out", str(tmp_path), "--ray", "--ray-address", "auto"])
    assert not (tmp_path / "tiny").exists()


def test_registry_entries_build_their_configs(tmp_path):
    assert {"promp-fig2", "promp-fig3", "promp-fig4", "tmaml-table1"} <= set(EXPERIMENTS)
    for name, exp in EXPERIMENTS.items():
        assert exp.name == name and len(set(exp.labels)) == len(exp.labels) and exp.seeds == 3
        allowed = ("{return}",) if exp.real_steps else ("Step_0-AverageReturn", "Meta-GradientRStd")
        assert all("{K}" in key or key in allowed for key in exp.keys)
    expected = {"promp-fig2": ["promp", "maml-trpo", "emaml-trpo"],
                "promp-fig3": ["lvc-vpg", "dice-vpg", "maml-vpg", "emaml-vpg"]}
    for name, labels in expected.items():
        exp = EXPERIMENTS[name]
        assert exp.labels == labels and exp.iterations == 600 and exp.env == "HalfCheetahRandDirec"
        planned = plan_experiment(name, seeds=2, scale=0.1, out=tmp_path)
        assert len(planned) == 2 * len(labels) and {r.status for r in planned} == {"new"}
        for run in planned:
            assert run.config == build_config(run.label, "HalfCheetahRandDirec", preset="paper",
                                              overrides={"seed": run.seed, "iterations": 60})
    fig4 = EXPERIMENTS["promp-fig4"]
    assert fig4.labels == ["lvc-vpg", "dice-vpg"] and fig4.iterations == 300
    assert "Meta-GradientRStd" in fig4.keys
    assert all(spec.overrides == {"tasks_per_iter": 20, "rollouts_per_task": 40, "grad_stats_every": 10,
                                  "grad_stats_batches": 10} for spec in fig4.runs)
    tmaml = EXPERIMENTS["tmaml-table1"]
    assert tmaml.env == "AntRandDirec" and tmaml.iterations == 1000 and tmaml.settings is not None
    assert [(s.label, s.algo, dict(s.overrides)) for s in tmaml.runs] == [
        ("tmaml-meta-cv", "tmaml-meta-cv", {}), ("tmaml-task-cv", "tmaml-task-cv", {}), ("lvc", "promp", {}),
        ("maml", "promp", {"inner_estimator": "pgt"}), ("dice", "promp", {"inner_estimator": "dice"})]
    assert not (tmp_path / "promp-fig2").exists()


def test_fig3_recipe_recognises_the_background_runs(tmp_path, monkeypatch):
    """A folder written by `adaptrl train lvc-vpg --env HalfCheetahRandDirec --preset paper --seed 0
    --iterations 120` (possibly by an older version without newer config keys) counts as finished."""
    expected = build_config("lvc-vpg", "HalfCheetahRandDirec", preset="paper",
                            overrides={"seed": 0, "iterations": 120})
    (planned,) = plan_experiment("promp-fig3", seeds=[0], scale=0.2, out=tmp_path)[:1]
    assert planned.config == expected and planned.run_dir == tmp_path / "promp-fig3" / "lvc-vpg-s0"
    assert planned.command.startswith("adaptrl train lvc-vpg --env HalfCheetahRandDirec --preset paper "
                                      "--seed 0 --iterations 120 --out ")
    run_dir = planned.run_dir
    run_dir.mkdir(parents=True)
    import yaml

    config = expected.to_dict()
    for newer in ("grad_stats_every", "grad_stats_batches"):
        config.pop(newer, None)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows = ["Itr,n_timesteps,Step_0-AverageReturn,Step_1-AverageReturn,Time"]
    rows += [f"{i},{8000 * (i + 1)},{-100 + i},{-90 + i},{10.0 * (i + 1)}" for i in range(120)]
    (run_dir / "progress.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(campaign_runner, "train", never_train)
    result = run_experiment("promp-fig3", seeds=[0], scale=0.2, out=tmp_path, only=["lvc-vpg"],
                            show_progress=False)
    assert result.runs[0].status == "done" and result.trained == []
    assert [r.status for r in result.runs[1:]] == ["new"] * 3
    assert result.figure == tmp_path / "promp-fig3" / "comparison.png"
    assert_comparison_png(result.figure)
    (row,) = result.summary
    assert (row["label"], row["final_itr"], row["post_update_mean"], row["wall_clock_s"]) == (
        "lvc-vpg", 119, 29.0, 1200.0)


def test_model_based_registry_entries(tmp_path):
    """The thesis's experiments: budgets in real steps become each preset's iteration counts (MB-MPO
    5,000 + 24 × 4,000 ≥ 100k; ME-TRPO 34 × 3,000; TRPO/PPO 500 × 50 × 200 = 5M), one folder per
    environment, the settings of each label."""
    fig8 = EXPERIMENTS["mbmpo-fig8"]
    assert fig8.envs == ("HalfCheetah", "Walker2D", "Hopper", "Ant", "Swimmer")
    assert fig8.labels == ["mb-mpo", "me-trpo", "mb-mpc", "trpo", "ppo"] and fig8.yardstick == "trpo"
    planned = plan_experiment("mbmpo-fig8", seeds=1, out=tmp_path)
    assert len(planned) == 25 and {run.env for run in planned} == set(fig8.envs)
    iterations = {(run.env, run.label): run.config.iterations for run in planned}
    assert {label: iterations["HalfCheetah", label] for label in fig8.labels} == {
        "mb-mpo": 25, "me-trpo": 34, "mb-mpc": 25, "trpo": 500, "ppo": 500}
    for run in planned:
        assert run.run_dir == tmp_path / "mbmpo-fig8" / run.env / f"{run.label}-s0"
        assert run.config == build_config(run.algo, run.env, preset="paper",
                                          overrides={"seed": 0, "iterations": run.config.iterations})
        assert run.title == f"{run.label} on {run.env}" and run.status == "new"
    small = plan_experiment("mbmpo-fig8", seeds=1, scale=0.2, out=tmp_path, envs=["Hopper"])
    assert {run.label: run.config.iterations for run in small} == {
        "mb-mpo": 5, "me-trpo": 7, "mb-mpc": 5, "trpo": 100, "ppo": 100}
    fig5 = plan_experiment("metrpo-fig5", seeds=1, out=tmp_path)
    assert [(run.config.model_members, run.config.iterations, run.config.horizon) for run in fig5] == [
        (1, 100, 100), (5, 100, 100), (10, 100, 100), (20, 100, 100)]
    fig10 = plan_experiment("mbmpo-fig10", seeds=1, out=tmp_path)
    assert [(run.algo, run.config.model_output_bias_max, run.config.horizon,
             run.config.model_output_noise_std) for run in fig10] == [
        (a, b, 100, 0.1) for a in ("mb-mpo", "me-trpo") for b in (0.0, 0.5, 1.0)]
    paper_mbmpo = build_config("mb-mpo", "HalfCheetah", preset="paper")
    assert paper_mbmpo.inner_lr == 0.001 and paper_mbmpo.model_weight_norm
    assert [(run.config.inner_lr, run.config.model_weight_norm) for run in fig10[:3]] == [(0.01, False)] * 3
    fig39 = plan_experiment("mbmpo-fig39", seeds=1, out=tmp_path)
    assert [(run.env, run.config.real_data_policy) for run in fig39] == [
        (env, policy) for env in ("HalfCheetah", "Walker2D") for policy in ("adapted", "pre_update")]
    with pytest.raises(ConfigError, match=r"unknown environment of mbmpo-fig8 'Humanoid'.*Swimmer"):
        plan_experiment("mbmpo-fig8", seeds=1, out=tmp_path, envs=["Humanoid"])
    assert not (tmp_path / "mbmpo-fig8").exists()


MB = {"initial_random_steps": 60, "real_steps_per_iter": 90, "model_hidden_sizes": (16,), "horizon": 30}
TINY_MB = ExperimentSpec(
    name="tiny-mb", description="test-only real-step budget", paper="none (tests)",
    env=("Point2D", "Point1D"), real_steps=300,
    runs=(RunSpec("mpc", "mb-mpc", MB), RunSpec("mpo", "mb-mpo", MB),
          RunSpec("trpo", "trpo", {"rollouts_per_task": 2, "horizon": 30}, real_steps=600)),
    keys=("{return}",), preset="default", seeds=2, targets={"Point2D": 25.0}, yardstick="trpo")


def budget_train(config, run_dir, *, resume=False, show_progress=True, tensorboard=True, make_plots=True):
    """A stand-in for the trainer: rows with the real steps of :func:`real_steps_per_iteration` and the
    algorithm's reported-return column at 10·i (MB-MPC), 5·i (MB-MPO) and i (TRPO), plus the seed."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    first, later = campaign_runner.real_steps_per_iteration(config)
    column = {"mb-mpc": "AverageReturn", "mb-mpo": "PrePolicy-AverageReturn", "trpo": "Step_0-AverageReturn"}
    slope = {"mb-mpc": 10.0, "mb-mpo": 5.0, "trpo": 1.0}[config.algo]
    rows = [f"Itr,n_timesteps,{column[config.algo]},Time"]
    rows += [f"{i},{first + i * later},{slope * i + config.seed},1.0" for i in range(config.iterations)]
    (run_dir / "progress.csv").write_text("\n".join(rows) + "\n")
    return SimpleNamespace(run_dir=run_dir, rows=[], interrupted=False)


def test_real_step_budget_experiment(monkeypatch, tmp_path, capsys):
    """A two-environment reproduction with a real-step budget: iterations from each run's real steps,
    one folder per environment, one panel per environment comparing each algorithm's own return
    column, and the steps to the stated target or the yardstick's final return."""
    monkeypatch.setitem(EXPERIMENTS, "tiny-mb", TINY_MB)
    monkeypatch.setattr(campaign_runner, "train", budget_train)
    result = run_experiment("tiny-mb", seeds=2, out=tmp_path, show_progress=False)
    # MB: 60 + 3 × 90 = 330 ≥ 300 → 4 iterations; TRPO: 2 × 30 = 60 per iteration → 10 for 600
    iterations = {(run.label, run.config.iterations) for run in result.runs}
    assert iterations == {("mpc", 4), ("mpo", 4), ("trpo", 10)}
    assert (tmp_path / "tiny-mb" / "Point1D" / "mpo-s1" / "progress.csv").is_file()
    assert_comparison_png(result.figure, panels=2)
    rows = {(row["env"], row["label"]): row for row in result.summary}
    assert rows["Point2D", "mpo"]["return_key"] == "PrePolicy-AverageReturn"
    assert rows["Point2D", "mpc"]["return_key"] == "AverageReturn"
    assert rows["Point2D", "trpo"]["return_key"] == "Step_0-AverageReturn"
    # final rows: mpc 10·3 + seed (0, 1) → 30.5 ± 0.5; trpo 9 + seed → 9.5
    assert rows["Point1D", "mpc"]["return_mean"] == pytest.approx(30.5)
    assert rows["Point1D", "mpc"]["return_std"] == pytest.approx(0.5)
    assert rows["Point1D", "trpo"]["return_mean"] == pytest.approx(9.5)
    # Point2D's stated target 25: mpc's seed mean 10·i + 0.5 first ≥ 25 at i = 3 (330 steps), mpo
    # (5·3 + 0.5) and trpo (9.5) never; Point1D has no stated target
    assert rows["Point2D", "mpc"]["target"] == 25.0 and rows["Point2D", "mpc"]["steps_to_target"] == 330
    assert math.isnan(rows["Point2D", "mpo"]["steps_to_target"])
    assert math.isnan(rows["Point1D", "mpc"]["target"])
    assert math.isnan(rows["Point1D", "mpc"]["steps_to_target"])
    # the yardstick's final return 9.5 (both envs): mpc reaches it at i = 1 (150 steps), mpo at
    # i = 2 (240), trpo itself at its last row i = 9 (600 steps); mpc needs 1/4 of TRPO's data
    for env in ("Point2D", "Point1D"):
        assert rows[env, "mpc"]["yardstick_return"] == pytest.approx(9.5)
        assert [rows[env, label]["steps_to_yardstick_return"] for label in ("mpc", "mpo", "trpo")] == [
            150, 240, 600]
        assert rows[env, "mpc"]["data_vs_yardstick"] == pytest.approx(150 / 600)
        assert rows[env, "trpo"]["data_vs_yardstick"] == pytest.approx(1.0)
    written = read_summary_rows(tmp_path / "tiny-mb" / "summary.csv")
    assert [(row["env"], row["label"]) for row in written] == list(rows)
    assert float(written[3]["steps_to_yardstick_return"]) == 150
    commands = (tmp_path / "tiny-mb" / "commands.txt").read_text()
    assert "300 real steps (trpo 600) at full scale; iterations: mpc 4, mpo 4, trpo 10" in commands
    # the CLI: --envs restricts the plan, the table shows the environment and the steps to the target
    out = cli(["tiny-mb", "--seeds", "2", "--out", str(tmp_path), "--envs", "Point1D", "--dry-run"], capsys)
    assert out.startswith("tiny-mb: 3 labels × 1 environment × 2 seeds") and "Point2D" not in out
    assert "mpc on Point1D seed 0: done (4/4) [skip]" in out
    monkeypatch.setenv("COLUMNS", "200")
    out = cli(["tiny-mb", "--seeds", "2", "--out", str(tmp_path), "--plot-only"], capsys)
    assert "real return" in out and "pre-update" not in out
    assert "Point1D" in out and "steps to target" in out and "not reached (25)" in out
    assert "150 (≥ 10), 0.25×" in out
    # --plot-only --envs draws only that environment: one panel, its summary rows, its commands
    out = cli(["tiny-mb", "--seeds", "2", "--out", str(tmp_path), "--plot-only", "--envs", "Point1D"], capsys)
    assert "Point2D" not in out
    assert_comparison_png(tmp_path / "tiny-mb" / "comparison.png", panels=1)
    written = read_summary_rows(tmp_path / "tiny-mb" / "summary.csv")
    assert {row["env"] for row in written} == {"Point1D"} and len(written) == 3
    command_lines = [line for line in (tmp_path / "tiny-mb" / "commands.txt").read_text().splitlines()
                     if line.startswith("adaptrl train")]
    assert len(command_lines) == 6 and all("--env Point1D " in line for line in command_lines)


def read_summary_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
