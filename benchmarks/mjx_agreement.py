"""MJX against native MuJoCo, family by family: the largest relative differences of observations
and rewards over a few control steps from the same start states with the same random actions
(:func:`adaptrl.envs.mjx.native_agreement`).

Usage: ``.venv/bin/python benchmarks/mjx_agreement.py [--steps 10] [--families A,B]``; prints a
markdown table (docs/environments.md, "The MJX backend").
"""

from __future__ import annotations

import argparse
import time

from adaptrl.envs.mjx import native_agreement
from adaptrl.envs.mujoco_families import FAMILIES, SINGLE_TASK_FAMILIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--families", default=None, help="comma-separated (default: every MuJoCo family "
                        "MJX can simulate)")
    args = parser.parse_args()
    names = args.families.split(",") if args.families else [
        n for n in (*FAMILIES, *SINGLE_TASK_FAMILIES) if not n.startswith("Humanoid")]
    print(f"{args.steps} control steps, 2 tasks × 2 rollouts, uniformly random policy actions")
    print("| family | observations (relative) | rewards (relative) | terminations differing | seconds |")
    print("|---|---|---|---|---|")
    for name in names:
        start = time.perf_counter()
        w = native_agreement(name, steps=args.steps)
        print(f"| {name} | {w['obs_rel']:.1e} | {w['reward_rel']:.1e} | {w['done_mismatches']} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
