"""The gradient-analysis toolkit: statistics (docs/reproductions.md, "The metric"), the study,
training-time logging and the ProMP Fig. 6 (§7.4) directions study; CLI errors."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from adaptrl.analysis import gradients as G
from adaptrl.analysis import statistics as S
from adaptrl.analysis.directions import direction_spread, directions_study
from adaptrl.cli import main
from adaptrl.experiment.config import build_config


def test_statistics_by_hand_and_scale_invariance():
    """docs/reproductions.md, "The metric": rsd = √ΣVar/‖mean‖ and the per-coordinate ratio, both
    invariant to scaling the gradients (i.e. the rewards); Pearson and cosine against a truth."""
    grads = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]])
    stats = S.gradient_statistics(grads, truth=np.array([1.0, 1.5]))
    var = grads.var(axis=0, ddof=1)
    mean = grads.mean(axis=0)
    assert math.isclose(stats["rsd"], math.sqrt(var.sum()) / np.linalg.norm(mean))
    assert math.isclose(stats["rsd_coordinate"], float(np.mean(np.sqrt(var) / np.abs(mean))))
    scaled = S.gradient_statistics(37.0 * grads, truth=np.array([1.0, 1.5]))
    for key in ("rsd", "rsd_coordinate", "cos_to_mean", "pearson", "cos_truth"):
        assert math.isclose(stats[key], scaled[key], rel_tol=1e-12), key
    assert S.pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.5])) > 0.99
    assert math.isclose(S.cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])), 0.0)
    identical = S.gradient_statistics(np.tile([1.0, -2.0], (4, 1)))
    assert identical["rsd"] == 0.0 and math.isclose(identical["cos_to_mean"], 1.0)
    from adaptrl.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 2"):
        S.gradient_statistics(grads[:1])


def test_rsd_bootstrap_error_matches_the_spread_over_repeated_studies():
    """``rsd_se`` (bootstrap over the B batches of one study) estimates how much the RSD varies
    between independent studies: Gaussian gradients with known mean and noise, B = 8."""
    rng = np.random.default_rng(0)
    truth = np.ones(50)
    studies = [truth + 1.5 * rng.normal(size=(8, 50)) for _ in range(300)]
    spread = np.std([S.relative_std(g) for g in studies], ddof=1)
    se = np.mean([S.gradient_statistics(g)["rsd_se"] for g in studies[:40]])
    assert 0.5 * spread < se < 2.0 * spread, (se, spread)
    assert S.gradient_statistics(np.tile([1.0, -2.0], (4, 1)))["rsd_se"] == 0.0


def test_gradient_study_writes_csv_and_figure(tmp_path):
    """A tiny study on the 1-D task with a ground truth: one row per estimator and batch size."""
    base = build_config("dice-vpg", "Point1DRandGoal", overrides={"tasks_per_iter": 2, "hidden_sizes": (4,)})
    result = G.gradient_study(base, ["lvc", "dice-cv-paper"], [2, 4], num_batches=3, out=tmp_path,
                              truth_rollouts=16, truth_batches=2, cv_warmup=1)
    with open(result.csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [(r["estimator"], int(r["batch_size"])) for r in rows] == \
        [("lvc", 2), ("lvc", 4), ("dice-cv-paper", 2), ("dice-cv-paper", 4)]
    for r in rows:
        for key in ("rsd", "cos_to_mean", "pearson", "cos_truth"):
            assert math.isfinite(float(r[key])), key
        assert -1.0 <= float(r["pearson"]) <= 1.0
    import matplotlib.image as mpimg

    # plot_study: 3 panels (rsd, cos_to_mean, pearson: the study has a truth) of 4.8 × 3.8 in at dpi 120
    image = mpimg.imread(result.figure_path)
    assert image.shape[:2] == (round(3.8 * 120), round(3 * 4.8 * 120)), image.shape
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 1, "blank image"
    assert "truth_rsd_of_mean" in (tmp_path / "truth.txt").read_text()
    # rsd(DiCE + CV) / rsd(LVC) per batch size, from the rsd values written to the CSV
    rsd = {(r["estimator"], int(r["batch_size"])): float(r["rsd"]) for r in rows}
    np.testing.assert_allclose(G.relative_std_ratio(result.rows, "dice-cv-paper", "lvc"),
                               [rsd[("dice-cv-paper", n)] / rsd[("lvc", n)] for n in (2, 4)], rtol=1e-9)


def test_grad_stats_are_logged_during_training(tmp_path):
    """--during-training / grad_stats_every: Meta-GradientRStd appears every N iterations."""
    from adaptrl.experiment.trainer import train
    from adaptrl.plots import read_progress

    config = build_config("lvc-vpg", "Point1DRandGoal", overrides=dict(
        tasks_per_iter=2, rollouts_per_task=3, hidden_sizes=(4,), iterations=3, grad_stats_every=2,
        grad_stats_batches=3))
    train(config, tmp_path / "run", show_progress=False, tensorboard=False, make_plots=False)
    progress = read_progress(tmp_path / "run")
    rsd = progress["Meta-GradientRStd"]
    assert np.isfinite(rsd[0]) and np.isnan(rsd[1]) and np.isfinite(rsd[2]) and rsd[0] > 0


def test_directions_study_and_spread(tmp_path):
    """ProMP Fig. 6 plumbing: both formulations train from θ = (0.09, 0.05) and the files are written."""
    result = directions_study(tmp_path, iterations=2, seeds=1, grid=2, grid_batches=1,
                              overrides={"tasks_per_iter": 2, "rollouts_per_task": 4})
    assert set(result.paths) == {"I", "II"}
    for paths in result.paths.values():
        np.testing.assert_allclose(paths[0][0], [0.09, 0.05], rtol=1e-6)
        assert paths[0].shape == (3, 2)
    assert result.figure_path.exists() and len(result.rows) == 2
    assert math.isclose(direction_spread(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])), 0.0, abs_tol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["gradients", "--estimators", "lvc,bogus"], "unknown estimator 'bogus'"),
    (["gradients", "--batch-sizes", "1"], "must be ≥ 2"),
    (["gradients", "--batches", "1"], "--batches must be ≥ 2"),
    (["gradients", "--batch-sizes", "a,b"], "integers separated by commas"),
])
def test_gradients_cli_errors(argv, message, capsys):
    assert main([*argv, "--no-progress", "--out", "/tmp/adaptrl-test-gradients"]) == 2
    assert message in capsys.readouterr().err
