"""Trainer, run directory, checkpoints/resume, NaN stop, eval and the train/eval/plot CLI."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import yaml

from adaptrl.algorithms.meta_rl import TIME_KEYS
from adaptrl.cli import main
from adaptrl.errors import ConfigError
from adaptrl.experiment.campaign_runner import real_steps_per_iteration
from adaptrl.experiment.checkpoints import read_checkpoint
from adaptrl.experiment.config import build_config, parse_set
from adaptrl.experiment.evaluation import evaluate
from adaptrl.experiment.trainer import TrainingDiverged, train
from adaptrl.meta.config import config_from_dict
from adaptrl.meta.learner import MetaLearner
from adaptrl.plots import read_progress

TINY = dict(tasks_per_iter=4, rollouts_per_task=3, horizon=12, hidden_sizes=(8,), inner_steps=2,
            env_options={"reward_type": "dense"})


def tiny(algo="promp", **overrides):
    return build_config(algo, "PointCorners", overrides={**TINY, **overrides})


def rows_without_time(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


def quiet_train(config, run_dir, **kwargs):
    return train(config, run_dir, show_progress=False, tensorboard=False, make_plots=False, **kwargs)


def assert_figure(path, width_in, height_in, dpi=120):
    """``path`` is a PNG of ``width_in × height_in`` inches at ``dpi`` and not a blank image."""
    import matplotlib.image as mpimg

    image = mpimg.imread(path)
    assert image.shape[:2] == (round(height_in * dpi), round(width_in * dpi)), image.shape
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 1, "blank image"


def test_run_directory_layout(tmp_path):
    """The run directory: config.yaml, progress.csv with ProMP keys, TB events, checkpoint, plots."""
    config = tiny(iterations=2)
    run = tmp_path / "run"
    result = train(config, run, show_progress=False)
    assert config_from_dict(yaml.safe_load((run / "config.yaml").read_text())) == config
    progress = read_progress(run)
    for key in ("Itr", "n_timesteps", "Step_0-AverageReturn", "Step_2-AverageReturn", "Step_1-StdReturn",
                "Time-Sampling", "Time-OuterStep", "ItrTime", "LossBefore", "LossAfter", "KLInner",
                "KLCoeffInner"):
        assert key in progress, key
    # n_timesteps counts real steps: 3 sampling rounds × tasks × rollouts × horizon (no termination)
    np.testing.assert_array_equal(progress["n_timesteps"], [3 * 4 * 3 * 12, 6 * 4 * 3 * 12])
    assert real_steps_per_iteration(config) == (3 * 4 * 3 * 12, 3 * 4 * 3 * 12)  # what reproduce budgets with
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert read_checkpoint(run)[1]["iteration"] == 2
    # plots.plot_learning_curve: every adaptation step on one axis, 6.4 × 4.0 in at DPI 120
    assert_figure(run / "plots" / "learning_curve.png", 6.4, 4.0)
    # plots.plot_point_exploration: one panel per corner, (3.3·4 + 0.3) × 3.9 in at DPI 120
    assert_figure(run / "plots" / "exploration.png", 3.3 * 4 + 0.3, 3.9)
    assert len(result.rows) == 2


def test_same_seed_same_progress(tmp_path):
    """Everything seeded: two runs of one config write identical progress (timings aside)."""
    config = tiny(iterations=2)
    quiet_train(config, tmp_path / "a")
    quiet_train(config, tmp_path / "b")
    assert rows_without_time(tmp_path / "a") == rows_without_time(tmp_path / "b")
    quiet_train(dataclasses.replace(config, seed=1), tmp_path / "c")
    assert rows_without_time(tmp_path / "a") != rows_without_time(tmp_path / "c")


@pytest.mark.parametrize("algo", ["promp", "maml-trpo"])
def test_resume_continues_exactly(tmp_path, algo):
    """An interrupted run resumed from its checkpoint writes the uninterrupted run's rows."""
    config = tiny(algo, iterations=4, checkpoint_every=1)
    quiet_train(config, tmp_path / "straight")

    def interrupt(row):
        if row["Itr"] == 1:
            raise KeyboardInterrupt

    result = quiet_train(config, tmp_path / "resumed", callback=interrupt)
    assert result.interrupted
    # the interrupt came after iteration 1 was logged: its row and checkpoint survive
    assert read_checkpoint(tmp_path / "resumed")[1]["iteration"] == 2
    quiet_train(config, tmp_path / "resumed", resume=True)
    assert rows_without_time(tmp_path / "resumed") == rows_without_time(tmp_path / "straight")


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
    """Rows logged after the last checkpoint are rewritten on resume, not duplicated."""
    config = tiny(iterations=3, checkpoint_every=2)
    quiet_train(config, tmp_path / "straight")
    run = tmp_path / "crashed"
    quiet_train(config, run)
    # simulate a crash after iteration 2 but before its checkpoint: the checkpoint says 2 done
    assert read_checkpoint(run)[1]["iteration"] == 3
    ckpt_path = run / "checkpoints" / "latest.npz"
    straight_two = tmp_path / "two"
    quiet_train(dataclasses.replace(config, iterations=2), straight_two)
    ckpt_path.write_bytes((straight_two / "checkpoints" / "latest.npz").read_bytes())
    assert read_checkpoint(run)[1]["iteration"] == 2
    quiet_train(config, run, resume=True)
    assert rows_without_time(run) == rows_without_time(tmp_path / "straight")


