"""The chart's whole life on a real API server, beyond the basic install in test_chart.py.

- `helm template` output (every mode) is accepted by a server-side dry run;
- the RBAC it installs, read back from the server, has no wildcard and gives
  the operator's and the job pods' ServiceAccounts exactly what they need
  (`kubectl auth can-i` as each, cluster-wide and per namespace): the operator
  no pod writes and no Roles, only `bind` on the two job ClusterRoles;
- `helm upgrade` with a changed value reaches the running Deployment;
- `helm uninstall` leaves nothing of the release behind except the CRDs,
  which Helm keeps by design.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cluster import harness

pytestmark = pytest.mark.cluster

CHART_DIR = harness.REPO_ROOT / "charts" / "gpubatch"
CRD_NAMES = ("trainjobs.gpubatch.dev", "predictjobs.gpubatch.dev", "renderjobs.gpubatch.dev")
JOB_SA = "gpubatch-job"
# Every kind of object the chart can create (ServiceMonitor aside: no Prometheus here).
RELEASE_KINDS = (
    "deployments.apps",
    "services",
    "serviceaccounts",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
    "validatingadmissionpolicies.admissionregistration.k8s.io",
    "validatingadmissionpolicybindings.admissionregistration.k8s.io",
    "pods",
    "replicasets.apps",
)


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    watched: tuple[str, ...]  # () = cluster-wide

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name}"

    @property
    def fullname(self) -> str:
        return f"{self.name}-gpubatch"

    @property
    def operator_user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"


def job_user(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:{JOB_SA}"


def install(cluster: harness.Cluster, release: Release, *values: str) -> None:
    sets = [f"watchNamespaces={{{','.join(release.watched)}}}"] if release.watched else []
    result = cluster.helm(
        "install",
        release.name,
        str(CHART_DIR),
        "--namespace",
        release.namespace,
        "--wait",
        "--timeout",
        "2m",
        *[arg for value in [*sets, *values] for arg in ("--set", value)],
    )
    assert result.returncode == 0, result.stdout + result.stderr


def uninstall(cluster: harness.Cluster, release: Release) -> None:
    result = cluster.helm(
        "uninstall", release.name, "-n", release.namespace, "--wait", "--timeout", "2m"
    )
    assert result.returncode == 0, result.stderr


def can_i(
    cluster: harness.Cluster,
    user: str,
    verb: str,
    resource: str,
    namespace: str | None = None,
    subresource: str | None = None,
) -> bool:
    args = ["auth", "can-i", verb, resource, "--as", user]
    args += ["-n", namespace] if namespace else []
    args += [f"--subresource={subresource}"] if subresource else []
    result = cluster.kubectl(*args)
    assert result.stdout.strip() in {"yes", "no"}, result.stdout + result.stderr
    return result.stdout.strip() == "yes"


def assert_access(
    cluster: harness.Cluster,
    user: str,
    namespace: str,
    rules: list[tuple[str, str, str | None]],
    allowed: bool,
) -> None:
    """`kubectl auth can-i` as `user` answers `allowed` for every (verb, resource, subresource)."""
    for verb, resource, sub in rules:
        assert can_i(cluster, user, verb, resource, namespace, sub) is allowed, (verb, resource, sub, namespace)


def leftovers(cluster: harness.Cluster, release: Release) -> list[str]:
    found = cluster.kubectl(
        "get", ",".join(RELEASE_KINDS), "-A", "-l", release.selector, "-o", "name", check=True
    ).stdout.split()
    found += [
        line
        for line in cluster.kubectl(
            "get",
            "serviceaccounts,roles,rolebindings",
            "-A",
            "-o",
            "name",
            "--field-selector",
            f"metadata.name={release.fullname}",
            check=True,
        ).stdout.split()
    ]
    return found


@pytest.fixture(scope="module")
def cluster_wide(
    k8s_cluster: harness.Cluster, module_restricted_namespace: str
) -> Iterator[Release]:
    """A cluster-wide release with our own values, shared by the read-only tests."""
    release = Release(harness.unique_name("gbcw"), module_restricted_namespace, ())
    install(
        k8s_cluster,
        release,
        "defaults.devicePolicy=auto",
        "defaults.gpuPendingTimeout=90s",
        "jobImages.gpu.tag=test",
        "jobImages.cpu.tag=test",
        "logLevel=DEBUG",
    )
    yield release
    uninstall(k8s_cluster, release)


@pytest.fixture(scope="module")
def namespaces(k8s_cluster: harness.Cluster) -> Iterator[tuple[str, str, str]]:
    """(release namespace, watched a, watched b) and an unwatched one, all fresh."""
    made = tuple(
        k8s_cluster.create_namespace(harness.unique_name(prefix))
        for prefix in ("gbns-home", "gbns-a", "gbns-b", "gbns-other")
    )
    yield made  # type: ignore[misc]
    for name in made:
        k8s_cluster.delete_namespace(name)


@pytest.fixture(scope="module")
def namespaced(k8s_cluster: harness.Cluster, namespaces: tuple[str, ...]) -> Iterator[Release]:
    home, watched_a, watched_b, _ = namespaces
    release = Release(harness.unique_name("gbns"), home, (watched_a, watched_b))
    install(k8s_cluster, release)
    yield release
    if k8s_cluster.helm("status", release.name, "-n", home).returncode == 0:
        uninstall(k8s_cluster, release)


# --- helm template + server-side dry run ------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["metrics.enabled=false"],
        ["rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=custom-operator"],
        [
            "jobServiceAccount.create=false",
            "defaults.devicePolicy=cpu",
            "image.tag=v9",
            "nameOverride=gb",
        ],
    ],
    ids=["defaults", "no-metrics", "no-rbac", "custom"],
)
def test_rendered_manifests_pass_a_server_side_dry_run(
    k8s_cluster: harness.Cluster, module_restricted_namespace: str, values: list[str]
) -> None:
    rendered = k8s_cluster.helm(
        "template",
        "dryrun",
        str(CHART_DIR),
        "--include-crds",
        "-n",
        module_restricted_namespace,
        *[arg for value in values for arg in ("--set", value)],
        check=True,
    ).stdout
    result = k8s_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.returncode == 0, result.stderr
    created = [
        line.split()[0] for line in result.stdout.splitlines() if "created (server dry run)" in line
    ]
    assert any(name.startswith("deployment.apps/dryrun-") for name in created), result.stdout


def test_namespaced_manifests_pass_a_server_side_dry_run(
    k8s_cluster: harness.Cluster, namespaces: tuple[str, ...]
) -> None:
    home, watched_a, watched_b, _ = namespaces
    rendered = k8s_cluster.helm(
        "template",
        "dryrun",
        str(CHART_DIR),
        "-n",
        home,
        "--set",
        f"watchNamespaces={{{watched_a},{watched_b}}}",
        check=True,
    ).stdout
    result = k8s_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.returncode == 0, result.stderr
    # One operator Role and one job RoleBinding (to the job ClusterRole) per watched namespace, each
    # accepted; no job Role at all, and the admission policies accepted too.
    lines = result.stdout.splitlines()
    roles = lines.count("role.rbac.authorization.k8s.io/dryrun-gpubatch created (server dry run)")
    job_bindings = lines.count(f"rolebinding.rbac.authorization.k8s.io/{JOB_SA} created (server dry run)")
    job_roles = lines.count(f"role.rbac.authorization.k8s.io/{JOB_SA} created (server dry run)")
    assert (roles, job_bindings, job_roles) == (2, 2, 0), result.stdout
    assert "validatingadmissionpolicy.admissionregistration.k8s.io/dryrun-gpubatch-job-pods created" \
        in result.stdout, result.stdout


def test_a_misspelt_value_fails_the_install_and_creates_nothing(
    k8s_cluster: harness.Cluster, module_restricted_namespace: str
) -> None:
    name = harness.unique_name("gbtypo")
    result = k8s_cluster.helm(
        "install",
        name,
        str(CHART_DIR),
        "-n",
        module_restricted_namespace,
        "--set",
        "jobImages.gpu.tga=x",
    )
    assert result.returncode != 0
    assert "tga" in result.stderr and "additional properties" in result.stderr, result.stderr
    assert k8s_cluster.helm("status", name, "-n", module_restricted_namespace).returncode != 0


# --- RBAC read back -----------------------------------------------------------------------------


def rbac_objects(cluster: harness.Cluster, release: Release) -> list[dict[str, Any]]:
    kinds = "clusterroles.rbac.authorization.k8s.io,roles.rbac.authorization.k8s.io"
    return cluster.get(kinds, "-A", "-l", release.selector)["items"]


def test_installed_rbac_has_no_wildcards(
    k8s_cluster: harness.Cluster, cluster_wide: Release, namespaced: Release
) -> None:
    for release in (cluster_wide, namespaced):
        objects = rbac_objects(k8s_cluster, release)
        assert {obj["kind"] for obj in objects} == {"ClusterRole", "Role"}
        for obj in objects:
            where = (
                f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
            )
            assert "aggregationRule" not in obj, where
            for rule in obj["rules"]:
                assert "nonResourceURLs" not in rule, where
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert not any("*" in item for item in rule.get(field, [])), f"{where}: {rule}"
                assert not {"escalate", "impersonate"} & set(rule["verbs"]), f"{where}: {rule}"
                if "bind" in rule["verbs"]:  # only the two job ClusterRoles, by name
                    assert rule["resources"] == ["clusterroles"], f"{where}: {rule}"
                    assert rule["resourceNames"] == [f"{release.fullname}-job", f"{release.fullname}-spark-driver"]


OPERATOR_CAN = [
    ("get", "trainjobs.gpubatch.dev", None),
    ("watch", "renderjobs.gpubatch.dev", None),
    ("patch", "predictjobs.gpubatch.dev", "status"),
    ("update", "trainjobs.gpubatch.dev", "status"),
    ("update", "renderjobs.gpubatch.dev", "finalizers"),
    ("create", "jobs.batch", None),
    ("delete", "jobs.batch", None),
    ("watch", "jobs.batch", None),
    ("list", "pods", None),
    ("watch", "pods", None),
    ("create", "events", None),
    ("create", "serviceaccounts", None),
    ("create", "rolebindings.rbac.authorization.k8s.io", None),
    # The headless Service and the NetworkPolicy of a TrainJob's worker group.
    ("create", "services", None),
    ("create", "networkpolicies.networking.k8s.io", None),
]
OPERATOR_CANNOT = [
    ("update", "trainjobs.gpubatch.dev", None),  # the spec is never written (GitOps: no drift)
    ("delete", "trainjobs.gpubatch.dev", None),
    ("create", "renderjobs.gpubatch.dev", None),
    ("update", "jobs.batch", None),
    ("deletecollection", "pods", None),
    # No pod writes: it grants the job identities their rights by binding the chart's ClusterRoles.
    ("create", "pods", None),
    ("delete", "pods", None),
    ("patch", "pods", None),
    ("update", "pods", None),
    ("create", "roles.rbac.authorization.k8s.io", None),
    ("escalate", "roles.rbac.authorization.k8s.io", None),
    ("bind", "roles.rbac.authorization.k8s.io", None),
    ("get", "configmaps", None),
    ("create", "configmaps", None),
    ("create", "pods", "exec"),
    ("get", "secrets", None),
    ("list", "secrets", None),
    ("update", "configmaps", None),
    ("delete", "services", None),
    ("delete", "serviceaccounts", None),
    ("create", "serviceaccounts", "token"),
    ("update", "roles.rbac.authorization.k8s.io", None),
    ("delete", "rolebindings.rbac.authorization.k8s.io", None),
    ("create", "deployments.apps", None),
    ("create", "persistentvolumeclaims", None),
    ("create", "pods", "exec"),
    ("get", "pods", "log"),
]
OPERATOR_CLUSTER_CAN = [
    ("list", "nodes"),
    ("watch", "nodes"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"),
]
OPERATOR_CLUSTER_CANNOT = [
    ("delete", "nodes"),
    ("patch", "nodes"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("delete", "namespaces"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "secrets"),
    ("get", "persistentvolumes"),
]
JOB_CAN = [("patch", "pods", None)]  # held to its own pod's progress annotation by the admission policy
JOB_CANNOT = [
    ("get", "pods", None),
    ("list", "pods", None),
    ("watch", "pods", None),
    ("delete", "pods", None),
    ("create", "pods", None),
    ("update", "pods", None),
    ("get", "secrets", None),
    ("list", "secrets", None),
    ("get", "configmaps", None),
    ("create", "jobs.batch", None),
    ("get", "trainjobs.gpubatch.dev", None),
    ("patch", "trainjobs.gpubatch.dev", "status"),
    ("create", "events", None),
    ("create", "pods", "exec"),
    ("patch", "pods", "status"),
]


def test_the_operator_can_do_its_work_and_nothing_else_cluster_wide(
    k8s_cluster: harness.Cluster, cluster_wide: Release, namespaces: tuple[str, ...]
) -> None:
    user = cluster_wide.operator_user
    for namespace in (cluster_wide.namespace, namespaces[3]):  # its own, and any other
        assert_access(k8s_cluster, user, namespace, OPERATOR_CAN, allowed=True)
        assert_access(k8s_cluster, user, namespace, OPERATOR_CANNOT, allowed=False)
    for verb, resource in OPERATOR_CLUSTER_CAN:
        assert can_i(k8s_cluster, user, verb, resource), (verb, resource)
    for verb, resource in OPERATOR_CLUSTER_CANNOT:
        assert not can_i(k8s_cluster, user, verb, resource), (verb, resource)
    assert not can_i(k8s_cluster, user, "create", "pods", "kube-system")
    assert not can_i(k8s_cluster, user, "create", "roles.rbac.authorization.k8s.io", "kube-system")
    # bind: on the two job ClusterRoles, by name, and nothing else.
    for role in (f"{cluster_wide.fullname}-job", f"{cluster_wide.fullname}-spark-driver"):
        assert can_i(k8s_cluster, user, "bind", f"clusterroles.rbac.authorization.k8s.io/{role}", namespaces[3])
    for role in ("admin", "edit", "cluster-admin"):
        assert not can_i(k8s_cluster, user, "bind", f"clusterroles.rbac.authorization.k8s.io/{role}", namespaces[3])


def test_the_job_service_account_may_only_patch_pods_of_its_namespace(
    k8s_cluster: harness.Cluster,
    cluster_wide: Release,
    namespaced: Release,
    namespaces: tuple[str, ...],
) -> None:
    # Pre-created by the chart: the release namespace (cluster-wide) and each watched namespace.
    for namespace in (cluster_wide.namespace, *namespaced.watched):
        user = job_user(namespace)
        assert_access(k8s_cluster, user, namespace, JOB_CAN, allowed=True)
        assert_access(k8s_cluster, user, namespace, JOB_CANNOT, allowed=False)
        # Never outside its own namespace, nor anything cluster-scoped.
        assert not can_i(k8s_cluster, user, "patch", "pods", namespaces[3])
        assert not can_i(k8s_cluster, user, "list", "nodes")
        sa = k8s_cluster.get("serviceaccount", JOB_SA, "-n", namespace)
        assert sa["metadata"]["labels"]["app.kubernetes.io/component"] == "job"


def test_namespaced_mode_grants_only_the_watched_namespaces(
    k8s_cluster: harness.Cluster, namespaced: Release, namespaces: tuple[str, ...]
) -> None:
    home, watched_a, watched_b, other = namespaces
    user = namespaced.operator_user
    clusterroles = [
        obj for obj in rbac_objects(k8s_cluster, namespaced)
        if obj["kind"] == "ClusterRole" and obj["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    assert len(clusterroles) == 1
    assert {r for rule in clusterroles[0]["rules"] for r in rule["resources"]} == {
        "nodes",
        "namespaces",
        "customresourcedefinitions",
        "clusterroles",  # get, by name: the two job ClusterRoles' UIDs
    }
    for namespace in (home, other):  # bind only where it watches
        assert not can_i(k8s_cluster, user, "bind", f"clusterroles.rbac.authorization.k8s.io/{namespaced.fullname}-job",
                         namespace)
    assert can_i(k8s_cluster, user, "bind", f"clusterroles.rbac.authorization.k8s.io/{namespaced.fullname}-job",
                 watched_a)
    for namespace in (watched_a, watched_b):
        assert_access(k8s_cluster, user, namespace, OPERATOR_CAN, allowed=True)
    for namespace in (home, other):
        assert_access(k8s_cluster, user, namespace, OPERATOR_CAN, allowed=False)
    assert can_i(k8s_cluster, user, "list", "nodes")
    assert not can_i(k8s_cluster, user, "delete", "nodes")
    # The job ServiceAccount exists only where jobs may run.
    assert k8s_cluster.kubectl("get", "serviceaccount", JOB_SA, "-n", home).returncode != 0
    assert k8s_cluster.kubectl("get", "serviceaccount", JOB_SA, "-n", other).returncode != 0
    env = deployment_env(k8s_cluster, namespaced)
    assert env["GPUBATCH_WATCH_NAMESPACES"] == f"{watched_a},{watched_b}"


def test_the_operator_may_bind_the_job_cluster_role_but_no_other(
    k8s_cluster: harness.Cluster, cluster_wide: Release, namespaces: tuple[str, ...]
) -> None:
    """In a namespace the chart did not prepare, the operator binds the job ClusterRole (it holds `bind`
    on it, not its rules), and cannot bind any other role, nor make a Role."""
    namespace = namespaces[3]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": JOB_SA, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": f"{cluster_wide.fullname}-job"},
        "subjects": [{"kind": "ServiceAccount", "name": JOB_SA, "namespace": namespace}],
    }

    def create(obj: dict[str, Any]) -> Any:
        return k8s_cluster.kubectl("create", "--dry-run=server", "--as", cluster_wide.operator_user, "-f", "-",
                                   input=json.dumps(obj))

    result = create(binding)
    assert result.returncode == 0, result.stderr
    binding["roleRef"]["name"] = "edit"
    result = create(binding)
    assert result.returncode != 0 and "forbidden" in result.stderr.lower(), result.stderr
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": JOB_SA, "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]}
    result = create(role)
    assert result.returncode != 0 and "forbidden" in result.stderr.lower(), result.stderr


# --- upgrade and uninstall ---------------------------------------------------------------------


def deployment_env(cluster: harness.Cluster, release: Release) -> dict[str, str]:
    deployment = cluster.get("deployment", release.fullname, "-n", release.namespace)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # An empty value comes back without its "value" key.
    return {item["name"]: item.get("value", "") for item in container["env"] if "valueFrom" not in item}


def test_installed_values_reach_the_operator(
    k8s_cluster: harness.Cluster, cluster_wide: Release
) -> None:
    env = deployment_env(k8s_cluster, cluster_wide)
    assert env["GPUBATCH_WATCH_NAMESPACES"] == ""
    assert env["GPUBATCH_DEFAULT_GPU_PENDING_TIMEOUT"] == "90s"
    assert env["GPUBATCH_GPU_IMAGE"].endswith(":test") and env["GPUBATCH_CPU_IMAGE"].endswith(
        ":test"
    )
    assert env["GPUBATCH_LOG_LEVEL"] == "DEBUG"
    service = k8s_cluster.get(
        "service", f"{cluster_wide.fullname}-metrics", "-n", cluster_wide.namespace
    )
    assert service["spec"]["ports"][0]["port"] == 8080


def test_upgrade_applies_a_changed_value(
    k8s_cluster: harness.Cluster, namespaces: tuple[str, ...]
) -> None:
    release = Release(harness.unique_name("gbup"), namespaces[0], ())
    install(k8s_cluster, release)
    try:
        before = k8s_cluster.get("deployment", release.fullname, "-n", release.namespace)
        assert deployment_env(k8s_cluster, release)["GPUBATCH_DEFAULT_DEVICE_POLICY"] == "auto"
        result = k8s_cluster.helm(
            "upgrade",
            release.name,
            str(CHART_DIR),
            "-n",
            release.namespace,
            "--reuse-values",
            "--set",
            "defaults.devicePolicy=cpu",
            "--set",
            "metrics.enabled=false",
            "--wait",
            "--timeout",
            "2m",
        )
        assert result.returncode == 0, result.stderr
        after = k8s_cluster.get("deployment", release.fullname, "-n", release.namespace)
        env = deployment_env(k8s_cluster, release)
        assert env["GPUBATCH_DEFAULT_DEVICE_POLICY"] == "cpu"
        assert env["GPUBATCH_METRICS_PORT"] == "0"
        # The settings checksum rolls the pod (settings are read once at startup).
        checksum = "checksum/settings"
        assert (
            before["spec"]["template"]["metadata"]["annotations"][checksum]
            != after["spec"]["template"]["metadata"]["annotations"][checksum]
        )
        assert (
            k8s_cluster.kubectl(
                "get", "service", f"{release.fullname}-metrics", "-n", release.namespace
            ).returncode
            != 0
        )
        history = json.loads(
            k8s_cluster.helm(
                "history", release.name, "-n", release.namespace, "-o", "json", check=True
            ).stdout
        )
        assert [entry["status"] for entry in history] == ["superseded", "deployed"]
        k8s_cluster.wait_for_condition(
            f"deployment/{release.fullname}", release.namespace, "Available", timeout=90
        )
    finally:
        uninstall(k8s_cluster, release)


def test_uninstall_leaves_only_the_crds(k8s_cluster: harness.Cluster, namespaced: Release) -> None:
    assert leftovers(k8s_cluster, namespaced), "the release should have created objects to remove"
    uninstall(k8s_cluster, namespaced)
    harness.wait_until(
        lambda: not leftovers(k8s_cluster, namespaced),
        timeout=60,
        what=f"no object of release {namespaced.name} left",
    )
    for namespace in namespaced.watched:
        assert k8s_cluster.kubectl("get", "serviceaccount", JOB_SA, "-n", namespace).returncode != 0
    # Helm never deletes what crds/ installed: the users' jobs outlive a reinstall.
    for crd in CRD_NAMES:
        assert k8s_cluster.kubectl("get", "crd", crd).returncode == 0, crd
