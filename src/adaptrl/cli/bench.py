"""``adaptrl bench sampler`` (sampler throughput against raw batched stepping) and ``adaptrl bench
models`` (ensemble training, imagined rollouts and planners against same-process references)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` and its benchmarks to ``subparsers`` (an argparse subparsers object); returns the
    ``bench`` parser."""
    bench = subparsers.add_parser("bench", help="benchmarks", description="Benchmarks (ratios against "
                                  "a reference measured in the same process).")
    benchmarks = bench.add_subparsers(
        dest="bench", metavar="BENCH", required=True,
        help="the benchmark to run (adaptrl bench BENCH --help for its options)")
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

    models = benchmarks.add_parser("models", help="dynamics ensembles, imagined rollouts, planners",
                                   description=(
        "Model-based throughput against references measured in the same process: ensemble training "
        "(member-samples/s of K members trained together vs one member alone, same code and data), "
        "imagined rollouts (env-steps/s of the model simulator in the sampler vs a bare jitted "
        "forward pass of the same ensemble at the same batch) and planner calls/s (one jitted MPC "
        "call for --plan-envs environments). Targets on 2 cores: K = 5 costs at most 1.25x one "
        "member per sample; imagination runs at >= 0.8 of the bare forward pass."))
    models.add_argument("--env", default="HalfCheetah", help="environment whose transitions are fitted")
    models.add_argument("--members", type=int, default=5, help="ensemble size K (default 5)")
    models.add_argument("--hidden", default="512,512", help="hidden sizes (default 512,512)")
    models.add_argument("--epochs", type=int, default=3, help="timed training epochs (default 3)")
    models.add_argument("--batch-size", type=int, default=500, help="model minibatch (default 500)")
    models.add_argument("--data-episodes", type=int, default=20,
                        help="random episodes of training data (default 20)")
    models.add_argument("--tasks", type=int, default=20, help="imagined tasks (default 20, 4 per member)")
    models.add_argument("--rollouts", type=int, default=50, help="imagined rollouts per task (default 50)")
    models.add_argument("--horizon", type=int, default=200, help="imagined horizon (default 200)")
    models.add_argument("--planner", default="random_shooting", help="planner (default random_shooting)")
    models.add_argument("--candidates", type=int, default=1000, help="planner candidates (default 1000)")
    models.add_argument("--plan-horizon", type=int, default=10, help="planning horizon (default 10)")
    models.add_argument("--plan-envs", type=int, default=20,
                        help="environments per planner call (default 20)")
    models.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported")
    models.add_argument("--seed", type=int, default=0)
    models.add_argument("--json", action="store_true", help="print one JSON object")
    models.set_defaults(func=run_models)
    meta = benchmarks.add_parser("meta-iteration", help="seconds per meta-iteration, native MuJoCo vs MJX",
                                 description=(
        "Train ITERATIONS meta-iterations of ALGO on ENV (default: ProMP at the paper's batch on "
        "HalfCheetahRandDirec) with the environment on --backend, then the same configuration on "
        "--reference in the same process, and report the medians of iterations 2.. (the first "
        "compiles): sampling, inner step, processing, outer step and the whole iteration, and the "
        "ratio reference / backend. --backend mjx runs the MuJoCo families on MJX (pip install "
        "'adaptrl[gpu]' on a GPU machine; on CPU it works but is slower than native MuJoCo)."))
    meta.add_argument("--algo", default="promp", help="algorithm (default promp)")
    meta.add_argument("--env", default="HalfCheetahRandDirec",
                      help="task family (default HalfCheetahRandDirec)")
    meta.add_argument("--backend", default="native", choices=("native", "mjx"),
                      help="simulator of the timed run (default native)")
    meta.add_argument("--reference", default="native", choices=("native", "mjx", "none"),
                      help="simulator of the reference run in the same process (default native; none: "
                           "no reference)")
    meta.add_argument("--preset", default="paper", choices=("default", "paper"),
                      help="settings preset (default paper)")
    meta.add_argument("--iterations", type=int, default=3,
                      help="iterations per run, the first is not timed (default 3)")
    meta.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a setting of both runs (repeatable; see adaptrl train --help)")
    meta.add_argument("--json", action="store_true", help="print one JSON object")
    meta.set_defaults(func=run_meta_iteration)
    return bench


