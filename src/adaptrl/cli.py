"""``adaptrl`` command line.

Verbs: ``train`` (meta-train an algorithm preset into a run directory), ``eval`` (meta-test a
run on fresh tasks for any number of adaptation steps), ``plot`` (curves of runs, mean ± std over
seeds), ``gradients`` (meta-gradient variance/accuracy, ProMP Fig. 6 directions),
``reproduce`` (a named paper experiment: algorithms × seeds and its comparison figure), ``envs`` (the task
families), ``sample`` (random-policy returns per task, with a plot) and
``bench sampler`` (sampler throughput against raw batched MuJoCo stepping).
Bad input prints one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

from adaptrl.errors import AdaptrlError, ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptrl",
        description="Fast-adapting RL: gradient-based meta-RL and model-based RL on batched MuJoCo.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    _add_train_parsers(verbs)
    _add_gradients_parser(verbs)
    from adaptrl.experiment.reproduce import add_reproduce_parser

    add_reproduce_parser(verbs)
    envs = verbs.add_parser("envs", help="list the task families", description=(
        "List every task family: observation/action dimensions, default horizon, simulator "
        "backend and task distribution. Families are usable as adaptrl.envs.make(NAME) and "
        "gymnasium.make('adaptrl/NAME-v0')."))
    envs.add_argument("--details", action="store_true",
                      help="also print each family's deviations from the original code")
    envs.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    sample = verbs.add_parser("sample", help="collect trajectories with a random policy", description=(
        "Sample TASKS tasks, collect ROLLOUTS trajectories per task with a freshly initialised "
        "Gaussian MLP policy, print the return of every task and write returns.csv and "
        "returns.png to --out."))
    sample.add_argument("--env", default="HalfCheetahRandDirec", help="task family (see `adaptrl envs`)")
    sample.add_argument("--tasks", type=int, default=8, help="number of tasks (default 8)")
    sample.add_argument("--rollouts", type=int, default=10, help="trajectories per task (default 10)")
    sample.add_argument("--horizon", type=int, default=None, help="steps per trajectory (default: family's)")
    sample.add_argument("--seed", type=int, default=0, help="seed of tasks, resets, noise and init")
    sample.add_argument("--out", default="demo-output", help="folder for returns.csv and returns.png")

    bench = verbs.add_parser("bench", help="benchmarks", description="Benchmarks (ratios against "
                             "a reference measured in the same process).")
    bench_verbs = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    sampler = bench_verbs.add_parser("sampler", help="sampler vs raw batched stepping", description=(
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
    return parser


def _add_train_parsers(verbs) -> None:
    from adaptrl.experiment.config import FIELD_HELP, PRESET_DESCRIPTIONS

    algos = "\n".join(f"  {name:<11} {text}" for name, text in PRESET_DESCRIPTIONS.items())
    settings = "\n".join(f"  {name:<21} {text}" for name, text in FIELD_HELP.items()
                         if name not in ("algo", "env"))
    train = verbs.add_parser(
        "train", help="meta-train an algorithm", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Meta-train ALGO on the task family --env and write a run directory: config.yaml, "
            "progress.csv (ProMP key names: Itr, n_timesteps, Step_k-AverageReturn, ...), "
            "TensorBoard events, checkpoints/ and plots/. Ctrl-C writes a checkpoint; continue "
            "with --resume RUN_DIR.\n\nalgorithms:\n" + algos
            + "\n\nsettings for --set KEY=VALUE:\n" + settings))
    train.add_argument("algo", nargs="?", help="algorithm preset (omit with --resume)")
    train.add_argument("--env", help="task family (see `adaptrl envs`)")
    train.add_argument("--preset", default="default", choices=("default", "paper"),
                       help="paper: the ProMP paper's per-environment settings (App. D) on top of "
                            "the algorithm's Table 1 values")
    train.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    train.add_argument("--iterations", type=int, default=None, help="outer iterations (default 1000)")
    train.add_argument("--out", default=None, help="run directory (default runs/ALGO-ENV-seedN)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set inner_lr=0.05")
    train.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue RUN_DIR from its last checkpoint (--iterations may extend it)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = verbs.add_parser("eval", help="meta-test a run on fresh tasks", description=(
        "Load RUN_DIR's latest checkpoint, sample --tasks fresh tasks, adapt --adapt-steps times "
        "(one freshly sampled batch per step; any K, not only the training K) and report the "
        "mean return after every step with a 95% confidence interval across tasks. Writes "
        "RUN_DIR/eval_kK.csv."))
    ev.add_argument("run_dir")
    ev.add_argument("--tasks", type=int, default=40, help="fresh tasks (default 40)")
    ev.add_argument("--adapt-steps", type=int, default=None, help="adaptation steps (default: training K)")
    ev.add_argument("--rollouts", type=int, default=None, help="trajectories per task and step "
                    "(default: training value)")
    ev.add_argument("--seed", type=int, default=None, help="seed of the test tasks (default: "
                    "training seed + 1000003, disjoint from training)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    plot = verbs.add_parser("plot", help="plot learning curves of runs", description=(
        "Draw progress.csv curves of one or many run directories; runs with the same algorithm "
        "and env are one curve, mean ± std across seeds. Default keys: the pre-update and the "
        "final post-update average return."))
    plot.add_argument("run_dirs", nargs="+")
    plot.add_argument("--key", action="append", default=None, help="progress.csv column (repeatable)")
    plot.add_argument("--x", default="n_timesteps", help="x-axis column (default n_timesteps; or Itr)")
    plot.add_argument("--out", default="plot.png", help="output image (.png, .svg or .pdf)")


def _add_gradients_parser(verbs) -> None:
    from adaptrl.analysis.gradients import ESTIMATOR_LABELS

    names = "\n".join(f"  {name:<14} {text}" for name, text in ESTIMATOR_LABELS.items())
    g = verbs.add_parser(
        "gradients", help="meta-gradient variance and accuracy study",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=(
            "At fixed policy parameters (a fresh init, or --checkpoint RUN_DIR) and fixed tasks, "
            "resample --batches independent batches per estimator and batch size (trajectories per "
            "task) and report the meta-gradient's relative std √ΣVar/‖mean‖, the per-coordinate "
            "relative std, the mean cosine to the mean gradient and, with --truth-rollouts N, the "
            "Pearson correlation with a large-sample ground truth. Writes OUT/gradients.csv and "
            "OUT/gradients.png (ProMP Fig. 4 / TMAML Fig. 4 style).\n"
            "--directions draws ProMP Fig. 6 instead (formulation I vs II on Point1D); "
            "--during-training N meta-trains --algo and logs Meta-GradientRStd into progress.csv "
            "every N iterations.\n\nestimators:\n" + names))
    g.add_argument("--env", default="Point1DRandGoal", help="task family (default Point1DRandGoal)")
    g.add_argument("--algo", default="lvc-vpg", help="base preset whose data settings are used "
                   "(default lvc-vpg); the estimator sets the composition")
    g.add_argument("--preset", default="default", choices=("default", "paper"))
    g.add_argument("--estimators", default="lvc,dice,dice-cv,dice-cv-paper",
                   help="comma-separated (default lvc,dice,dice-cv,dice-cv-paper)")
    g.add_argument("--batch-sizes", default="5,10,20", help="trajectories per task, comma-separated")
    g.add_argument("--batches", type=int, default=10, help="independent batches per point (default 10)")
    g.add_argument("--tasks", type=int, default=None, help="tasks (default: the preset's)")
    g.add_argument("--checkpoint", default=None, metavar="RUN_DIR",
                   help="evaluate at RUN_DIR's latest parameters (same env and policy architecture)")
    g.add_argument("--truth-rollouts", type=int, default=0,
                   help="trajectories per task of the ground truth (0 = no ground truth)")
    g.add_argument("--truth-batches", type=int, default=4, help="batches averaged for the truth")
    g.add_argument("--truth-estimator", default="dice", help="unbiased estimator of the truth")
    g.add_argument("--cv-warmup", type=int, default=5, help="batches that train a meta CV first")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    g.add_argument("--out", default=None, help="output folder (default gradients-ENV)")
    g.add_argument("--directions", action="store_true", help="ProMP Fig. 6 study (Point1D)")
    g.add_argument("--iterations", type=int, default=100,
                   help="--directions / --during-training: meta-training iterations")
    g.add_argument("--seeds", type=int, default=3, help="--directions: seeds per formulation")
    g.add_argument("--during-training", type=int, default=0, metavar="N",
                   help="meta-train --algo on --env, logging gradient statistics every N iterations")
    g.add_argument("--no-progress", action="store_true")


def cmd_gradients(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.progress import Progress

    from adaptrl.experiment.config import build_config, parse_int_list, parse_set

    console = Console(stderr=True)
    overrides = parse_set(args.set)
    if args.tasks is not None:
        overrides["tasks_per_iter"] = args.tasks
    if args.directions:
        from adaptrl.analysis.directions import directions_study

        out = args.out or "gradients-directions"
        with Progress(disable=args.no_progress, transient=True) as bar:
            task = bar.add_task("formulations I and II", total=2 * args.seeds * args.iterations)
            result = directions_study(out, iterations=args.iterations, seeds=args.seeds,
                                      overrides=overrides or None, progress=lambda: bar.advance(task))
        for row in result.rows:
            console.print(f"formulation {row['formulation']} seed {row['seed']}: post-update return "
                          f"{row['final_post_update_return']:.3f}, "
                          f"θ = ({row['theta0']:.3f}, {row['theta1']:.3f}), "
                          f"direction spread {row['direction_spread_rad']:.2f} rad")
        console.print(f"wrote {result.csv_path} and {result.figure_path}")
        return
    if args.during_training:
        from pathlib import Path

        from adaptrl.experiment.trainer import train

        overrides.update(grad_stats_every=args.during_training, grad_stats_batches=args.batches,
                         iterations=args.iterations, seed=args.seed)
        config = build_config(args.algo, args.env, preset=args.preset, overrides=overrides)
        run_dir = Path(args.out or f"runs/{config.algo}-{config.env}-gradstats-seed{config.seed}")
        train(config, run_dir, show_progress=not args.no_progress)
        console.print(f"wrote {run_dir}/progress.csv (Meta-GradientRStd every "
                      f"{args.during_training} iterations)")
        return
    from adaptrl.analysis.gradients import gradient_study

    overrides["seed"] = args.seed
    base = build_config(args.algo, args.env, preset=args.preset, overrides=overrides)
    policy_params = None
    if args.checkpoint:
        from adaptrl.experiment.trainer import load_run

        run_config, state, _ = load_run(args.checkpoint)
        if (run_config.env, tuple(run_config.hidden_sizes), run_config.policy) != \
                (base.env, tuple(base.hidden_sizes), base.policy):
            raise ConfigError(f"{args.checkpoint} trained {run_config.policy} {run_config.hidden_sizes} "
                              f"on {run_config.env}; the study uses {base.policy} {base.hidden_sizes} on "
                              f"{base.env}. Pass the same --env and --set hidden_sizes=….")
        policy_params = state.meta_params["policy"]
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    sizes = parse_int_list(args.batch_sizes, "--batch-sizes")
    warmup = args.cv_warmup if any(e in ("dice-cv", "dice-cv-paper") for e in estimators) else 0
    per_point = args.batches + warmup
    total = len(estimators) * len(sizes) * per_point + (args.truth_batches if args.truth_rollouts else 0)
    with Progress(disable=args.no_progress, transient=True) as bar:
        task = bar.add_task("meta-gradients", total=total)
        result = gradient_study(
            base, estimators, sizes, num_batches=args.batches, out=args.out or f"gradients-{base.env}",
            policy_params=policy_params,
            truth_estimator=args.truth_estimator if args.truth_rollouts else None,
            truth_rollouts=args.truth_rollouts, truth_batches=args.truth_batches, cv_warmup=args.cv_warmup,
            seed=args.seed, progress=lambda name, n: bar.advance(task, n))
    from rich.table import Table

    table = Table(title=f"{base.env}: {args.batches} batches per point, {base.tasks_per_iter} tasks")
    with_cv = any(math.isfinite(r["cv_explained_variance"]) for r in result.rows)
    cols = ["estimator", "batch_size", "rsd", "rsd_se", "rsd_coordinate", "cos_to_mean"] + \
        (["pearson", "cos_truth"] if result.truth else []) + (["cv_explained_variance"] if with_cv else [])
    for col in cols:
        table.add_column(col, justify="right")
    for row in result.rows:
        table.add_row(*[f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols])
    Console().print(table)
    console.print(f"wrote {result.csv_path} and {result.figure_path}")


def cmd_train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rich.console import Console

    from adaptrl.experiment.config import build_config, parse_set
    from adaptrl.experiment.trainer import load_run_config, train

    console = Console(stderr=True)
    if args.resume:
        if args.algo or args.env or args.set or args.seed is not None or args.out:
            raise ConfigError("--resume continues a run with its own config.yaml; give only "
                              "--resume RUN_DIR (and optionally --iterations).")
        config = load_run_config(args.resume)
        if args.iterations is not None:
            import dataclasses

            config = dataclasses.replace(config, iterations=int(args.iterations))
        run_dir = Path(args.resume)
    else:
        if not args.algo or not args.env:
            raise ConfigError("train needs ALGO and --env (or --resume RUN_DIR); see adaptrl train --help.")
        overrides = parse_set(args.set)
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.iterations is not None:
            overrides["iterations"] = args.iterations
        config = build_config(args.algo, args.env, preset=args.preset, overrides=overrides)
        run_dir = Path(args.out or f"runs/{config.algo}-{config.env}-seed{config.seed}")
    console.print(f"[bold]{config.algo}[/bold] on {config.env}: {config.tasks_per_iter} tasks × "
                  f"{config.rollouts_per_task} rollouts × {config.horizon} steps, K = {config.inner_steps}"
                  f" → {run_dir}")
    result = train(config, run_dir, resume=bool(args.resume), show_progress=not args.no_progress)
    if result.interrupted:
        console.print(f"interrupted: checkpoint written; continue with adaptrl train --resume {run_dir}")
        raise KeyboardInterrupt
    last = result.rows[-1] if result.rows else {}
    k = config.inner_steps
    if last:
        console.print(f"done: itr {int(last['Itr'])}, pre-update return {last['Step_0-AverageReturn']:.2f}, "
                      f"post-update return {last[f'Step_{k}-AverageReturn']:.2f}; results in {run_dir}")


def cmd_eval(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from adaptrl.experiment.trainer import evaluate, write_eval

    report = evaluate(args.run_dir, tasks=args.tasks, adapt_steps=args.adapt_steps,
                      rollouts=args.rollouts, seed=args.seed)
    path = write_eval(args.run_dir, report)
    report.pop("result")
    if args.json:
        print(json.dumps(report))
        return
    table = Table(title=f"{args.run_dir} (iteration {report['iteration']}): {report['tasks']} fresh tasks")
    for col in ("step", "mean return", "95% CI", "std across tasks"):
        table.add_column(col, justify="right")
    for row in report["rows"]:
        table.add_row(str(row["step"]), f"{row['mean_return']:.2f}",
                      f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]", f"{row['std_across_tasks']:.2f}")
    console = Console()
    console.print(table)
    console.print(f"wrote {path}")


def cmd_plot(args: argparse.Namespace) -> None:
    from adaptrl.plots import plot_runs

    path = plot_runs(args.run_dirs, keys=args.key, out=args.out, x_key=args.x)
    print(f"wrote {path}")


def cmd_envs(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from adaptrl.envs import ALIASES, family_names, make
    from adaptrl.envs.mujoco_families import FAMILIES as MUJOCO_FAMILIES

    rows = []
    for name in family_names():
        env = make(name, **({"num_threads": 1} if name in MUJOCO_FAMILIES else {}))
        spec = env.spec
        aliases = [a for a, target in ALIASES.items() if target == name]
        rows.append({
            "name": name, "aliases": aliases, "obs_dim": spec.obs_dim, "act_dim": spec.act_dim,
            "horizon": spec.horizon, "dt": spec.dt, "backend": spec.backend,
            "tasks": spec.task_description, "paper": spec.paper,
            "deviations": list(spec.deviations),
        })
        env.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="adaptrl task families  (make(NAME) · gymnasium.make('adaptrl/NAME-v0'))")
    for col in ("family", "obs", "act", "horizon", "backend", "task distribution", "paper"):
        table.add_column(col, overflow="fold")
    for r in rows:
        name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
        table.add_row(name, str(r["obs_dim"]), str(r["act_dim"]), str(r["horizon"]), r["backend"],
                      r["tasks"], r["paper"])
    console = Console()
    console.print(table)
    if args.details:
        for r in rows:
            if r["deviations"]:
                console.print(f"[bold]{r['name']}[/bold] deviations from the original code:")
                for d in r["deviations"]:
                    console.print(f"  - {d}")


def cmd_sample(args: argparse.Namespace) -> None:
    import os

    import jax
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from adaptrl.envs import make
    from adaptrl.plots import plot_task_returns
    from adaptrl.policies import init_params, make_policy, per_task
    from adaptrl.sampling import Sampler

    env = make(args.env)
    policy = make_policy(env.spec.act_dim)
    sampler = Sampler(env, policy, args.rollouts, args.horizon)
    key_init, key_sample = jax.random.split(jax.random.PRNGKey(args.seed))
    tasks = env.sample_tasks(args.tasks, args.seed)
    params = per_task(init_params(policy, key_init, env.spec.obs_dim), args.tasks)
    console = Console()
    with console.status(f"sampling {args.tasks}×{args.rollouts} trajectories of {env.spec.name}"):
        traj = sampler.collect(params, tasks, key_sample)
    returns = traj.returns()
    table = Table(title=f"{env.spec.name}: random-policy returns per task")
    table.add_column("task")
    for k in tasks:
        table.add_column(k)
    for col in ("mean return", "std", "mean length"):
        table.add_column(col, justify="right")
    lengths = traj.mask.sum(-1)
    labels = []
    for i in range(args.tasks):
        desc = [_describe(np.asarray(v[i])) for v in tasks.values()]
        labels.append(", ".join(desc))
        table.add_row(str(i), *desc, f"{returns[i].mean():.2f}", f"{returns[i].std():.2f}",
                      f"{lengths[i].mean():.1f}")
    console.print(table)
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "returns.csv")
    with open(csv_path, "w") as f:
        f.write("task,rollout,return,length\n")
        for i in range(args.tasks):
            for j in range(args.rollouts):
                f.write(f"{i},{j},{returns[i, j]:.6f},{int(lengths[i, j])}\n")
    png_path = plot_task_returns(returns, labels, env.spec.name, os.path.join(args.out, "returns.png"))
    console.print(f"{traj.num_env_steps} env steps · wrote {csv_path} and {png_path}")
    env.close()


def _describe(value) -> str:
    """Short text of a task entry: ``-1``, ``(0.31, -0.95)``, or ``[6 values]``."""
    if value.ndim == 0:
        return f"{float(value):.3g}"
    if value.size <= 3:
        return "(" + ", ".join(f"{float(x):.3g}" for x in value.ravel()) + ")"
    return f"[{value.size} values]"


def cmd_bench_sampler(args: argparse.Namespace) -> None:
    from rich.console import Console

    from adaptrl.bench import sampler_benchmark

    console = Console(stderr=True)
    if args.json:
        result = sampler_benchmark(args.env, args.tasks, args.rollouts, args.horizon,
                                   repeats=args.repeats, threads=args.threads,
                                   gymnasium_steps=args.gymnasium, seed=args.seed)
        print(json.dumps(result))
        return
    with console.status("benchmarking") as status:
        result = sampler_benchmark(args.env, args.tasks, args.rollouts, args.horizon,
                                   repeats=args.repeats, threads=args.threads,
                                   gymnasium_steps=args.gymnasium, seed=args.seed,
                                   progress=lambda msg: status.update(msg))
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adaptrl`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.verb == "train":
            cmd_train(args)
        elif args.verb == "eval":
            cmd_eval(args)
        elif args.verb == "plot":
            cmd_plot(args)
        elif args.verb == "envs":
            cmd_envs(args)
        elif args.verb == "sample":
            cmd_sample(args)
        elif args.verb == "bench" and args.bench == "sampler":
            cmd_bench_sampler(args)
        elif args.verb == "gradients":
            cmd_gradients(args)
        elif args.verb == "reproduce":
            from adaptrl.experiment.reproduce import cmd_reproduce

            cmd_reproduce(args)
    except AdaptrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
