"""The generated CRDs against a real API server: they install, print the
columns users look at, and make the server itself refuse bad manifests,
naming the field at fault.

Each file in bad-manifests/ is one refused manifest; its `# expect:` header
lines are substrings the server's error must contain. good-manifests/ holds
the accepted baselines the bad ones vary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cluster import harness

pytestmark = pytest.mark.cluster

CRD_DIR = harness.REPO_ROOT / "charts" / "gpubatch" / "crds"
CLUSTER_DIR = Path(__file__).resolve().parent
BAD_MANIFESTS = sorted((CLUSTER_DIR / "bad-manifests").glob("*.yaml"))
GOOD_MANIFESTS = sorted((CLUSTER_DIR / "good-manifests").glob("*.yaml"))
PLURALS = ("trainjobs", "predictjobs", "renderjobs")


def _expected_fragments(manifest: Path) -> list[str]:
    lines = manifest.read_text().splitlines()
    fragments = [
        line.split("# expect:", 1)[1].strip() for line in lines if line.startswith("# expect:")
    ]
    assert fragments, f"{manifest} has no '# expect:' line saying what the error must name"
    return fragments


@pytest.fixture(scope="module")
def crds(k8s_cluster: harness.Cluster) -> list[Path]:
    files = sorted(CRD_DIR.glob("*.yaml"))
    if not files:
        pytest.fail(f"no CRDs in {CRD_DIR}; generate them with `gpubatch crds`")
    args = [arg for f in files for arg in ("-f", str(f))]
    k8s_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=gpubatch-tests",
        *args,
        check=True,
    )
    names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
    k8s_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{name}" for name in names),
        check=True,
    )
    return files


def test_crds_install_with_server_side_apply(
    k8s_cluster: harness.Cluster, crds: list[Path]
) -> None:
    for plural in PLURALS:
        crd = k8s_cluster.get("crd", f"{plural}.gpubatch.dev")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", plural
        assert conditions["NamesAccepted"] == "True", plural
        assert conditions.get("NonStructuralSchema", "False") != "True", plural
        assert [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha1"]


@pytest.mark.parametrize("manifest", GOOD_MANIFESTS, ids=lambda p: p.stem)
def test_good_manifest_is_accepted(
    k8s_cluster: harness.Cluster, crds: list[Path], restricted_namespace: str, manifest: Path
) -> None:
    k8s_cluster.kubectl(
        "-n", restricted_namespace, "create", "--validate=strict", "-f", str(manifest), check=True
    )


@pytest.mark.parametrize("plural", PLURALS)
def test_printer_columns(
    k8s_cluster: harness.Cluster, crds: list[Path], restricted_namespace: str, plural: str
) -> None:
    for manifest in GOOD_MANIFESTS:
        k8s_cluster.kubectl("-n", restricted_namespace, "create", "-f", str(manifest), check=True)

    header = k8s_cluster.kubectl(
        "-n", restricted_namespace, "get", plural, check=True
    ).stdout.splitlines()[0]

    assert header.split() == ["NAME", "PHASE", "DEVICE", "PROGRESS", "PREEMPTED", "ETA(S)", "AGE", "MESSAGE"]


def test_status_columns_show_what_the_operator_writes(
    k8s_cluster: harness.Cluster, crds: list[Path], restricted_namespace: str
) -> None:
    manifest = CLUSTER_DIR / "good-manifests" / "trainjob.yaml"
    name = yaml.safe_load(manifest.read_text())["metadata"]["name"]
    k8s_cluster.kubectl("-n", restricted_namespace, "create", "-f", str(manifest), check=True)
    status = (
        '{"status": {"phase": "Running", "device": "gpu", "progress": "42%", "jobName": "j-1"}}'
    )
    k8s_cluster.kubectl(
        "-n",
        restricted_namespace,
        "patch",
        "trainjob",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
        check=True,
    )

    row = k8s_cluster.kubectl(
        "-n", restricted_namespace, "get", "trainjob", name, "--no-headers", check=True
    ).stdout.split()

    assert row[:4] == [name, "Running", "gpu", "42%"]


@pytest.mark.parametrize("manifest", BAD_MANIFESTS, ids=lambda p: p.stem)
def test_api_server_refuses_bad_manifest(
    k8s_cluster: harness.Cluster, crds: list[Path], restricted_namespace: str, manifest: Path
) -> None:
    result = k8s_cluster.kubectl(
        "-n",
        restricted_namespace,
        "create",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        str(manifest),
    )

    # kubectl no longer validates custom resources itself: with --dry-run=server
    # the verdict, and the message, come from the API server.
    assert result.returncode != 0, f"{manifest.name} was accepted"
    for fragment in _expected_fragments(manifest):
        assert fragment in result.stderr, f"{manifest.name}: {fragment!r} not in {result.stderr!r}"


@pytest.mark.parametrize(
    ("manifest", "patch", "message"),
    [
        (
            "trainjob.yaml",
            '{"spec": {"output": {"path": "pvc://models/elsewhere"}}}',
            "spec.output.path is immutable",
        ),
        ("renderjob.yaml", '{"spec": {"shards": 8}}', "spec.shards is immutable"),
    ],
    ids=["output-path", "shards"],
)
def test_immutable_fields_cannot_change(
    k8s_cluster: harness.Cluster,
    crds: list[Path],
    restricted_namespace: str,
    manifest: str,
    patch: str,
    message: str,
) -> None:
    path = CLUSTER_DIR / "good-manifests" / manifest
    obj = yaml.safe_load(path.read_text())
    k8s_cluster.kubectl("-n", restricted_namespace, "create", "-f", str(path), check=True)

    result = k8s_cluster.kubectl(
        "-n",
        restricted_namespace,
        "patch",
        obj["kind"].lower(),
        obj["metadata"]["name"],
        "--type=merge",
        "-p",
        patch,
    )

    assert result.returncode != 0
    assert message in result.stderr, result.stderr