def test_nan_stops_with_clear_message_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    config = tiny(iterations=5, checkpoint_every=1)
    real_update = MetaLearner.update
    calls = {"n": 0}

    def poisoned(self, state, batches):
        new_state, info = real_update(self, state, batches)
        calls["n"] += 1
        if calls["n"] == 3:
            info = {**info, "LossAfter": float("nan")}
        return new_state, info

    monkeypatch.setattr(MetaLearner, "update", poisoned)
    with pytest.raises(TrainingDiverged, match="iteration 2: non-finite LossAfter"):
        quiet_train(config, tmp_path / "run")
    assert read_checkpoint(tmp_path / "run")[1]["iteration"] == 2
    assert len(read_progress(tmp_path / "run")["Itr"]) == 2


def test_existing_run_is_not_overwritten(tmp_path):
    config = tiny(iterations=1)
    quiet_train(config, tmp_path / "run")
    from adaptrl.errors import ConfigError

    with pytest.raises(ConfigError, match="already holds a run"):
        quiet_train(config, tmp_path / "run")


def test_evaluate_any_number_of_steps(tmp_path):
    """eval adapts any K (not only the training K) and reports a CI per step."""
    config = tiny(iterations=1)
    quiet_train(config, tmp_path / "run")
    report = evaluate(tmp_path / "run", tasks=5, adapt_steps=4, rollouts=2)
    assert [r["step"] for r in report["rows"]] == [0, 1, 2, 3, 4]
    assert len(report["result"].trajectories) == 5
    assert report["result"].trajectories[0].returns().shape == (5, 2)
    for r, traj in zip(report["rows"], report["result"].trajectories, strict=True):
        # Student-t 95 % CI across the 5 tasks of the per-task mean return: mean ± t_4·sd/√M
        per_task = np.asarray(traj.returns(), np.float64).mean(axis=1)
        mean, sd = per_task.mean(), per_task.std(ddof=1)
        half = 2.7764451051977987 * sd / np.sqrt(len(per_task))  # t_{0.975, 4}
        np.testing.assert_allclose(
            [r["mean_return"], r["std_across_tasks"], r["ci95_low"], r["ci95_high"]],
            [mean, sd, mean - half, mean + half], rtol=1e-5, atol=1e-5)
        assert r["ci95_high"] - r["ci95_low"] > 0  # 5 distinct tasks: a non-degenerate interval


def test_config_set_parsing_and_errors():
    from adaptrl.errors import ConfigError

    assert parse_set(["inner_lr=0.05", "env_options.reward_type=dense"]) == {
        "inner_lr": "0.05", "env_options": {"reward_type": "dense"}}
    config = build_config("promp", "PointCorners", overrides={"hidden_sizes": "32,32",
                                                               "adaptive_kl": "true"})
    assert config.hidden_sizes == (32, 32) and config.adaptive_kl is True
    with pytest.raises(ConfigError, match=r"unknown setting 'inner_lrr'.*inner_lr"):
        build_config("promp", "PointCorners", overrides={"inner_lrr": "1"})
    with pytest.raises(ConfigError, match=r"unknown algorithm 'prom'.*promp"):
        build_config("prom", "PointCorners")
    with pytest.raises(ConfigError, match="inner_steps must be an integer"):
        build_config("promp", "PointCorners", overrides={"inner_steps": "1.5"})
    with pytest.raises(ConfigError, match="max_kl must be > 0"):
        build_config("maml-trpo", "PointCorners", overrides={"max_kl": "0"})
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set(["inner_lr"])


