"""``adaptrl demo`` (``make demo``) at reduced size: its pictures and its closing table."""

from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from adaptrl.cli import main
from adaptrl.envs.device import CORNERS
from adaptrl.errors import ConfigError
from adaptrl.experiment.demo import DEMO_REASONS, DEMO_SETTINGS, demo_config, run_demo
from adaptrl.plots import POST_UPDATE_COLOR, STEP_COLORS

SMALL = {"tasks_per_iter": 4, "rollouts_per_task": 3, "horizon": 12}


def colour_pixels(path, hex_colour: str) -> int:
    """Pixels of the PNG at ``path`` drawn in exactly ``hex_colour`` (line cores are unblended)."""
    image = mpimg.imread(path)[..., :3]
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255
    return int(np.all(np.abs(image - rgb) < 1.5 / 255, axis=-1).sum())


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_demo_config_is_the_paper_preset_with_the_documented_changes():
    from adaptrl.experiment.config import build_config

    paper = build_config("promp", "PointCorners", preset="paper")
    demo = demo_config()
    changed = {k for k in paper.to_dict() if paper.to_dict()[k] != demo.to_dict()[k]}
    assert changed == set(DEMO_SETTINGS) == set(DEMO_REASONS)
    for key, value in DEMO_SETTINGS.items():
        assert getattr(demo, key) == value


def test_demo_writes_pictures_and_table(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--iterations", "2", "--eval-tasks", "3", "--no-progress"]
    for key, value in SMALL.items():
        args += ["--set", f"{key}={value}"]
    main(args)
    printed = capsys.readouterr().out

    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["eval_tasks"] == 3 and summary["eval_rollouts"] == 3
    # the returns are the meta-test's: one row per adaptation step 0..3, as in eval's CSV
    eval_rows = read_csv(out / "eval_k3_tasks3_seed1000003.csv")
    assert [r["step"] for r in summary["returns"]] == [0, 1, 2, 3]
    for written, row in zip(eval_rows, summary["returns"], strict=True):
        assert float(written["mean_return"]) == pytest.approx(row["mean_return"])
        assert row["ci95_low"] <= row["mean_return"] <= row["ci95_high"]
    # per-corner success: the four corners, from the exploration picture's CSV
    corners = read_csv(out / "plots" / "exploration.csv")
    np.testing.assert_allclose([[float(c["goal_x"]), float(c["goal_y"])] for c in corners], CORNERS)
    assert [c["goal"] for c in summary["corners"]] == [[float(c["goal_x"]), float(c["goal_y"])]
                                                       for c in corners]
    for corner, row in zip(summary["corners"], corners, strict=True):
        assert corner["rollouts"] == int(row["rollouts"]) == SMALL["rollouts_per_task"]
        assert corner["reached"] == bool(int(row["reached"])) == (float(row["reached_fraction"]) >= 0.5)
    assert summary["corners_reached"] == sum(c["reached"] for c in summary["corners"])
    assert summary["train_seconds"] > 0 and summary["eval_seconds"] > 0

    # the table, printed and in summary.txt: every return with its interval, every corner, the paths
    text = (out / "summary.txt").read_text()
    for shown in (printed, text):
        for row in summary["returns"]:
            assert f"{row['mean_return']:.2f}" in shown
            assert f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]" in shown
        assert f"{summary['corners_reached']} of 4 goals reached" in shown
        for corner in summary["corners"]:
            assert f"({corner['goal'][0]:g}, {corner['goal'][1]:g})" in shown
        assert "learning_curve.png" in shown and "exploration.png" in shown
    # both pictures draw every adaptation step in its own colour
    for picture in ("learning_curve.png", "exploration.png"):
        path = out / "plots" / picture
        for colour in (*STEP_COLORS[:3], POST_UPDATE_COLOR):
            assert colour_pixels(path, colour) > 20, (picture, colour)
    assert colour_pixels(out / "plots" / "exploration.png", STEP_COLORS[3]) == 0  # no fourth pre-update step

    with pytest.raises(ConfigError, match="already holds a run"):
        run_demo(out, iterations=1, overrides=SMALL, show_progress=False)
