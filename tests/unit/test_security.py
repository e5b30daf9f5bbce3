"""A tenant with rights on gpubatch resources only gets nothing more through them (docs/security.md).

Unit level: the pieces that decide it, each with the input an attacker would
write. tests/e2e/test_tenancy.py tries the same against the chart's operator
on the real cluster, as an impersonated tenant.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gpubatch_jobs.errors import BadInput, excerpt, excerpts, safe_message
from gpubatch_jobs.runtime import RunContext
from gpubatch_jobs.spec import SpecError, parse_spec
from gpubatch_operator.client import ApiError
from gpubatch_operator.handlers.lifecycle import OperatorContext
from gpubatch_operator.handlers.watch_events import job_event, pod_event, resource_event
from gpubatch_operator.leader import LeaderElection
from gpubatch_operator.policy import image_allowed, refusal
from gpubatch_operator.reconciler import Reconciler
from gpubatch_operator.settings import Settings
from gpubatch_operator.store import Store
from tests.operator.helpers import UID, job_body, make_job, pod_body, resource

SECRET = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.c2VjcmV0LXRva2VuLWNvbnRlbnQ" + "Q" * 600

# --- 1. paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["pvc://data/../../../var/run/secrets/kubernetes.io/serviceaccount/token",
                                  "pvc://data/..", "s3://bucket/a/../b", "pvc://data/a/../../etc"])
def test_a_parent_segment_in_a_claim_or_bucket_url_is_refused_by_the_model(path: str) -> None:
    with pytest.raises(SpecError, match=r"spec.input.path.*'\.\.'"):
        parse_spec("RenderJob", {"input": {"path": path}, "output": {"path": "pvc://out/x.h5"}})


def test_a_laptop_path_may_climb_but_a_pod_takes_no_local_path(tmp_path: Path) -> None:
    spec = parse_spec("RenderJob", {"input": {"path": "../data/x.csv"}, "output": {"path": "out/x.h5"}})
    with pytest.raises(BadInput, match="spec.input.path"):
        confined(tmp_path).input_file(spec.input.path, field_name="spec.input.path")


def test_dots_inside_a_name_are_not_a_parent_segment() -> None:
    parse_spec("RenderJob", {"input": {"path": "pvc://data/a..b/x...csv"}, "output": {"path": "pvc://out/x.h5"}})


def test_the_crd_carries_the_same_rule() -> None:
    from gpubatch_jobs.crds import crd_for

    schema = crd_for("RenderJob")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = schema["properties"]["spec"]["properties"]["input"]["properties"]["path"]["x-kubernetes-validations"]
    assert rules[0]["rule"] == "!self.matches('(^|/)\\\\.\\\\.(/|$)')"


def confined(tmp_path: Path) -> RunContext:
    (tmp_path / "pvc" / "data").mkdir(parents=True)
    return RunContext(pvc_root=tmp_path / "pvc", confined=True)


def test_in_a_pod_only_claims_and_buckets(tmp_path: Path) -> None:
    ctx = confined(tmp_path)
    for path in ("/var/run/secrets/kubernetes.io/serviceaccount/token", "data.csv", "/proc/self/environ"):
        with pytest.raises(BadInput, match="spec.input.path: .*pvc://CLAIM"):
            ctx.input_file(path, field_name="spec.input.path")
    assert ctx.input_file("pvc://data/x.csv") == (tmp_path / "pvc" / "data" / "x.csv").resolve()


def test_a_symlink_leading_out_of_its_claim_is_refused_when_opened(tmp_path: Path) -> None:
    ctx = confined(tmp_path)
    (tmp_path / "token").write_text(SECRET)
    data = tmp_path / "pvc" / "data"
    (data / "link.csv").symlink_to(tmp_path / "token")
    (data / "up").symlink_to(tmp_path, target_is_directory=True)
    (data / "inside.csv").write_text("x\n1\n")
    (data / "alias.csv").symlink_to(data / "inside.csv")  # a symlink within the claim is fine
    for path in ("pvc://data/link.csv", "pvc://data/up/token"):
        with pytest.raises(BadInput, match="outside its claim") as caught:
            ctx.input_file(path, field_name="spec.input.path")
        assert str(tmp_path) not in str(caught.value)
    assert ctx.input_file("pvc://data/alias.csv") == (data / "inside.csv").resolve()
    # An output through a symlinked folder is refused too.
    with pytest.raises(BadInput, match="outside its claim"):
        ctx.output_file("pvc://data/up/out.h5", field_name="spec.output.path")


def test_a_model_folder_with_a_file_linked_out_of_the_claim_is_refused(tmp_path: Path) -> None:
    ctx = confined(tmp_path)
    (tmp_path / "token").write_text(SECRET)
    model = tmp_path / "pvc" / "data" / "model"
    model.mkdir()
    (model / "preprocessing.json").symlink_to(tmp_path / "token")
    with pytest.raises(BadInput, match="outside its claim"):
        ctx.input_dir("pvc://data/model", field_name="spec.model")


def test_laptop_runs_keep_local_paths(tmp_path: Path) -> None:
    assert RunContext(base_dir=tmp_path).resolve("a/b.csv") == tmp_path / "a" / "b.csv"


def test_excerpts_are_short_and_printable() -> None:
    assert excerpt(SECRET) == f"'{SECRET[:40]}'...({len(SECRET)} chars)"
    assert excerpt("a\nb\x00c") == "'a?b?c'"
    listed = excerpts([SECRET] * 30)
    assert listed.count("'") == 10 and "(25 more)" in listed and len(listed) < 400
    assert len(safe_message("x" * 10_000)) == 600 and "\n" not in safe_message("a\nb")


def test_a_csv_whose_header_is_a_secret_leaks_only_an_excerpt(tmp_path: Path) -> None:
    from gpubatch_jobs.render import run

    ctx = confined(tmp_path)
    (tmp_path / "pvc" / "data" / "token.csv").write_text(SECRET + "\n1\n")
    spec = parse_spec("RenderJob", {"input": {"path": "pvc://data/token.csv", "column": "price"},
                                    "output": {"path": "pvc://data/out.h5"}})
    with pytest.raises(BadInput) as caught:
        run(spec, ctx)
    assert SECRET[:60] not in str(caught.value) and "Q" * 50 not in str(caught.value)


# --- 2, 6. what the operator refuses before making anything -------------------------------------------

def spec(**fields: Any) -> Any:
    return parse_spec("RenderJob", {"input": {"path": "pvc://data/x.h5"}, "output": {"path": "pvc://out/x.h5"},
                                    **fields})


@pytest.mark.parametrize(("image", "allowed"), [
    ("gpubatch/gpubatch-cpu:1.0", True), ("gpubatch/gpubatch-cpu@sha256:ab", True), ("gpubatch/gpubatch-cpu", True),
    ("gpubatch/gpubatch-cpu-evil:1", False), ("evil/gpubatch/gpubatch-cpu:1", False), ("busybox", False),
    ("registry.example/ml/x:1", True), ("registry.example/ml/", False), ("registry.example/mlx/y", False),
])
def test_image_allow_list(image: str, allowed: bool) -> None:
    assert image_allowed(image, ("gpubatch/gpubatch-cpu", "registry.example/ml/*")) is allowed


def test_the_default_allow_list_is_the_operators_own_job_repositories() -> None:
    settings = Settings(gpu_image="reg:5000/gpubatch/gpubatch-gpu:1", cpu_image="gpubatch/gpubatch-cpu:2")
    assert settings.image_allow_list == ("reg:5000/gpubatch/gpubatch-gpu", "gpubatch/gpubatch-cpu")


def test_refusals_name_the_field_and_the_reason() -> None:
    settings = Settings()
    assert refusal("x", spec(), settings) is None
    reason, message = refusal("x", spec(image={"cpu": "attacker/miner:latest"}), settings)  # type: ignore[misc]
    assert reason == "ImageNotAllowed" and "spec.image.cpu" in message and "jobImages.allowed" in message
    reason, message = refusal("x", spec(tolerations=[{"operator": "Exists"}]), settings)  # type: ignore[misc]
    assert reason == "TolerationNotAllowed" and "spec.tolerations[0]" in message
    assert refusal("x", spec(tolerations=[{"operator": "Exists"}]), Settings(allow_tolerate_all=True)) is None
    assert refusal("x", spec(tolerations=[{"key": "gpu", "operator": "Exists"}]), settings) is None
    reason, _ = refusal("a.b", spec(), settings)  # type: ignore[misc]
    assert reason == "InvalidName"


def test_negative_quantities_are_refused() -> None:
    for value in ("-1", -1, "-500m"):
        with pytest.raises(SpecError, match="spec.resources.requests.cpu"):
            spec(resources={"requests": {"cpu": value}})


class FakeApi:
    """An in-memory API for the reconciler's requests: objects by path; `refuse` maps a path prefix to an error."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.refuse: dict[str, ApiError] = {}
        self.calls: list[tuple[str, str]] = []

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("POST", path))
        for prefix, err in self.refuse.items():
            if path.startswith(prefix):
                raise err
        name = body["metadata"].get("name") or f"gen-{len(self.objects)}"
        full = f"{path}/{name}"
        if full in self.objects:
            raise ApiError(409, "AlreadyExists", f"{name} exists")
        self.objects[full] = {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}"}}
        return self.objects[full]

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        if path not in self.objects:
            raise ApiError(404, "NotFound", path)
        return self.objects[path]

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("PATCH", path))
        self.objects.setdefault(path, {}).update(body)
        return body

    async def delete(self, path: str, *, propagation: str = "Background") -> dict[str, Any]:
        self.calls.append(("DELETE", path))
        if self.objects.pop(path, None) is None:
            raise ApiError(404, "NotFound", path)
        return {}


