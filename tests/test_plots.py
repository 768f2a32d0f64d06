"""Plots: reading run folders, grouping seeds, learning curves and the PointCorners picture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from adaptrl.errors import AdaptrlError, ConfigError
from adaptrl.plots import (
    align_runs,
    group_runs,
    plot_point_exploration,
    plot_runs,
    plot_task_returns,
    read_config,
    read_progress,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["Itr", "n_timesteps", "Step_0-AverageReturn", "Step_0-StdReturn", "Step_1-AverageReturn",
           "Step_1-StdReturn", "Time-Sampling", "ItrTime", "LossBefore"]


def write_run(root, name, algo, seed, n_itr, env="PointCorners", offset=0.0):
    """A fake ``adaptrl train`` folder with ``n_itr`` iterations and inner_steps = 1."""
    run = root / name
    run.mkdir()
    config = {"algo": algo, "env": env, "seed": seed, "inner_steps": 1, "inner_lr": 0.1, "n_itr": n_itr}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [",".join(COLUMNS)]
    for i in range(n_itr):
        row = [i, 1000 * (i + 1), -50 + i + offset, 3.0, -40 + 2 * i + offset, 2.0, 0.5, 0.7, ""]
        lines.append(",".join(str(v) for v in row))
    (run / "progress.csv").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def runs(tmp_path):
    return [
        write_run(tmp_path, "promp_s0", "promp", 0, 6, offset=0.0),
        write_run(tmp_path, "promp_s1", "promp", 1, 4, offset=2.0),
        write_run(tmp_path, "maml_s0", "maml", 0, 5),
        write_run(tmp_path, "maml_s1", "maml", 1, 5, offset=4.0),
    ]


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC


def test_read_progress_parses_blank_cells_as_nan(tmp_path):
    (tmp_path / "progress.csv").write_text("Itr,n_timesteps,LossBefore\n0,100,\n1,200,nan\n2,300,0.5\n")
    progress = read_progress(tmp_path)
    assert list(progress) == ["Itr", "n_timesteps", "LossBefore"]
    np.testing.assert_array_equal(progress["n_timesteps"], [100.0, 200.0, 300.0])
    loss = progress["LossBefore"]
    assert math.isnan(loss[0]) and math.isnan(loss[1]) and loss[2] == 0.5
    # a truncated last row (run stopped while writing) is padded with nan
    (tmp_path / "progress.csv").write_text("Itr,n_timesteps\n0,100\n1\n")
    assert math.isnan(read_progress(tmp_path / "progress.csv")["n_timesteps"][1])


def test_read_progress_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"no progress\.csv in .*expected a run directory"):
        read_progress(tmp_path)
    with pytest.raises(AdaptrlError, match="does not exist"):
        read_progress(tmp_path / "missing")
    csv_path = tmp_path / "progress.csv"
    csv_path.write_text("")
    with pytest.raises(ConfigError, match=r"progress\.csv' is empty: expected a header row"):
        read_progress(tmp_path)
    csv_path.write_text("a,b\n1,2,3\n")
    with pytest.raises(ConfigError, match="malformed: data row 1 has 3 cells"):
        read_progress(tmp_path)
    csv_path.write_text("1,2\n3,4\n")
    with pytest.raises(ConfigError, match="no header row"):
        read_progress(tmp_path)


def test_read_config(tmp_path, runs):
    assert read_config(runs[0])["algo"] == "promp"
    assert read_config(tmp_path) == {}


def test_group_runs_by_algo_and_env(runs):
    groups = group_runs(runs)
    assert list(groups) == ["promp · PointCorners", "maml · PointCorners"]
    assert [r["config"]["seed"] for r in groups["promp · PointCorners"]] == [0, 1]
    assert len(group_runs(runs, label_by=("env",))) == 1
    by_seed = group_runs(runs, label_by=("seed",))
    assert sorted(by_seed) == ["seed=0", "seed=1"]
    with pytest.raises(ConfigError, match=r"unknown config key 'algos'\. Did you mean 'algo'"):
        group_runs(runs, label_by=("algos",))


def test_align_runs_truncates_to_shortest(runs):
    progresses = [r["progress"] for r in group_runs(runs)["promp · PointCorners"]]
    x, mean, std = align_runs(progresses, "Step_0-AverageReturn")
    assert len(x) == len(mean) == len(std) == 4
    np.testing.assert_allclose(x, [1000, 2000, 3000, 4000])
    np.testing.assert_allclose(mean, -50 + np.arange(4) + 1.0)
    np.testing.assert_allclose(std, 1.0)


def test_plot_runs_writes_png(tmp_path, runs):
    out = plot_runs(runs, out=tmp_path / "figs" / "curves.png")
    assert out == tmp_path / "figs" / "curves.png"
    assert_png(out)
    svg = plot_runs(runs[:1], keys=["LossBefore", "ItrTime"], out=tmp_path / "one.svg", x_key="Itr")
    assert svg.read_text().lstrip().startswith("<?xml")


def test_plot_runs_unknown_key_lists_columns(tmp_path, runs):
    with pytest.raises(ConfigError, match="unknown progress column 'Step_0-AverageRetrun'") as info:
        plot_runs(runs, keys=["Step_0-AverageRetrun"], out=tmp_path / "x.png")
    message = str(info.value)
    assert "Did you mean 'Step_0-AverageReturn'" in message
    assert all(c in message for c in COLUMNS)
    with pytest.raises(ConfigError, match="unknown progress column 'timesteps'"):
        plot_runs(runs, out=tmp_path / "x.png", x_key="timesteps")
    with pytest.raises(ConfigError, match="must end in"):
        plot_runs(runs, out=tmp_path / "x.jpg")
    assert not (tmp_path / "x.png").exists()


def test_plot_runs_missing_progress(tmp_path, runs):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"no progress\.csv in .*empty_run"):
        plot_runs([*runs, empty], out=tmp_path / "x.png")


def test_plot_point_exploration_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    n_tasks, n_roll, horizon, k_steps = 5, 3, 20, 2
    steps = rng.uniform(-0.2, 0.2, size=(k_steps + 1, n_tasks, n_roll, horizon, 2))
    obs = np.cumsum(steps, axis=3)
    masks = np.ones((k_steps + 1, n_tasks, n_roll, horizon))
    masks[..., 15:] = 0.0
    masks[0, 0, 0] = 0.0  # an empty trajectory is skipped
    corners = np.array([[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]])
    goals = corners[[0, 1, 1, 2, 3]]
    out = plot_point_exploration(list(obs[:k_steps]), obs[k_steps], list(masks[:k_steps]), masks[k_steps],
                                 goals, tmp_path / "explore.png", max_trajectories=2, title="ProMP")
    assert_png(out)
    with pytest.raises(ConfigError, match=r"mask_post has shape \[5, 3\]"):
        plot_point_exploration(list(obs[:k_steps]), obs[k_steps], list(masks[:k_steps]),
                               masks[k_steps, :, :, 0], goals, tmp_path / "bad.png")


def test_plot_task_returns(tmp_path):
    path = str(tmp_path / "returns.png")
    assert plot_task_returns(np.ones((2, 3)), ["a", "b"], "Env", path) == path
    assert_png(tmp_path / "returns.png")


def test_goal_success_counts_trajectories_entering_the_goal_region():
    """Reached = some real step within the radius (masked steps do not count); the final
    distance is taken at the last real step and averaged over trajectories with real steps."""
    from adaptrl.plots import goal_success

    goals = np.array([[2.0, 2.0], [-2.0, -2.0]])
    obs = np.zeros((2, 3, 4, 2))
    obs[0, 0, 3] = [2.1, 2.0]   # task 0: ends 0.1 from the goal
    obs[0, 1, 1] = [2.0, 2.4]   # in the region at step 1, then back to 0 (final dist √8)
    obs[0, 2, 2] = [2.0, 2.0]   # in the region only on a masked step: not reached
    obs[1, :, 3] = [-2.0, -1.0]  # task 1: every trajectory ends 1.0 away
    mask = np.ones((2, 3, 4))
    mask[0, 2, 2:] = 0
    mask[1, 2] = 0  # no real steps: not reached, not in the distance
    reached, distance = goal_success(obs, mask, goals, radius=0.5)
    np.testing.assert_allclose(reached, [2 / 3, 0.0])
    np.testing.assert_allclose(distance, [(0.1 + np.sqrt(8) + np.sqrt(8)) / 3, 1.0])
    reached_wide, _ = goal_success(obs, mask, goals, radius=1.5)
    np.testing.assert_allclose(reached_wide, [2 / 3, 2 / 3])


def test_learning_curve_draws_every_step_on_one_axis(tmp_path):
    """plot_learning_curve: one axis (6.4 × 4.0 in at 120 dpi), a line per key in its step colour,
    and a clear error for a missing column."""
    import matplotlib.image

    from adaptrl.plots import POST_UPDATE_COLOR, STEP_COLORS, plot_learning_curve

    run = write_run(tmp_path, "promp_s3", "promp", 3, 6)
    out = plot_learning_curve(run, ["Step_0-AverageReturn", "Step_1-AverageReturn"], ["pre", "post"],
                              run / "plots" / "curve.png")
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (480, 768)
    pixels = {tuple(np.round(p[:3] * 255).astype(int)) for p in image.reshape(-1, image.shape[-1])[::7]}

    def present(hex_colour):
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return any(np.abs(np.array(p) - rgb).max() <= 12 for p in pixels)

    assert present(STEP_COLORS[0]) and present(POST_UPDATE_COLOR)
    with pytest.raises(ConfigError, match="has no column 'Step_2-AverageReturn'"):
        plot_learning_curve(run, ["Step_2-AverageReturn"], ["x"], run / "bad.png")


def test_copies_of_a_run_count_as_one_seed_and_truncation_is_said(tmp_path, runs):
    """Two seeds copied twice are two seeds, not four (a narrower band would be a lie), and cutting
    curves to the shortest run is announced."""
    import shutil
    import warnings

    copies = [shutil.copytree(run, tmp_path / f"{run.name}_copy") for run in runs[:2]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = group_runs([*runs[:2], *copies])
        align_runs([r["progress"] for r in groups["promp · PointCorners"]], "Step_0-AverageReturn")
    assert [r["config"]["seed"] for r in groups["promp · PointCorners"]] == [0, 1]
    messages = " ".join(str(w.message) for w in caught)
    assert "4 runs but 2 distinct configurations" in messages
    assert "cut to the shortest run (4 rows)" in messages


def test_default_panels_name_the_return_of_runs_without_adaptation(tmp_path, runs):
    """Runs with Step_1 columns get a pre- and a post-update panel; single-task runs (K = 0, only
    Step_0) get one panel that does not call their return "pre-update"."""
    from adaptrl.plots import _panels, group_runs

    assert [title for title, _ in _panels(None, group_runs(runs))] == ["pre-update", "post-update (1 step)"]
    run = tmp_path / "trpo_s0"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"algo": "trpo", "env": "HalfCheetah", "seed": 0}))
    (run / "progress.csv").write_text("Itr,n_timesteps,Step_0-AverageReturn\n0,100,1.0\n1,200,2.0\n")
    assert [title for title, _ in _panels(None, group_runs([run]))] == ["return (no adaptation)"]
