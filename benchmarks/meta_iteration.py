"""Seconds per meta-iteration, split into sampling and update, at the paper's batch size.

Usage: ``.venv/bin/python benchmarks/meta_iteration.py [--env E] [--algos a,b] [--iterations N]``
(``make bench``). Each algorithm trains ``--iterations`` iterations with ``--preset paper``
(HalfCheetahRandDirec: 40 tasks × 20 rollouts × 100 steps, 2 sampling rounds per iteration) in a
temporary run directory; the first iteration (compilation) is dropped and medians of the rest are
reported. "update" is the outer step plus the sampling-time inner step and the sample processing;
the ratio update / sampling is measured in the same process on the same machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile

from adaptrl.envs.host import default_num_threads
from adaptrl.experiment.config import build_config
from adaptrl.experiment.trainer import train


def measure(algo: str, env: str, iterations: int) -> dict[str, float]:
    config = build_config(algo, env, preset="paper", overrides={"iterations": iterations})
    with tempfile.TemporaryDirectory() as tmp:
        rows = train(config, tmp, show_progress=False, tensorboard=False, make_plots=False).rows[1:]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    sampling = med("Time-Sampling")
    update = med("Time-OuterStep") + med("Time-InnerStep") + med("Time-SampleProc")
    return {"sampling": sampling, "outer": med("Time-OuterStep"), "inner": med("Time-InnerStep"),
            "proc": med("Time-SampleProc"), "update": update, "itr": med("ItrTime"),
            "ratio": update / sampling}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="HalfCheetahRandDirec")
    parser.add_argument("--algos", default="promp,maml-trpo,lvc-vpg")
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {default_num_threads()} cores; "
          f"{args.env} --preset paper, median of iterations 2..{args.iterations}")
    print("| algorithm | sampling s | outer step s | inner step s | processing s | update / sampling | "
          "s per iteration |")
    print("|---|---|---|---|---|---|---|")
    for algo in args.algos.split(","):
        r = measure(algo, args.env, args.iterations)
        print(f"| {algo} | {r['sampling']:.2f} | {r['outer']:.2f} | {r['inner']:.3f} | {r['proc']:.3f} | "
              f"{r['ratio']:.2f} | {r['itr']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