def run_once(body: dict[str, Any], api: FakeApi, settings: Settings | None = None) -> dict[str, Any]:
    """One reconcile of `body`; returns the status patch it wrote."""
    async def scenario() -> None:
        r = Reconciler(settings=settings or Settings(), store=Store(), client=api)  # type: ignore[arg-type]
        r.store.put_resource(body)
        r.store.nodes_known = True  # no GPU node: auto goes to the CPU at once
        await r.reconcile(("TrainJob" if body["kind"] == "TrainJob" else body["kind"], "ns", body["metadata"]["name"]))
        r.queue.close()

    asyncio.run(scenario())
    status_path = next(p for m, p in api.calls if m == "PATCH" and p.endswith("/status"))
    return api.objects[status_path]["status"]


def events(api: FakeApi) -> list[dict[str, Any]]:
    return [o for p, o in api.objects.items() if "/events/" in p]


def test_an_image_outside_the_allow_list_fails_at_once_and_no_job_is_made() -> None:
    api = FakeApi()
    status = run_once(resource("RenderJob", "x", image={"cpu": "attacker/miner:1"}), api)
    assert status["phase"] == "Failed"
    (failed,) = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "ImageNotAllowed"
    assert not [p for m, p in api.calls if m == "POST" and ("/jobs" in p or "/rolebindings" in p)]
    assert [e["reason"] for e in events(api)] == ["ImageNotAllowed"]