def test_cli_train_eval_plot(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "lvc-vpg", "--env", "PointCorners", "--iterations", "2", "--out", str(run),
            "--no-progress", "--seed", "3"]
    for key, value in TINY.items():
        if key == "env_options":
            args += ["--set", "env_options.reward_type=dense"]
        else:
            args += ["--set", f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}"]
    assert main(args) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 3
    assert main(["train", "--resume", str(run), "--iterations", "3", "--no-progress"]) == 0
    assert list(read_progress(run)["Itr"]) == [0, 1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["iterations"] == 3  # the extension is recorded
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--iterations", "2", "--no-progress"]) == 0
    assert "already complete: 3 iterations done, 2 asked for" in " ".join(capsys.readouterr().err.split())
    assert list(read_progress(run)["Itr"]) == [0, 1, 2]
    assert main(["train", "--resume", str(run), "--preset", "paper"]) == 2
    assert "give only --resume RUN_DIR" in capsys.readouterr().err
    assert main(["eval", str(run), "--tasks", "3", "--adapt-steps", "1", "--json"]) == 0
    path = run / "eval_k1_tasks3_seed1000006.csv"  # seed: the run's 3 + 1,000,003
    with open(path) as f:
        rows = list(csv.DictReader(f))
    context = [(r["tasks"], r["rollouts"], r["seed"], r["iteration"]) for r in rows]
    assert context == [("3", "3", "1000006", "3")] * 2
    assert main(["eval", str(run), "--tasks", "1", "--adapt-steps", "1"]) == 0
    assert "n/a (one task)" in capsys.readouterr().out
    assert main(["eval", str(run), "--rollouts", "0"]) == 2
    assert "--rollouts must be ≥ 1" in capsys.readouterr().err
    assert main(["plot", str(run), "--out", str(tmp_path / "p.png")]) == 0
    assert_figure(tmp_path / "p.png", 4.6 * 2 + 0.4, 3.8)  # as the run's learning curve
    capsys.readouterr()
    assert main(["train", "promp", "--env", "PointCornrs"]) == 2
    assert "unknown environment 'PointCornrs'" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--env", "PointCorners"]) == 2
    assert "--resume continues a run" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_promp_raises_post_update_return_on_point_corners(tmp_path):
    """ProMP on PointCorners (sparse reward, 3 steps) clearly raises the post-update return."""
    config = build_config("promp", "PointCorners", preset="paper",
                          overrides=dict(iterations=25, tasks_per_iter=20, rollouts_per_task=10))
    result = quiet_train(config, tmp_path / "run")
    post = np.array([r["Step_3-AverageReturn"] for r in result.rows])
    assert post[-5:].mean() > 2 * post[:3].mean()


def test_promp_learns_point_corners_quickly(tmp_path):
    """A short ProMP run on PointCorners (dense reward) clearly raises the post-update return."""
    config = build_config("promp", "PointCorners", overrides=dict(
        iterations=15, tasks_per_iter=10, rollouts_per_task=10, horizon=20, inner_steps=1,
        hidden_sizes=(32, 32), env_options={"reward_type": "dense"}, outer_lr=0.01))
    result = quiet_train(config, tmp_path / "run")
    post = np.array([r["Step_1-AverageReturn"] for r in result.rows])
    pre = np.array([r["Step_0-AverageReturn"] for r in result.rows])
    assert post[-3:].mean() > post[:3].mean() + 0.25 * abs(post[:3].mean())
    assert post[-3:].mean() > pre[-3:].mean()


# ------------------------------------------------------------------------------- checkpoints
def test_checkpoint_holds_named_fields_and_restores_them_exactly(tmp_path):
    """The checkpoint is a named-field .npz (no pickle) whose arrays are the final state's."""
    from adaptrl.experiment.checkpoints import named_leaves

    result = quiet_train(tiny(iterations=2), tmp_path / "run")
    arrays, meta = read_checkpoint(tmp_path / "run")
    assert meta == {"format": 2, "iteration": 2, "seed": 0, "n_timesteps": meta["n_timesteps"],
                    "time": meta["time"]}
    assert meta["n_timesteps"] == result.rows[-1]["n_timesteps"]
    assert ".meta_params['policy']['params']['output']['kernel']" in arrays
    expected = named_leaves(result.state)
    assert sorted(arrays) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(arrays[name], value)
    with np.load(tmp_path / "run" / "checkpoints" / "latest.npz", allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)


def test_snapshots_keep_every_nth_state_for_eval(tmp_path, capsys):
    """snapshot_every=2 keeps itr_2 and itr_4 (not only latest/previous, with checkpoint_every=3
    not a divisor); a snapshot holds the state of a shorter run of the same seed, eval --iteration
    meta-tests it into its own file, and a missing snapshot is one error naming those kept."""
    from adaptrl.experiment.checkpoints import named_leaves, snapshot_iterations

    run = tmp_path / "run"
    quiet_train(tiny(iterations=5, checkpoint_every=3, snapshot_every=2), run)
    assert snapshot_iterations(run) == [2, 4]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "itr_000002.npz", "itr_000004.npz", "latest.npz", "previous.npz"]
    short = quiet_train(tiny(iterations=2), tmp_path / "short")
    arrays, meta = read_checkpoint(run, iteration=2)
    assert meta["iteration"] == 2 and meta["n_timesteps"] == short.rows[-1]["n_timesteps"]
    for name, value in named_leaves(short.state).items():
        np.testing.assert_array_equal(arrays[name], value)
    assert read_checkpoint(run)[1]["iteration"] == 5
    assert main(["eval", str(run), "--iteration", "2", "--tasks", "2"]) == 0
    assert main(["eval", str(tmp_path / "short"), "--tasks", "2"]) == 0
    snapshot_eval = (run / "eval_itr2_k2_tasks2_seed1000003.csv").read_text()
    assert snapshot_eval == (tmp_path / "short" / "eval_k2_tasks2_seed1000003.csv").read_text()
    capsys.readouterr()
    assert main(["eval", str(run), "--iteration", "3"]) == 2
    err = capsys.readouterr().err
    assert "no snapshot after iteration 3; it keeps 2, 4" in err and "Traceback" not in err
    assert main(["eval", str(tmp_path / "short"), "--iteration", "2"]) == 2
    assert "keeps no snapshots" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="snapshot_every must be ≥ 0"):
        tiny(snapshot_every=-1)


