"""`gpubatch submit | get | logs | delete`: the cluster from a terminal (also `kubectl gpubatch ...`).

    gpubatch submit FILE [-n NS] [--context CTX] [--wait|--no-wait] [--follow] [--dry-run] [--timeout S]
    gpubatch get [NAME] [-o table|json|yaml]
    gpubatch logs NAME [-f] [--stored]
    gpubatch delete NAME

`submit --wait` (the default when a terminal is attached) shows a progress bar
from `status.progress` with the ETA from `status.estimatedRemainingSeconds`,
and ends like `gpubatch run`: the summary JSON (`status.result`) as the last
line of stdout and the same exit code (0 succeeded, 1 bad input, 75 GPU failure
without fallback, else the failure's). Built on gpubatch_jobs.client.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

from gpubatch_jobs.contract import EXIT_BAD_INPUT, EXIT_OK
from gpubatch_jobs.runtime import close_progress_line, format_eta, write_bar

TABLE_COLUMNS = ("NAME", "KIND", "PHASE", "DEVICE", "PROGRESS", "ETA", "AGE", "MESSAGE")


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="namespace (default: the kube context's, as kubectl)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")


def add_commands(sub: Any) -> None:
    submit = sub.add_parser("submit", help="apply a manifest to the cluster and (with --wait) see it through")
    submit.add_argument("file", help="manifest YAML (one TrainJob, PredictJob or RenderJob)")
    add_cluster_options(submit)
    submit.add_argument("--wait", dest="wait", action="store_true", default=None,
                        help="wait for the end: summary JSON and exit code as `gpubatch run` (default on a terminal)")
    submit.add_argument("--no-wait", dest="wait", action="store_false", help="return once created")
    submit.add_argument("-f", "--follow", action="store_true", help="stream the pod's log while waiting")
    submit.add_argument("--dry-run", action="store_true", help="have the API server validate it; create nothing")
    submit.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop waiting after this long (exit 124; the job goes on)")
    submit.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    submit.set_defaults(func=cmd_submit)

    get = sub.add_parser("get", help="list the namespace's jobs (or one) with phase, device, progress, ETA")
    get.add_argument("name", nargs="?", help="NAME, or KIND/NAME (rj/x, trainjob/x)")
    add_cluster_options(get)
    get.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    get.set_defaults(func=cmd_get)

    logs = sub.add_parser("logs", help="the engine's log: from the pod, or the one kept after the pod is gone")
    logs.add_argument("name", help="NAME, or KIND/NAME")
    add_cluster_options(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="stream until the job ends")
    logs.add_argument("--stored", action="store_true",
                      help="read the logs every pod kept beside the outputs (status.logRef), every attempt's")
    logs.add_argument("--reader-image", help="image of the pod that reads a claim's logs (default: the job's CPU "
                      "image, else $GPUBATCH_LOG_READER_IMAGE, else gpubatch/gpubatch-cpu)")
    logs.set_defaults(func=cmd_logs)

    delete = sub.add_parser("delete", help="delete a job (its Jobs and pods go with it; kept logs stay)")
    delete.add_argument("name", help="NAME, or KIND/NAME")
    add_cluster_options(delete)
    delete.add_argument("--wait", action="store_true", help="return once it is gone")
    delete.set_defaults(func=cmd_delete)


def _client(args: argparse.Namespace) -> Any:
    from gpubatch_jobs.client import Client

    return Client(namespace=args.namespace, context=args.context, kubeconfig=args.kubeconfig,
                  reader_image=getattr(args, "reader_image", None))


def _fail(message: str, code: int = EXIT_BAD_INPUT, kind: str | None = None, reason: str = "BadSpec") -> int:
    from gpubatch_jobs.cli import fail_before_run

    return fail_before_run(kind, message, reason, code)


def cmd_submit(args: argparse.Namespace) -> int:
    from gpubatch_jobs.client import GpubatchClientError
    from gpubatch_jobs.spec import SpecError

    try:
        client = _client(args)
        job = client.submit(args.file, dry_run=args.dry_run)
    except SpecError as err:
        return _fail(str(err), kind=err.kind)
    except GpubatchClientError as err:
        return _fail(str(err), err.exit_code, reason="Refused")
    what = f"{job.kind.lower()}.gpubatch.dev/{job.name}"
    if args.dry_run:
        print(f"{what} validated by the API server in namespace {job.namespace} (dry run: nothing created)",
              file=sys.stderr)
        return EXIT_OK
    print(f"{what} created in namespace {job.namespace}", file=sys.stderr)
    wait = args.wait if args.wait is not None else (sys.stdout.isatty() or args.follow)
    if not wait:
        return EXIT_OK
    try:
        return _see_through(job, args)
    except KeyboardInterrupt:
        close_progress_line()
        print(f"\nstopped watching; the job goes on: gpubatch get {job.name} -n {job.namespace}; "
              f"gpubatch logs -f {job.name}; gpubatch delete {job.name}", file=sys.stderr)
        return 130


def _see_through(job: Any, args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    if args.follow:
        for line in job.logs(follow=True):
            sys.stdout.write(line)
            sys.stdout.flush()
            if deadline is not None and time.monotonic() > deadline:
                break
    shown = {"message": ""}

    def show(event: dict[str, Any]) -> None:
        if args.quiet or args.follow:
            return
        if event["phase"] == "Pending":
            if event["message"] != shown["message"]:
                close_progress_line()
                print(f"waiting: {event['message']}", file=sys.stderr)
                shown["message"] = event["message"]
            return
        if event["percent"] is not None:
            write_bar(percent_line(event), event["phase"] in ("Succeeded", "Failed"))

    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        summary = job.wait(left, on_progress=show)
    except TimeoutError as err:
        close_progress_line()
        print(f"error: {err}; the job goes on (gpubatch get {job.name})", file=sys.stderr)
        return 124
    close_progress_line()
    code = job.exit_code
    if code != EXIT_OK:
        print(f"error: {summary.get('message', '')}", file=sys.stderr)
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return int(code if code is not None else EXIT_OK)


def percent_line(event: dict[str, Any]) -> str:
    """`[#########---------------------] 30% Running on gpu 812/s ETA 1m05s` from a status."""
    width, percent = 30, max(0, min(100, int(event["percent"] or 0)))
    filled = width * percent // 100
    rate = f" {event['perSecond']:g}/s" if event.get("perSecond") else ""
    eta = event.get("etaSeconds") if event["phase"] == "Running" else None
    tail = f" ETA {format_eta(eta)}" if eta is not None else ""
    return f"[{'#' * filled}{'-' * (width - filled)}] {percent}% {event['phase']} on {event['device'] or '?'}{rate}{tail}"


def age(created: str | None, now: float | None = None) -> str:
    if not created:
        return ""
    then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    seconds = max(0, int((now or time.time()) - then.timestamp()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def row(obj: dict[str, Any], now: float | None = None) -> tuple[str, ...]:
    status = obj.get("status") or {}
    eta = status.get("estimatedRemainingSeconds") if status.get("phase") == "Running" else None
    return (obj["metadata"]["name"], obj.get("kind", ""), status.get("phase") or "Pending",
            status.get("device") or "", status.get("progress") or "", format_eta(eta),
            age(obj["metadata"].get("creationTimestamp"), now), " ".join((status.get("message") or "").split()))


def table(rows: list[tuple[str, ...]]) -> str:
    all_rows = [TABLE_COLUMNS, *rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(TABLE_COLUMNS) - 1)]
    return "\n".join("   ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
                     for r in all_rows)


def cmd_get(args: argparse.Namespace) -> int:
    from gpubatch_jobs.client import GpubatchClientError

    try:
        client = _client(args)
        objects = [client.get(args.name).object] if args.name else client.list()
    except GpubatchClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if args.output == "json":
        print(json.dumps(objects[0] if args.name else {"items": objects}, indent=2))
    elif args.output == "yaml":
        import yaml

        print(yaml.safe_dump(objects[0] if args.name else {"items": objects}, sort_keys=False), end="")
    elif objects:
        print(table([row(o) for o in objects]))
    else:
        print(f"No gpubatch jobs in namespace {client.namespace}.", file=sys.stderr)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    from gpubatch_jobs.client import GpubatchClientError

    try:
        job = _client(args).get(args.name)
        if args.follow:
            for line in job.logs(follow=True):
                sys.stdout.write(line)
                sys.stdout.flush()
            return EXIT_OK
        text = job.logs(source="stored" if args.stored else "auto")
        status = job.status
        if not args.stored and int(status.get("attempts") or 1) > 1 and job.pods():
            print(f"(the pods of this attempt; every earlier attempt's log: gpubatch logs --stored {job.name})",
                  file=sys.stderr)
    except GpubatchClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    if not text:
        print(f"(no log yet for {job.kind} {job.name})", file=sys.stderr)
    sys.stdout.write(str(text))
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    from gpubatch_jobs.client import GpubatchClientError

    try:
        job = _client(args).get(args.name)
        job.delete(wait=args.wait)
    except GpubatchClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"{job.kind.lower()}.gpubatch.dev/{job.name} deleted", file=sys.stderr)
    return EXIT_OK