def run_meta_iteration(args: argparse.Namespace) -> None:
    """Run the meta-iteration benchmark and print its table (or one JSON object)."""
    from rich.console import Console

    from adaptrl.bench import meta_iteration_benchmark
    from adaptrl.experiment.config import parse_set

    overrides = parse_set(args.set)
    reference = None if args.reference == "none" else args.reference

    def measure(progress: Any = None) -> dict[str, Any]:
        return meta_iteration_benchmark(args.algo, args.env, backend=args.backend, reference=reference,
                                        preset=args.preset, iterations=args.iterations,
                                        overrides=overrides, progress=progress)

    r = _measure(args, measure)
    if r is None:
        return
    out = Console()
    runs = [(r["backend"], r["backend_times"])]
    if "reference_times" in r:
        runs.append((r["reference"], r["reference_times"]))
    out.print(f"[bold]{r['algo']}[/bold] on {r['env']} (--preset {r['preset']}, "
              f"{runs[0][1]['batch']}); devices {', '.join(r['devices'])}; medians of iterations "
              f"2..{r['iterations']}")
    out.print("| simulator | sampling s | inner step s | processing s | outer step s | iteration s |")
    out.print("|---|---|---|---|---|---|")
    for name, t in runs:
        out.print(f"| {name} | {t['Time-Sampling']:.2f} | {t['Time-InnerStep']:.3f} | "
                  f"{t['Time-SampleProc']:.3f} | {t['Time-OuterStep']:.2f} | {t['ItrTime']:.2f} |")
    if "ratio" in r:
        out.print(f"{r['reference']} / {r['backend']} seconds per iteration: {r['ratio']:.2f}")


def run_models(args: argparse.Namespace) -> None:
    """Run the model benchmark and print its rates (or one JSON object)."""
    from rich.console import Console

    from adaptrl.bench import models_benchmark
    from adaptrl.experiment.config import parse_int_list

    hidden = tuple(parse_int_list(args.hidden, "--hidden"))

    def measure(progress: Any = None) -> dict[str, Any]:
        return models_benchmark(args.env, members=args.members, hidden_sizes=hidden, epochs=args.epochs,
                                batch_size=args.batch_size, data_episodes=args.data_episodes,
                                tasks=args.tasks, rollouts=args.rollouts, horizon=args.horizon,
                                planner=args.planner,
                                candidates=args.candidates, plan_horizon=args.plan_horizon,
                                plan_envs=args.plan_envs, repeats=args.repeats, seed=args.seed,
                                progress=progress)

    r = _measure(args, measure)
    if r is None:
        return
    out = Console()
    out.print(f"[bold]{r['env']}[/bold]: {r['members']} × {tuple(r['hidden_sizes'])} models, "
              f"{r['data_rows']} transitions")
    out.print(f"  ensemble training: {r['ensemble_member_samples_per_s']:>12,.0f} member-samples/s; "
              f"one member alone {r['single_member_samples_per_s']:,.0f} (per-sample cost ratio "
              f"{r['ensemble_cost_ratio']:.2f})")
    out.print(f"  imagined rollouts: {r['imagined_steps_per_s']:>12,.0f} env-steps/s; bare forward pass "
              f"{r['forward_steps_per_s']:,.0f} (ratio {r['imagined_to_forward']:.2f}; "
              f"{r['imagined_envs']} envs × {r['imagined_horizon']} steps)")
    out.print(f"  planner:           {r['planner_calls_per_s']:>12,.2f} calls/s ({r['planner']}, "
              f"{r['plan_candidates']} candidates × {r['plan_horizon']} steps, "
              f"{r['plan_envs']} envs per call)")


def _measure(args: argparse.Namespace, measure: Any) -> dict[str, Any] | None:
    """``measure()`` printed as one JSON object with ``--json`` (then None), else measured under a
    status line and returned for printing."""
    from rich.console import Console

    if args.json:
        print(json.dumps(measure()))
        return None
    with Console(stderr=True).status("benchmarking") as status:
        return measure(lambda msg: status.update(msg))


def run(args: argparse.Namespace) -> None:
    """Run the sampler benchmark and print its rates (or one JSON object)."""
    from rich.console import Console

    from adaptrl.bench import sampler_benchmark

    def measure(progress: Any = None) -> dict[str, Any]:
        return sampler_benchmark(args.env, args.tasks, args.rollouts, args.horizon, repeats=args.repeats,
                                 threads=args.threads, gymnasium_steps=args.gymnasium, seed=args.seed,
                                 progress=progress)

    result = _measure(args, measure)
    if result is None:
        return
    out = Console()
    out.print(f"[bold]{result['env']}[/bold]: {result['tasks']} tasks × {result['rollouts']} rollouts "
              f"× {result['horizon']} steps ({result['batch_envs']} envs, {result['threads']} threads)")
    if result["sampler_policy_seconds"] is None:
        split = "policy and simulator fused in one jitted scan"
    else:
        split = (f"policy {result['sampler_policy_seconds']:.2f} s, simulator "
                 f"{result['sampler_env_seconds']:.2f} s")
    out.print(f"  sampler (policy in the loop): {result['sampler_steps_per_s']:>10,.0f} env-steps/s "
              f"({result['sampler_seconds_per_batch']:.2f} s per batch: {split})")
    out.print(f"  raw batched stepping:         {result['raw_steps_per_s']:>10,.0f} env-steps/s "
              f"({result['raw_reference']})")
    out.print(f"  ratio sampler / raw:          {result['ratio']:>10.3f}")
    if "gymnasium_steps_per_s" in result:
        out.print(f"  Gymnasium {result['gymnasium_env']} SyncVectorEnv: "
                  f"{result['gymnasium_steps_per_s']:,.0f} env-steps/s "
                  f"(ratio to raw {result['gymnasium_ratio']:.3f})")
