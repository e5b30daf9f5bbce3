"""`gpubatch`: run a manifest locally or on the cluster, check the GPU, generate the CRDs.

    gpubatch run FILE.yaml [--mount CLAIM=DIR] [--device auto|gpu|cpu] [--shard i/N] [--workers N]
    gpubatch submit FILE.yaml [-n NS] [--context CTX] [--wait|--no-wait] [--follow] [--dry-run]
    gpubatch get [NAME] | logs NAME [-f] | delete NAME       (gpubatch_jobs/cluster_cli.py)
    gpubatch doctor [--json] [--require-gpu]
    gpubatch crds [--check] [--dir DIR]

`run` prints a progress bar on stderr and the summary JSON (the same object
the operator stores in `status.result`) as the last line of stdout. On SIGTERM
it behaves as a pod does (gpubatch_jobs.preempt): the work in flight is
finished and saved, the summary says `reason: Terminated` with the checkpoint,
and the exit code is 143; running the manifest again resumes from there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpubatch_jobs.contract import ENV_WORKER_HOSTS, instruction_for_policy
from gpubatch_jobs.errors import EXIT_BAD_INPUT
from gpubatch_jobs.kinds import KINDS, find
from gpubatch_jobs.runtime import (
    RunContext,
    close_progress_line,
    stderr_progress_bar,
    write_text_atomic,
)
from gpubatch_jobs.spec import SpecError, load_manifest


def _mount(text: str) -> tuple[str, Path]:
    claim, sep, folder = text.partition("=")
    if not sep or not claim or not folder:
        raise argparse.ArgumentTypeError(f"--mount {text!r}: expected CLAIM=DIR, e.g. --mount data=./data")
    return claim, Path(folder).expanduser().resolve()


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/N with 0 <= i < N, e.g. --shard 0/4")
    return i, n


def fail_before_run(kind: str | None, message: str, reason: str = "BadSpec", code: int = EXIT_BAD_INPUT,
                    extra: dict[str, object] | None = None) -> int:
    """A failure outside the engine's own reporting: the error on stderr, the summary JSON last on stdout."""
    close_progress_line()
    print(f"error: {message}", file=sys.stderr)
    summary = {"kind": kind, "ok": False, "reason": reason, "message": message, "exitCode": code, **(extra or {})}
    print(json.dumps(summary, sort_keys=True), flush=True)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from gpubatch_jobs.execute import execute

    try:
        resource = load_manifest(args.file)
    except SpecError as err:
        return fail_before_run(err.kind, str(err))
    kind = resource.kind  # type: ignore[attr-defined]
    plugin = find(kind)
    spec = resource.spec  # type: ignore[attr-defined]
    group = plugin.worker_group
    if args.workers is not None:
        if group is None:
            with_group = [p.kind for p in KINDS.values() if p.worker_group is not None]
            return fail_before_run(kind, f"--workers applies to a kind with a worker group "
                                   f"({', '.join(with_group)}), not a {kind}")
        from gpubatch_jobs.spec import parse_spec

        try:
            spec = parse_spec(kind, {**spec.model_dump(by_alias=True, mode="json", exclude_unset=True),
                                     group.field: args.workers}, source=f"{args.file} with --workers {args.workers}")
        except SpecError as err:
            return fail_before_run(kind, str(err))
    if plugin.group_size(spec) > 1 and not os.environ.get(ENV_WORKER_HOSTS):
        # The group's supervisor: N worker processes of this same command (gpubatch_jobs/workers.py).
        from gpubatch_jobs.workers import run_group

        argv = [args.file, *(f"--mount={claim}={folder}" for claim, folder in (args.mount or [])),
                *(["--base-dir", args.base_dir] if args.base_dir else [])]
        return run_group(kind, argv, spec, plugin.group_size(spec), args.device, args.quiet, args.progress_file)
    ctx = RunContext(
        name=resource.metadata.name,
        base_dir=Path(args.base_dir).resolve() if args.base_dir else Path(args.file).resolve().parent,
        mounts=dict(args.mount or []),
        # The one place `gpubatch run` turns a policy (--device, else the spec's) into an instruction.
        instruction=instruction_for_policy(args.device or str(spec.device.policy)),
        progress_sinks=([] if args.quiet else [stderr_progress_bar])
        + ([progress_file(Path(args.progress_file))] if args.progress_file else []),
        progress_interval_s=0.5,
    )
    if args.shard is not None:
        index, count = args.shard
        if plugin.shards is None:
            return fail_before_run(kind, f"--shard {index}/{count}: a {kind} is not sharded; --shard applies to "
                                   f"a kind with shards ({', '.join(p.kind for p in KINDS.values() if p.shards)})")
        if count != plugin.shards.count(spec):
            return fail_before_run(kind, f"--shard {index}/{count}: the manifest's spec.{plugin.shards.field} is "
                                   f"{plugin.shards.count(spec)}; --shard i/N takes N equal to it")
        ctx.shard_index = index
    from gpubatch_jobs import preempt
    from gpubatch_jobs.contract import EXIT_TERMINATED
    from gpubatch_jobs.entrypoint import terminated_summary

    preempt.install()
    try:
        return execute(kind, spec, ctx, termination_log=False)
    except preempt.Terminated as err:
        summary = terminated_summary(kind, err)
        return fail_before_run(kind, str(summary["message"]), "Terminated", EXIT_TERMINATED,
                               extra={k: v for k, v in summary.items() if k == "checkpoint"})
    except KeyboardInterrupt:
        return fail_before_run(kind, "interrupted (Ctrl-C); outputs are published only when complete, "
                               "so nothing partial is left under the output name", "Interrupted", 130)
    except Exception as err:  # raised outside execute's own handling (it reports engine errors itself)
        traceback.print_exc()
        return fail_before_run(kind, f"unexpected error (exit 2, retried up to backoffLimit): "
                               f"{type(err).__name__}: {err}", "UnexpectedError", 2)


