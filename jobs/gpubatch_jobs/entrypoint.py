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

SIGTERM (the pod deleted, evicted or preempted) stops the engine at once:
the engine runs as PID 1, which the kernel spares the default action of
SIGTERM, so without a handler the pod would run on until the grace period
ends and be killed mid-write. The handler raises through the engine, whose
`with` blocks close the partial output consistently; the pod ends with 143
and the Job's next pod resumes from what was written.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from gpubatch_jobs import contract
from gpubatch_jobs.contract import EXIT_BAD_INPUT, EXIT_TERMINATED, ContractError, DeviceInstruction


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, so that no `except Exception` in an engine swallows it."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated(signum)


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
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args.kind)
    except Terminated:
        from gpubatch_jobs.podreport import write_termination_log

        message = "stopped by SIGTERM (pod deleted, evicted or preempted); the next pod resumes from what was written"
        print(f"error: {message}", file=sys.stderr)
        write_termination_log({"ok": False, "reason": "Terminated", "message": message,
                               "exitCode": EXIT_TERMINATED})
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


def _run(kind_word: str) -> int:
    from gpubatch_jobs.execute import execute
    from gpubatch_jobs.podreport import PodAnnotationProgress, write_termination_log
    from gpubatch_jobs.runtime import RunContext
    from gpubatch_jobs.spec import SpecError, parse_spec

    try:
        kind = contract.kind_info(kind_word).kind
        spec = parse_spec(kind, _read_spec())
        instruction = _instruction()
    except (KeyError, SpecError, ContractError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) else str(err)
        print(f"error: {message}", file=sys.stderr)
        write_termination_log({"ok": False, "reason": "BadSpec", "message": message, "exitCode": EXIT_BAD_INPUT})
        return EXIT_BAD_INPUT
    index = os.environ.get(contract.ENV_COMPLETION_INDEX)
    pvc_root = Path(os.environ.get(contract.ENV_PVC_ROOT, contract.POD_PVC_ROOT))
    from gpubatch_jobs import podlog

    keeper = podlog.current()
    if keeper is not None:
        keeper.keep_beside(str(spec.output.path), pvc_root=pvc_root, base_dir=Path.cwd())
    ctx = RunContext(
        name=os.environ.get(contract.ENV_NAME, kind.lower()),
        base_dir=Path.cwd(),
        pvc_root=pvc_root,
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
