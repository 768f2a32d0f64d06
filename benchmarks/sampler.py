"""Sampler throughput vs raw batched stepping for several families; prints a Markdown table.

Usage: ``.venv/bin/python benchmarks/sampler.py [--quick]`` (``make bench``). Each row is one
``adaptrl bench sampler`` measurement (ratio against raw ``mujoco.rollout`` in the same process).
"""

from __future__ import annotations

import argparse
import json
import platform

from adaptrl.bench import sampler_benchmark
from adaptrl.envs.host import default_num_threads

CASES = [
    # env, tasks, rollouts, horizon, gymnasium steps
    ("HalfCheetahRandDirec", 40, 20, 100, 50),
    ("AntRandDirec2D", 40, 20, 100, 0),
    ("Walker2DRandDirec", 40, 20, 200, 0),
    ("HopperRandParams", 40, 20, 200, 0),
    ("HumanoidRandDirec", 10, 20, 100, 0),
    ("PointCorners", 40, 20, 100, 0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only HalfCheetahRandDirec")
    parser.add_argument("--json", action="store_true", help="also print the raw JSON results")
    args = parser.parse_args()
    cases = CASES[:1] if args.quick else CASES
    print(f"machine: {platform.processor() or platform.machine()}, {default_num_threads()} cores")
    print("| env | tasks×rollouts×horizon | sampler steps/s | raw steps/s | ratio | Gymnasium steps/s |")
    print("|---|---|---|---|---|---|")
    results = []
    for env, tasks, rollouts, horizon, gym_steps in cases:
        r = sampler_benchmark(env, tasks, rollouts, horizon, repeats=3, gymnasium_steps=gym_steps)
        results.append(r)
        gym = f"{r['gymnasium_steps_per_s']:,.0f} ({r['gymnasium_env']})" if gym_steps else "–"
        print(f"| {env} | {tasks}×{rollouts}×{horizon} | {r['sampler_steps_per_s']:,.0f} | "
              f"{r['raw_steps_per_s']:,.0f} | {r['ratio']:.2f} | {gym} |", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