def progress_file(path: Path) -> Callable[[dict[str, Any]], None]:
    """A progress sink that keeps the latest event as JSON in `path` (for Client(local=True))."""
    def sink(event: dict[str, Any]) -> None:
        write_text_atomic(path, json.dumps(event))

    return sink


def cmd_doctor(args: argparse.Namespace) -> int:
    from gpubatch_jobs.devices.doctor import run_doctor

    return run_doctor(as_json=args.json, require_gpu=args.require_gpu, policy=args.policy)


def cmd_crds(args: argparse.Namespace) -> int:
    from gpubatch_jobs import crds

    directory = Path(args.dir)
    if args.check:
        stale = crds.check_crds(directory)
        if stale:
            print("CRD YAML differs from the models (run `gpubatch crds` and commit):", file=sys.stderr)
            for path in stale:
                print(f"  {path}", file=sys.stderr)
            return 1
        print(f"CRDs in {directory} match the models")
        return 0
    for written in crds.write_crds(directory):
        print(f"wrote {written}")
    return 0


def build_parser(prog: str = "gpubatch") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="GPU batch work: run locally or on the cluster, "
                                     "check the GPU, make CRDs.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and TensorFlow's own start-up lines on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a TrainJob, PredictJob or RenderJob manifest here")
    run.add_argument("file", help="manifest YAML")
    run.add_argument("--mount", action="append", type=_mount, metavar="CLAIM=DIR",
                     help="map pvc://CLAIM/... to a local folder (repeatable)")
    run.add_argument("--device", choices=["auto", "gpu", "cpu"], help="override spec.device.policy")
    run.add_argument("--shard", type=_shard, metavar="i/N", help="RenderJob: render only shard i of N")
    run.add_argument("--workers", type=int, metavar="N",
                     help="TrainJob: train with N local worker processes (overrides spec.workers)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.add_argument("--base-dir", metavar="DIR",
                     help="folder that relative paths in the manifest are relative to (default: the manifest's)")
    run.add_argument("--progress-file", metavar="FILE", help="keep the latest progress event as JSON in FILE")
    run.set_defaults(func=cmd_run)

    from gpubatch_jobs.cluster_cli import add_commands

    add_commands(sub)

    doctor = sub.add_parser("doctor", help="what the device layer sees: GPUs, drivers, frameworks")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--require-gpu", action="store_true", help="exit 75 unless a GPU is usable")
    doctor.add_argument("--policy", choices=["auto", "gpu", "cpu"], default=None,
                        help="the policy to check (default: the instruction the operator gave this pod, else auto)")
    doctor.set_defaults(func=cmd_doctor)

    crd = sub.add_parser("crds", help="write (or --check) charts/gpubatch/crds from the models")
    crd.add_argument("--check", action="store_true", help="exit 1 if the committed YAML is stale")
    crd.add_argument("--dir", default="charts/gpubatch/crds", help="folder of the CRD YAML")
    crd.set_defaults(func=cmd_crds)
    return parser


def kubectl_main() -> int:
    """`kubectl-gpubatch`: the same commands as a kubectl plugin (`kubectl gpubatch get`)."""
    return main(prog="kubectl gpubatch")


def main(argv: list[str] | None = None, prog: str = "gpubatch") -> int:
    """The `gpubatch` command. Called with no argv (as the process's entry point), `run` ends the
    process itself once its summary is out; called with argv (tests, other code), it returns."""
    args = build_parser(prog).parse_args(argv)
    code = _main(args)
    if argv is None and args.command == "run":
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    from gpubatch_jobs.shutdown import exit_now

    exit_now(code)


def _main(args: argparse.Namespace) -> int:
    if args.verbose:
        os.environ["GPUBATCH_VERBOSE"] = "1"  # keep TensorFlow's start-up lines (gpubatch_jobs.quiet)
    else:
        # TensorFlow's C++ INFO/WARNING lines (oneDNN notices etc.) drown the progress bar.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