def test_a_foreign_workers_service_fails_the_trainjob_naming_it() -> None:
    api = FakeApi()
    api.objects["/api/v1/namespaces/ns/services/t-workers"] = {
        "metadata": {"name": "t-workers", "namespace": "ns", "uid": "someone-elses"},
        "spec": {"selector": {"app": "elsewhere"}}}
    body = resource("TrainJob", "t", workers=2, batchSize=64)
    status = run_once(body, api)
    assert status["phase"] == "Failed"
    (failed,) = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "NameTaken" and "Service t-workers" in failed["message"]
    assert not [p for m, p in api.calls if m == "POST" and "/jobs" in p]
    assert events(api) and events(api)[0]["type"] == "Warning"


def test_our_own_workers_service_and_policy_are_fine_and_a_policy_is_made() -> None:
    api = FakeApi()
    status = run_once(resource("TrainJob", "t", workers=2, batchSize=64), api)
    assert status["phase"] == "Pending"
    assert "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/t-workers" in api.objects


def test_a_permanent_api_error_fails_the_resource_instead_of_retrying() -> None:
    api = FakeApi()
    api.refuse["/apis/batch/v1/namespaces/ns/jobs"] = ApiError(422, "Invalid", "Job.batch \"x-render\" is invalid: "
                                                               + SECRET)
    status = run_once(resource("RenderJob", "x"), api)
    assert status["phase"] == "Failed"
    (failed,) = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert failed["reason"] == "ApiRefused" and len(failed["message"]) <= 600


def test_the_job_identity_is_a_binding_to_the_cluster_role_owned_by_it() -> None:
    api = FakeApi()
    api.objects["/apis/rbac.authorization.k8s.io/v1/clusterroles/gpubatch-job"] = {
        "metadata": {"name": "gpubatch-job", "uid": "cr-uid"}}
    run_once(resource("RenderJob", "x"), api)
    binding = api.objects["/apis/rbac.authorization.k8s.io/v1/namespaces/ns/rolebindings/gpubatch-job"]
    assert binding["roleRef"]["kind"] == "ClusterRole" and binding["roleRef"]["name"] == "gpubatch-job"
    assert binding["metadata"]["ownerReferences"][0]["uid"] == "cr-uid"
    assert not [p for _, p in api.calls if "/roles" in p]


def test_the_last_resource_of_a_namespace_takes_the_job_identities_with_it() -> None:
    api = FakeApi()
    settings = Settings()

    async def scenario() -> None:
        store = Store()
        ctx = OperatorContext(settings, store, Reconciler(settings=settings, store=store, client=api))  # type: ignore[arg-type]
        ctx.tasks = [asyncio.get_running_loop().create_future()]  # type: ignore[list-item]  # leading
        store.nodes_known = True
        for name in ("a", "b"):
            body = resource("RenderJob", name)
            body["metadata"]["uid"] = f"uid-{name}"
            resource_event(ctx, "ADDED", body)
        await ctx.reconciler.reconcile(("RenderJob", "ns", "a"))
        assert "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/rolebindings/gpubatch-job" in api.objects
        gone = resource("RenderJob", "a")
        gone["metadata"]["uid"] = "uid-a"
        resource_event(ctx, "DELETED", gone)
        await asyncio.sleep(0.05)
        assert "/api/v1/namespaces/ns/serviceaccounts/gpubatch-job" in api.objects  # b is still there
        gone = resource("RenderJob", "b")
        gone["metadata"]["uid"] = "uid-b"
        resource_event(ctx, "DELETED", gone)
        await asyncio.sleep(0.05)
        ctx.reconciler.queue.close()

    asyncio.run(scenario())
    assert not [p for p in api.objects if "/serviceaccounts/" in p or "/rolebindings/" in p]