def test_damaged_or_incompatible_checkpoint_gives_one_clear_message(tmp_path):
    config = tiny(iterations=1)
    quiet_train(config, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "latest.npz"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match="damaged or not an adaptrl checkpoint"):
        quiet_train(dataclasses.replace(config, iterations=2), tmp_path / "run", resume=True)
    ckpt.write_bytes(good)
    bigger = dataclasses.replace(config, iterations=2, hidden_sizes=(16,))
    shape_error = r"field .*\['hidden_0'\]\['bias'\] has shape \(8,\), this configuration needs \(16,\)"
    with pytest.raises(ConfigError, match=shape_error):
        quiet_train(bigger, tmp_path / "run", resume=True)
    two_layers = dataclasses.replace(config, iterations=2, hidden_sizes=(8, 8))
    with pytest.raises(ConfigError, match=r"different state structure.*missing.*hidden_1"):
        quiet_train(two_layers, tmp_path / "run", resume=True)
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "latest.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ConfigError, match="older adaptrl"):
        read_checkpoint(tmp_path / "old")


def test_progress_goes_to_a_log_file_line_by_line(tmp_path, capsys):
    """With stdout redirected (not a terminal), every iteration prints one plain line as it ends."""
    config = tiny(iterations=2)
    train(config, tmp_path / "run", show_progress=True, tensorboard=False, make_plots=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if "itr " in line]
    assert [line.split("itr ")[1].split()[0] for line in lines] == ["1/2", "2/2"]
    assert "pre" in lines[0] and lines[0].rstrip().endswith("s)")


