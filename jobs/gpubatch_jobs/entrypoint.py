"""`gpubatch-job KIND`: the command the operator runs in every job pod.

What the pod is handed is the contract's (gpubatch_jobs/contract.py): the
validated spec as JSON in `GPUBATCH_SPEC` (or a file named by
`GPUBATCH_SPEC_FILE`), the device instruction in `GPUBATCH_DEVICE` (gpu|cpu,
decided by the operator) and `GPUBATCH_ON_GPU_FAILURE` (exit|cpu), and the
pod's identity through the downward API (`POD_NAME`, `POD_NAMESPACE`). The
spec's `device.policy` is not read here: the operator has already turned it
into a device. Claims named by `pvc://` paths are mounted under /mnt/pvc/<claim>.

Whatever happens, the pod ends with one of the contract's exit codes: an
error nobody foresaw is exit 2 (retried), never Python's default 1 (which
would read as bad input).

SIGTERM (the pod deleted, evicted or preempted) is handled by
gpubatch_jobs.preempt: the engine runs as PID 1, which the kernel spares the
default action of SIGTERM, so without a handler the pod would run on until
the grace period ends and be killed mid-write. Inside an engine's work loop
the engine finishes the step, chunk or image in flight and saves it (a
TrainJob writes a step-level checkpoint); elsewhere the handler raises at
once through the engine, whose `with` blocks close the partial output
consistently. Either way the pod ends with 143, its termination message names
the checkpoint left, and the Job's next pod resumes from it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from gpubatch_jobs import contract, preempt
from gpubatch_jobs.contract import EXIT_BAD_INPUT, EXIT_TERMINATED, ContractError, DeviceInstruction
from gpubatch_jobs.preempt import Terminated

__all__ = ["Terminated", "main", "terminated_summary"]


def terminated_summary(kind: str | None, err: Terminated) -> dict[str, object]:
    """The summary of a run stopped by SIGTERM: exit 143, and the checkpoint it left (if any)."""
    if err.checkpoint:
        message = ("stopped by SIGTERM (pod deleted, evicted or preempted) after saving a checkpoint of "
                   f"{err.checkpoint.get('epoch')} epochs and {err.checkpoint.get('step')} steps of the next; "
                   "the next pod resumes from it") if "epoch" in err.checkpoint else (
            "stopped by SIGTERM (pod deleted, evicted or preempted) after publishing the work finished so far; "
            "the next pod resumes after it")
    else:
        message = ("stopped by SIGTERM (pod deleted, evicted or preempted); "
                   "the next pod resumes from what was written")
    summary: dict[str, object] = {"kind": kind, "ok": False, "reason": "Terminated", "message": message,
                                  "exitCode": EXIT_TERMINATED}
    if err.checkpoint:
        summary["checkpoint"] = err.checkpoint
    return summary


def _read_spec() -> str:
    from gpubatch_jobs.spec import SpecError

    if os.environ.get(contract.ENV_SPEC):
        return os.environ[contract.ENV_SPEC]
    spec_file = os.environ.get(contract.ENV_SPEC_FILE)
    if spec_file:
        return Path(spec_file).read_text()
    raise SpecError("environment", [f"{contract.ENV_SPEC}: not set; the operator passes the spec as JSON here"])


def _instruction() -> DeviceInstruction:
    instruction = DeviceInstruction.from_env()
    if instruction is None:
        raise ContractError(f"{contract.ENV_DEVICE}: not set; the operator sets gpu or cpu here "
                            f"(to run a manifest by hand, use `gpubatch run`)")
    return instruction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpubatch-job", description=__doc__.splitlines()[0])
    parser.add_argument("kind", help="render, train or predict (RenderJob, TrainJob, PredictJob)")
    args = parser.parse_args(argv)
    from gpubatch_jobs import podlog

    keeper = podlog.start_from_environment()  # in a pod: the log is kept beside the outputs
    try:
        code = _main(args)
    finally:
        if keeper is not None:
            keeper.stop()
    if argv is None:  # the pod's process: end it once the termination log is written
        from gpubatch_jobs.shutdown import exit_now

        exit_now(code)
    return code


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=os.environ.get(contract.ENV_LOG_LEVEL, "INFO"),
                        format="%(asctime)s %(levelname)s %(message)s")
    preempt.install()
    try:
        return _run(args.kind)
    except Terminated as err:
        from gpubatch_jobs.podreport import write_termination_log

        summary = terminated_summary(_kind_name(args.kind), err)
        print(f"error: {summary['message']}", file=sys.stderr)
        write_termination_log(summary)
        return EXIT_TERMINATED
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - before the engine runs: still a contract exit code
        from gpubatch_jobs.execute import unexpected
        from gpubatch_jobs.podreport import write_termination_log

        summary, code = unexpected(args.kind, err, on_gpu=False)
        print(f"error: {summary['message']}", file=sys.stderr)
        write_termination_log(summary)
        return code


def _kind_name(kind_word: str) -> str | None:
    from gpubatch_jobs.kinds import find

    try:
        return find(kind_word).kind
    except KeyError:
        return None


def _run(kind_word: str) -> int:
    from gpubatch_jobs.execute import execute
    from gpubatch_jobs.kinds import find
    from gpubatch_jobs.podreport import PodAnnotationProgress, write_termination_log
    from gpubatch_jobs.runtime import RunContext
    from gpubatch_jobs.spec import SpecError, parse_spec

    try:
        kind = find(kind_word).kind
        spec = parse_spec(kind, _read_spec())
        instruction = _instruction()
    except (KeyError, SpecError, ContractError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) else str(err)
        print(f"error: {message}", file=sys.stderr)
        write_termination_log({"ok": False, "reason": "BadSpec", "message": message, "exitCode": EXIT_BAD_INPUT})
        return EXIT_BAD_INPUT
    index = os.environ.get(contract.ENV_COMPLETION_INDEX)
    pvc_root = Path(os.environ.get(contract.ENV_PVC_ROOT, contract.POD_PVC_ROOT))
    from gpubatch_jobs import podlog, storage

    keeper = podlog.current()
    # Confined like the job itself: a log is kept only on a claim or in a bucket, never at a local path.
    if keeper is not None and storage.is_url(str(spec.output.path)):
        keeper.keep_beside(str(spec.output.path), pvc_root=pvc_root, base_dir=Path.cwd())
    ctx = RunContext(
        name=os.environ.get(contract.ENV_NAME, kind.lower()),
        base_dir=Path.cwd(),
        pvc_root=pvc_root,
        confined=True,  # only pvc:// (under its claim, symlinks followed) and object-store paths
        instruction=instruction,
        shard_index=int(index) if index is not None else None,
    )
    reporter = PodAnnotationProgress.from_environment()
    if reporter is not None:
        ctx.progress_sinks.append(reporter)
    ctx.progress_sinks.append(lambda event: logging.getLogger("gpubatch").info("progress %s", event))
    return execute(kind, spec, ctx, termination_log=True)


if __name__ == "__main__":
    sys.exit(main())