# --- 5. children by owner reference -----------------------------------------------------------------

def test_a_job_or_pod_wearing_the_owner_label_without_the_owner_reference_is_not_a_child() -> None:
    settings = Settings()
    store = Store()
    ctx = OperatorContext(settings, store, Reconciler(settings=settings, store=store, client=None))  # type: ignore[arg-type]
    resource_event(ctx, "ADDED", resource("RenderJob", "x"))
    spoof = job_body("x-render")
    del spoof["metadata"]["ownerReferences"]  # the owner-uid label alone
    job_event(ctx, "ADDED", spoof)
    assert store.children(UID, "ns") == ([], [])
    pod = pod_body("x-render")
    pod["metadata"]["ownerReferences"] = []
    pod_event(ctx, "ADDED", pod)
    assert store.children(UID, "ns") == ([], [])
    # The real Job and its pod are matched through the owner references; another namespace's are not.
    job_event(ctx, "ADDED", job_body("x-render"))
    pod_event(ctx, "ADDED", pod_body("x-render"))
    elsewhere = pod_body("x-render")
    elsewhere["metadata"]["namespace"] = "other"
    elsewhere["metadata"]["name"] = "intruder"
    pod_event(ctx, "ADDED", elsewhere)
    jobs, pods = store.children(UID, "ns")
    assert [j.name for j in jobs] == ["x-render"] and [p.name for p in pods] == ["x-render-0-abcde"]
    assert store.children(UID, "other") == ([], [])


# --- 3. Spark ------------------------------------------------------------------------------------------

def test_spark_settings_a_tenant_may_not_touch_are_refused_at_parse() -> None:
    base = {"model": "pvc://out/m", "input": {"path": "pvc://data/x.parquet"}, "output": {"path": "pvc://out/p"},
            "engine": "spark"}
    with pytest.raises(SpecError, match="spark.kubernetes.executor.podTemplateFile"):
        parse_spec("PredictJob", {**base, "spark": {"conf": {"spark.kubernetes.executor.podTemplateFile": "/x"}}})
    with pytest.raises(SpecError, match="spec.spark.master"):
        parse_spec("PredictJob", {**base, "spark": {"master": "k8s://https://attacker:443", "executors": 2}})


# --- 7. the loops the operator needs ------------------------------------------------------------------

class FlakyClient:
    def __init__(self) -> None:
        self.calls = 0

    async def get(self, path: str) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("connection reset")  # not an ApiError
        raise ApiError(404, "NotFound", path)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return body


def test_the_leader_loop_survives_any_exception() -> None:
    started: list[bool] = []

    async def scenario() -> None:
        election = LeaderElection(FlakyClient(), "ns", "lease", "me", on_started=lambda: started.append(True),  # type: ignore[arg-type]
                                  on_stopped=lambda: None, renew_s=0.01, retry_s=0.01)
        task = asyncio.create_task(election.run())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if started:
                break
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert started == [True]


def test_healthz_goes_red_when_a_needed_loop_died() -> None:
    import kopf

    from gpubatch_operator.main import loops_alive

    async def scenario() -> None:
        settings = Settings()
        store = Store()
        ctx = OperatorContext(settings, store, Reconciler(settings=settings, store=store, client=None))  # type: ignore[arg-type]
        assert loops_alive(memo={"operator_ctx": ctx}) == "ok"  # type: ignore[arg-type]

        async def dies() -> None:
            raise RuntimeError("boom")

        ctx.election_task = asyncio.create_task(dies())
        await asyncio.gather(ctx.election_task, return_exceptions=True)
        with pytest.raises(kopf.PermanentError, match="leader election"):
            loops_alive(memo={"operator_ctx": ctx})  # type: ignore[arg-type]
        ctx.reconciler.queue.close()

    asyncio.run(scenario())


def test_messages_from_pods_are_capped_before_status() -> None:
    from gpubatch_jobs.podreport import termination_message

    text = termination_message({"ok": False, "message": SECRET * 3, "exitCode": 1})
    assert len(json.loads(text)["message"]) <= 600
    assert make_job("x").cpu().obj()["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] == "File"