def test_damaged_checkpoint_falls_back_to_the_previous_one_and_damaged_config_is_one_error(tmp_path, capsys):
    """A damaged latest.npz: resume falls back to previous.npz (one checkpoint earlier) and still
    ends with the uninterrupted run's rows; a damaged config.yaml gives one error with its line."""
    config = tiny(iterations=3, checkpoint_every=1)
    quiet_train(config, tmp_path / "straight")
    run = tmp_path / "run"
    quiet_train(dataclasses.replace(config, iterations=2), run)
    checkpoints = run / "checkpoints"
    assert read_checkpoint(run)[1]["iteration"] == 2
    (checkpoints / "latest.npz").write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="Falling back to .*previous.npz \\(iteration 1\\)"):
        assert read_checkpoint(run)[1]["iteration"] == 1
    with pytest.warns(UserWarning, match="Falling back"):
        quiet_train(config, run, resume=True)
    assert rows_without_time(run) == rows_without_time(tmp_path / "straight")
    (run / "config.yaml").write_text("algo: promp\nenv: [PointCorners\nseed: 0\n")
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "config.yaml is damaged: not valid YAML at line" in err and "Traceback" not in err


def test_sigterm_checkpoints_like_ctrl_c(tmp_path):
    """A cluster scheduler's SIGTERM stops `adaptrl train` as Ctrl-C does: the last completed
    iteration is checkpointed and the run can be resumed."""
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    args = [sys.executable, "-m", "adaptrl.cli", "train", "promp", "--env", "PointCorners",
            "--iterations", "500", "--out", str(run), "--set", "checkpoint_every=1000"]
    for key, value in TINY.items():
        setting = "env_options.reward_type=dense" if key == "env_options" else \
            f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
        args += ["--set", setting]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "itr 2/500" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, rest
    assert "checkpoint written" in rest
    done = read_checkpoint(run)[1]["iteration"]
    assert done >= 2 and len(read_progress(run)["Itr"]) == done


def tensorboard_scalars(run_dir):
    """``{tag: [(step, value), ...]}`` as TensorBoard loads ``run_dir/tensorboard`` (its
    EventAccumulator, which applies the purge events of resumed runs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_shows_each_step_once_after_a_crash_and_resume(tmp_path):
    """A crash after the checkpoint of iteration 2 and the rows of iterations 2 and 3 leaves their
    events behind; the resumed run writes those steps again, and TensorBoard shows each step once,
    with the resumed run's values (the same as progress.csv's)."""
    config = tiny(iterations=5, checkpoint_every=2)
    run = tmp_path / "run"

    def crash(row):
        if row["Itr"] == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, run, show_progress=False, make_plots=False, callback=crash)
    assert read_checkpoint(run)[1]["iteration"] == 2
    assert {step for step, _ in tensorboard_scalars(run)["LossBefore"]} == {0, 1, 2, 3}
    train(config, run, resume=True, show_progress=False, make_plots=False)
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # neither overwritten
    scalars = tensorboard_scalars(run)
    progress = read_progress(run)
    assert "LossBefore" in scalars and "Step_2-AverageReturn" in scalars
    for tag, events in scalars.items():
        assert [step for step, _ in events] == list(range(5)), tag
        np.testing.assert_allclose([value for _, value in events], progress[tag], rtol=1e-6, err_msg=tag)


def test_train_impossible_size_fails_at_build_before_the_run_directory(tmp_path, monkeypatch, capsys):
    """Under a 1 GiB limit, ``--set tasks_per_iter=10000000`` stops with one ``error:`` line when the
    algorithm is built: nothing compiled, sampled or written."""
    from adaptrl import memory

    monkeypatch.delenv(memory.MEMORY_ENV, raising=False)
    monkeypatch.setattr(memory, "available_bytes", lambda: memory.GIB)
    with pytest.raises(ConfigError, match=r"^training with tasks_per_iter=10000000, rollouts_per_task=3 and "
                                          r"horizon=12 \(promp, hidden_sizes \(8,\)\) needs about .* GiB"):
        quiet_train(tiny(tasks_per_iter=10_000_000), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    out = tmp_path / "cli"
    argv = ["train", "promp", "--env", "PointCorners", "--set", "rollouts_per_task=200", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the CLI's line naming the run
    assert err.startswith("error: training with tasks_per_iter=40, rollouts_per_task=200 and horizon=100 ")
    assert "but 1.0 GiB is available; the largest tasks_per_iter that fits is " in err
    assert "(or lower rollouts_per_task or horizon)" in err
    assert not out.exists()
