"""`gpubatch-job KIND`: the command the operator runs in every job pod.

The operator hands the validated spec as JSON in `GPUBATCH_SPEC` (or a file
named by `GPUBATCH_SPEC_FILE`), the effective device in `GPUBATCH_DEVICE`, and
the pod's identity through the downward API (`POD_NAME`, `POD_NAMESPACE`).
Claims named by `pvc://` paths are mounted under /mnt/pvc/<claim>.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from gpubatch_jobs.errors import EXIT_BAD_INPUT
from gpubatch_jobs.execute import execute
from gpubatch_jobs.podreport import PodAnnotationProgress, write_termination_log
from gpubatch_jobs.runtime import POD_PVC_ROOT, RunContext
from gpubatch_jobs.spec import SpecError, kind_for, parse_spec


def _read_spec() -> str:
    if os.environ.get("GPUBATCH_SPEC"):
        return os.environ["GPUBATCH_SPEC"]
    spec_file = os.environ.get("GPUBATCH_SPEC_FILE")
    if spec_file:
        return Path(spec_file).read_text()
    raise SpecError("environment", ["GPUBATCH_SPEC: not set; the operator passes the spec as JSON here"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpubatch-job", description=__doc__.splitlines()[0])
    parser.add_argument("kind", help="render, train or predict (RenderJob, TrainJob, PredictJob)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("GPUBATCH_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    try:
        kind = kind_for(args.kind).__name__
        spec = parse_spec(kind, _read_spec())
    except (KeyError, SpecError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) else str(err)
        print(f"error: {message}", file=sys.stderr)
        write_termination_log({"ok": False, "reason": "BadSpec", "message": message, "exitCode": EXIT_BAD_INPUT})
        return EXIT_BAD_INPUT
    index = os.environ.get("JOB_COMPLETION_INDEX")
    ctx = RunContext(
        name=os.environ.get("GPUBATCH_NAME", kind.lower()),
        base_dir=Path.cwd(),
        pvc_root=Path(os.environ.get("GPUBATCH_PVC_ROOT", POD_PVC_ROOT)),
        device_override=os.environ.get("GPUBATCH_DEVICE") or None,
        shard_index=int(index) if index is not None else None,
    )
    reporter = PodAnnotationProgress.from_environment()
    if reporter is not None:
        ctx.progress_sinks.append(reporter)
    ctx.progress_sinks.append(lambda event: logging.getLogger("gpubatch").info("progress %s", event))
    return execute(kind, spec, ctx, termination_log=True)


if __name__ == "__main__":
    sys.exit(main())
