"""``adaptrl bench sampler``: sampler throughput against raw batched stepping."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` and its benchmarks to ``subparsers`` (an argparse subparsers object); returns the
    ``bench`` parser."""
    bench = subparsers.add_parser("bench", help="benchmarks", description="Benchmarks (ratios against "
                                  "a reference measured in the same process).")
    benchmarks = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    sampler = benchmarks.add_parser("sampler", help="sampler vs raw batched stepping", description=(
        "Collect full batches (TASKS x ROLLOUTS trajectories of HORIZON steps) with the default "
        "policy and report env-steps/s of the sampler and, in the same process on the same model "
        "and batch size, of raw batched mujoco.rollout stepping with the same frame skip (one "
        "call over the whole horizon replaying the sampler's actions open loop). For JAX families "
        "the raw reference is the jitted dynamics alone."))
    sampler.add_argument("--env", default="HalfCheetahRandDirec", help="task family")
    sampler.add_argument("--tasks", type=int, default=40, help="tasks per batch (default 40)")
    sampler.add_argument("--rollouts", type=int, default=20, help="trajectories per task (default 20)")
    sampler.add_argument("--horizon", type=int, default=100, help="steps per trajectory (default 100)")
    sampler.add_argument("--repeats", type=int, default=3, help="timed batches; medians are reported")
    sampler.add_argument("--threads", type=int, default=None, help="MuJoCo threads (default: cores)")
    sampler.add_argument("--gymnasium", type=int, default=0, metavar="STEPS",
                         help="also time Gymnasium's counterpart env in a SyncVectorEnv for STEPS steps")
    sampler.add_argument("--seed", type=int, default=0)
    sampler.add_argument("--json", action="store_true", help="print one JSON object")
    sampler.set_defaults(func=run)
    return bench


def run(args: argparse.Namespace) -> None:
    """Run the sampler benchmark and print its rates (or one JSON object)."""
    from rich.console import Console

    from adaptrl.bench import sampler_benchmark

    def measure(progress: Any = None) -> dict[str, Any]:
        return sampler_benchmark(args.env, args.tasks, args.rollouts, args.horizon, repeats=args.repeats,
                                 threads=args.threads, gymnasium_steps=args.gymnasium, seed=args.seed,
                                 progress=progress)

    if args.json:
        print(json.dumps(measure()))
        return
    with Console(stderr=True).status("benchmarking") as status:
        result = measure(lambda msg: status.update(msg))
    out = Console()
    out.print(f"[bold]{result['env']}[/bold]: {result['tasks']} tasks × {result['rollouts']} rollouts "
              f"× {result['horizon']} steps ({result['batch_envs']} envs, {result['threads']} threads)")
    out.print(f"  sampler (policy in the loop): {result['sampler_steps_per_s']:>10,.0f} env-steps/s "
              f"({result['sampler_seconds_per_batch']:.2f} s per batch: policy "
              f"{result['sampler_policy_seconds']:.2f} s, simulator {result['sampler_env_seconds']:.2f} s)")
    out.print(f"  raw batched stepping:         {result['raw_steps_per_s']:>10,.0f} env-steps/s "
              f"({result['raw_reference']})")
    out.print(f"  ratio sampler / raw:          {result['ratio']:>10.3f}")
    if "gymnasium_steps_per_s" in result:
        out.print(f"  Gymnasium {result['gymnasium_env']} SyncVectorEnv: "
                  f"{result['gymnasium_steps_per_s']:,.0f} env-steps/s "
                  f"(ratio to raw {result['gymnasium_ratio']:.3f})")
