"""docs/install.md's Argo CD health checks, run in gopher-lua (the Lua Argo CD embeds) against
statuses the operator's own state machine writes: new, Pending, Running, Succeeded, Failed and
fallen back to the CPU. tests/e2e/test_submit.py runs them on statuses of real pods."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpubatch_operator.decide import decide
from gpubatch_operator.state import advance
from tests.argocd.health import evaluate, scripts
from tests.operator.helpers import job_body, make_world, pod_body

FIRST, RERUN = "x-render", "x-render-cpu"


def status_after(world: Any, before: dict[str, Any] | None = None) -> dict[str, Any]:
    plan = decide(world)
    assert plan.outcome is not None
    status, _ = advance(before or {}, plan.outcome, generation=1, now="2026-01-01T00:00:00Z")
    return status


def resource(kind: str, status: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "gpubatch.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"},
                            "spec": {}}
    if status is not None:
        body["status"] = status
    return body


def statuses() -> dict[str, dict[str, Any] | None]:
    pending = status_after(make_world().obj())
    running = status_after(make_world().status(**pending).job(job_body(FIRST)).pod(pod_body(FIRST)).obj(), pending)
    done = status_after(make_world().status(**running).job(job_body(FIRST, conditions={"Complete": ("", "")}))
                        .pod(pod_body(FIRST, phase="Succeeded", exit_code=0, message='{"ok": true}')).obj(), running)
    failed = status_after(make_world().status(**running).job(job_body(FIRST, conditions={
        "Failed": ("PodFailurePolicy", "failed with exit code 1")})).pod(pod_body(
            FIRST, phase="Failed", exit_code=1, message=json.dumps({"ok": False, "message": "spec.input.path: gone"})))
        .obj(), running)
    unschedulable = make_world().status(**pending).job(job_body(FIRST)).pod(
        pod_body(FIRST, phase="Pending", unschedulable_for=3600)).obj()
    fallen = status_after(unschedulable, pending)
    cpu_running = status_after(make_world().status(**fallen).job(job_body(RERUN, device="cpu"))
                               .pod(pod_body(RERUN)).obj(), fallen)
    return {"new": None, "pending": pending, "running": running, "succeeded": done, "failed": failed,
            "fallen-back": fallen, "cpu-running": cpu_running}


EXPECTED = {"new": "Progressing", "pending": "Progressing", "running": "Progressing", "succeeded": "Healthy",
            "failed": "Degraded", "fallen-back": "Progressing", "cpu-running": "Progressing"}


@pytest.mark.parametrize("kind", ["RenderJob", "TrainJob", "PredictJob"])
def test_the_documented_health_checks_in_gopher_lua(kind: str) -> None:
    cases = statuses()
    assert cases["fallen-back"]["device"] == "cpu" and any(
        c["type"] == "FellBackToCPU" for c in cases["fallen-back"]["conditions"])
    results = dict(zip(cases, evaluate(kind, [resource(kind, s) for s in cases.values()]), strict=True))
    assert {name: r.get("status") for name, r in results.items()} == EXPECTED, results
    assert results["new"]["message"] == "Waiting for the gpubatch operator"
    assert results["failed"]["message"] == "spec.input.path: gone"  # status.message, as Argo CD shows it
    assert "CPU" in results["fallen-back"]["message"]


def test_a_broken_script_is_reported_not_passed() -> None:
    assert set(scripts()) == {"RenderJob", "TrainJob", "PredictJob"}
    from tests.argocd import health

    results = health.evaluate("RenderJob", [{"status": 5}])
    assert "error" in results[0]  # obj.status.phase on a number fails in Lua
