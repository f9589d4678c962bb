"""Command line: `python -m pipeline train|sweep ...` (parses, then calls the library)."""

import argparse
import os
import re
import sys
from pathlib import Path

from pipeline.core import interrupts, tool_homes
from pipeline.core.backend import BACKENDS, select_backend
from pipeline.core.errors import UserError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # the repository's


def _whole(minimum):
    """An argparse type: a whole number >= `minimum` (argparse names the option)."""
    def parse(text):
        # Matched rather than parsed inside a ValueError handler: the CLI has none (a
        # ValueError from a bug keeps its traceback).
        value = int(text) if re.fullmatch(r"\s*[+-]?\d+\s*", text) else None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; use a whole number >= {minimum}")
        return value
    return parse


def _jobs(text):
    if text == "auto":
        return text
    try:
        return _whole(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; use auto or a whole number >= 1")


def _jobs_list(text):
    """'1,2' -> [1, 2]: each a whole number >= 1."""
    try:
        return [_whole(1)(item) for item in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; use whole numbers >= 1 separated by commas, e.g. 1,2")


def _parser():
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: KERAS_BACKEND, else jax on a TPU host "
                             "and tensorflow otherwise); recorded in each run's meta.json")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and XLA's start-up logging (hidden by default)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run (resumes if the workdir has one)")
    train.add_argument("config", help="YAML config file")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set optim.lr=0.5 (repeatable)")
    train.add_argument("--workdir", help="run directory (default: runs/<config name>; for a "
                       "model.factory, runs/<factory>-<norm>)")

    sweep = commands.add_parser("sweep", help="a grid of runs x seeds, resumable")
    sweep.add_argument("config", nargs="?", help="YAML config file (or give --plan)")
    sweep.add_argument("--plan", metavar="FILE",
                       help="instead of a config and its grid: a YAML file listing several "
                            "sweeps, run as one queue (e.g. configs/demo_plan.yaml)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="values of one key to sweep, e.g. --grid model.norm=none,batch")
    sweep.add_argument("--seeds", type=_whole(1), default=1, help="seeds 0..N-1 per combination")
    sweep.add_argument("--seed-offset", type=_whole(0), default=0, metavar="N",
                       help="add N to every seed (of --seeds, --grid seed=, or a plan): the "
                            "same sweep on a disjoint seed set, e.g. to confirm the claims")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override for every run")
    sweep.add_argument("--sweep-dir", help="parent folder of the runs (default: runs/<config name>)")
    sweep.add_argument("--list", action="store_true",
                       help="print the runs as shell commands instead of running them")
    sweep.add_argument("--jobs", type=_jobs, default="auto", metavar="N",
                       help="runs at once on this machine (default auto: one per GPU, or the "
                            "CPU cores divided by train.threads, 1 per run by default)")
    sweep.add_argument("--executor", choices=("local", "slurm", "submitit_local"),
                       default="local", help="where the runs go: local processes (default), a "
                       "Slurm job array through submitit, or submitit's local executor")
    slurm = sweep.add_argument_group("Slurm (--executor slurm)")
    slurm.add_argument("--partition", help="Slurm partition")
    slurm.add_argument("--time", type=_whole(1), default=60, metavar="MINUTES",
                       help="time limit per run (default: %(default)s)")
    slurm.add_argument("--gpus-per-run", type=_whole(0), default=None, metavar="N",
                       help="GPUs per run (local default 1 where there are GPUs; Slurm 0)")
    slurm.add_argument("--cpus-per-run", type=_whole(1), metavar="N",
                       help="CPUs per array task (default: the runs' train.threads)")
    slurm.add_argument("--array-parallelism", type=_whole(1), default=64, metavar="N",
                       help="array tasks running at once (default: %(default)s)")
    slurm.add_argument("--log-dir", help="submitit's log folder, on storage the nodes share "
                       "(default: <sweep dir>/slurm)")
    figures = commands.add_parser("figures", help="execute the notebooks on runs, build the report")
    figures.add_argument("runs", nargs="+", help="run directories or sweep folders")
    figures.add_argument("--output", default="reports", help="output folder (default: reports)")
    figures.add_argument("--notebooks", nargs="*", help="subset of notebooks to execute")

    claims = commands.add_parser("claims", help="the paper's claims as verdicts over runs")
    claims.add_argument("runs", nargs="+", help="run directories or sweep folders")
    claims.add_argument("--json", action="store_true", help="print the table as JSON")

    commands.add_parser("worker", help="used by sweep: train the runs it sends on stdin in "
                        "one process, which starts the frameworks once (pipeline.sweeps.worker)")

    bench = commands.add_parser(
        "bench", help="speed of the training loop against a bare loop and of the input "
                      "pipeline, per norm; probe cost in training steps")
    # The repository's, wherever the command is run from.
    bench.add_argument("config", nargs="?", default=str(CONFIGS / "cpu.yaml"),
                       help="config to measure (default: the repository's configs/cpu.yaml)")
    bench.add_argument("--norms", default="none,batch,noisy_batch",
                       help="comma-separated model.norm values to compare (default: %(default)s)")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    bench.add_argument("--whole-steps", type=_whole(1), default=None, metavar="N",
                       help="steps of each whole-loop run (default: 200 for VGG, 3000 for the DLN)")
    bench.add_argument("--sweep-jobs", type=_jobs_list, metavar="J1,J2,...",
                       help="instead: the wall time of a 4-run sweep of the config with each "
                            "--jobs value (e.g. 1,2)")
    return parser


def main(argv=None):
    interrupts.install()  # SIGTERM unwinds like Ctrl-C, from the first instant on
    tool_homes.confine()  # before Keras, Matplotlib or IPython write into the user's home
    try:
        os.getcwd()  # every relative path given resolves against it
    except FileNotFoundError:
        print("error: the working folder no longer exists (deleted or moved while the shell "
              "was in it); cd to an existing folder and rerun the command", file=sys.stderr)
        return 1
    args = None
    try:
        interrupts.die_with_parent()
        args = _parser().parse_args(argv)
        select_backend(args.backend)  # before anything imports Keras
        code = _run(args)
        sys.stdout.flush()  # here, where a reader that has gone (| head) is a normal end
        return code
    except UserError as error:  # every expected failure (pipeline.core.errors)
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # the reader stopped reading (| head): a normal end
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to say
        return 0
    except OSError as error:  # a full disk, no permission, a path that is a file
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}; {_advice(error)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, interrupts.Terminated) as error:
        # Only training has checkpoints to resume from; the other commands start over.
        trains = args is not None and args.command in ("train", "sweep")
        print(f"interrupted ({interrupts.describe(error)}): what was written is intact; rerun "
              "the same command" + (" to resume from the last checkpoint" if trains else ""),
              file=sys.stderr)
        return interrupts.exit_code(error)


def _run(args):
    from pipeline.core.backend import start_frameworks
    from pipeline.core.console import verbose_requested
    verbose = verbose_requested(args.verbose)
    if args.command == "train":
        from pipeline.core.config import load_config
        from pipeline.core.runs import default_workdir, refuse_if_busy
        # Before the frameworks' imports, which take seconds (the config is checked too).
        refuse_if_busy(args.workdir or default_workdir(args.config,
                                                       load_config(args.config, args.set)))
    if args.command in FRAMEWORK_COMMANDS:
        start_frameworks(verbose)
    return COMMANDS[args.command](args, verbose)


def _train(args, verbose):
    from pipeline.training.train import train_from_file
    meta = train_from_file(args.config, args.set, args.workdir, echo=print)
    print(f"{meta.status}: step {meta.step} of {meta.steps}")
    return 0 if meta.done else 1


def _figures(args, verbose):
    from pipeline.results.report import NOTEBOOKS, make_figures
    # Resolved once, here: the notebooks run with the repository as their working
    # folder, so a relative path would mean another place there than here.
    runs = [Path(path).resolve() for path in args.runs]
    path = make_figures(runs, Path(args.output).resolve(), args.notebooks or NOTEBOOKS)
    print(f"report: {path.resolve()}")
    return 0


def _claims(args, verbose):
    from pipeline.results.analysis import load_runs
    from pipeline.results.claims import claims_table
    from pipeline.results.claims_format import (format_answer, format_claims,
                                                format_other_networks, to_json)
    runs = load_runs([Path(path).resolve() for path in args.runs])
    rows = claims_table(runs)
    others = format_other_networks(runs)
    print(to_json(rows) if args.json else f"{format_answer(rows)}\n\n{format_claims(rows)}"
          + (f"\n\n{others}" if others else ""))
    return 0


def _bench(args, verbose):
    if args.sweep_jobs:
        from pipeline.speed.sweep_bench import format_sweep_speeds
        print(format_sweep_speeds(args.config, args.sweep_jobs, args.set))
        return 0
    from pipeline.speed import bench
    print(bench.run_benchmarks(args.config, args.norms.split(","), args.set, args.whole_steps,
                               echo=lambda line: print(line, file=sys.stderr, flush=True)))
    return 0


def _sweep(args, verbose):
    from pipeline.sweeps import sweep
    from pipeline.core.config import ConfigError
    if bool(args.plan) == bool(args.config):
        raise ConfigError("give either a config file (with --grid, --seeds, --set) or --plan FILE")
    if args.plan and (args.grid or args.set or args.seeds != 1):
        raise ConfigError(f"--plan {args.plan}: write the grid, seeds and overrides in the "
                          "plan's sweeps, not on the command line")
    sweep_dir = sweep.sweep_folder(args.plan or args.config, args.sweep_dir)
    if args.plan:
        runs = sweep.plan_file(args.plan, sweep_dir, args.seed_offset)
    else:
        runs = sweep.plan_sweep(args.config, args.grid, args.seeds, sweep_dir, args.set,
                                seed_offset=args.seed_offset)
    if args.list:
        print(sweep.list_commands(runs))
        return 0
    if args.executor != "local" and args.jobs != "auto":
        raise ConfigError(f"--jobs {args.jobs} sets how many runs the local executor trains "
                          f"at once; --executor {args.executor} runs a job array (Slurm: "
                          "--array-parallelism tasks at once; submitit_local: every task at "
                          "once): leave --jobs out")
    if args.executor == "local":
        from pipeline.sweeps.launch import run_local
        rows = run_local(runs, args.jobs, args.gpus_per_run or 1, verbose)
    else:
        from pipeline.sweeps.slurm import SlurmOptions, submit
        options = SlurmOptions(args.partition, args.time, args.gpus_per_run or 0,
                               args.cpus_per_run, args.array_parallelism, args.log_dir)
        rows = submit(runs, sweep_dir, args.executor, options, verbose)
    print(sweep.format_table(rows))
    failures = sweep.format_failures(runs, rows)
    if failures:
        print(failures)
    if not sweep.succeeded(rows):
        print("error: some runs did not finish (see status and error above); rerun the "
              "same command to resume them", file=sys.stderr)
        return 1
    return 0


def _worker(args, verbose):
    from pipeline.training.worker import serve
    return serve(main)


# Subcommand -> function(args, verbose) -> exit code.
COMMANDS = {"train": _train, "sweep": _sweep, "claims": _claims, "figures": _figures,
            "bench": _bench, "worker": _worker}
# The commands that compute, and so start TensorFlow (tf.data) and the chosen backend.
# The others read records, plan runs or start processes: importing a framework would
# cost them seconds for nothing (tests/test_imports.py).
FRAMEWORK_COMMANDS = ("train", "bench", "worker")


def _advice(error):
    """What to do about an operating-system error while writing runs or reports."""
    import errno
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space on that disk, then rerun the same command to resume"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make it writable, or choose another --workdir / --output"
    if error.errno == errno.ENOTDIR:
        return "a part of that path is a file where a folder is needed; choose another path"
    if error.errno == errno.EISDIR:
        return "that path is a folder where a file is needed; choose another path"
    if error.errno == errno.EEXIST:
        return "a file (or something else) is already at that path where a folder goes; choose another path"
    return "fix the file or folder named, then rerun the same command"


if __name__ == "__main__":
    import shutil
    from pipeline.core.scratch import own_scratch_folder
    temporary = own_scratch_folder()  # the process's temporary folder, removed at its end
    try:
        code = main()
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    # Everything a command writes is closed (and synced) by now. Skip the interpreter's
    # teardown of the frameworks: in a 45-run demo sweep, 6 train processes lingered
    # 11-42 s in it after their last line, holding a core slot of the sweep.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
