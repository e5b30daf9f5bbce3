"""The manifests in docs/install.md are valid: users copy them as they are.

Every YAML block parses; gpubatch jobs validate against the API models; the
chart values in the Argo CD Application and the Flux HelmRelease pass the
chart's schema and render; the three Argo CD health checks are one script.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpubatch_jobs.kinds import KINDS
from tests.unit.test_chart_support import CHART_DIR, helm

DOC = Path(__file__).resolve().parents[2] / "docs" / "install.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
DOCUMENTS = [doc for block in BLOCKS for doc in yaml.safe_load_all(block) if doc]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in DOCUMENTS if doc.get("kind") == kind]


def test_the_doc_has_every_manifest_it_promises() -> None:
    kinds = {doc["kind"] for doc in DOCUMENTS}
    assert {"Application", "ConfigMap", "GitRepository", "HelmRelease", "ResourceFlavor", "ClusterQueue",
            "LocalQueue", "TrainJob"} <= kinds


def test_gpubatch_jobs_validate() -> None:
    jobs = [doc for doc in DOCUMENTS if doc["kind"] in KINDS]
    assert jobs
    for doc in jobs:
        KINDS[doc["kind"]].model.model_validate(doc)


def test_the_queued_job_points_at_the_local_queue() -> None:
    (queue,) = by_kind("LocalQueue")
    (job,) = by_kind("TrainJob")
    assert job["spec"]["queueName"] == queue["metadata"]["name"]
    assert "namespace" not in queue["metadata"]  # applied with -n into each team's namespace
    (cluster_queue,) = by_kind("ClusterQueue")
    assert queue["spec"]["clusterQueue"] == cluster_queue["metadata"]["name"]
    covered = cluster_queue["spec"]["resourceGroups"][0]["coveredResources"]
    assert "nvidia.com/gpu" in covered


def test_the_kueue_queues_block_is_the_file_the_e2e_tests_apply() -> None:
    """docs/kueue/queues.yaml is what tests/e2e/test_kueue.py applies; the doc shows it verbatim."""
    queues = (DOC.parent / "kueue" / "queues.yaml").read_text()
    assert f"```yaml\n{queues}```" in DOC.read_text()


@pytest.mark.parametrize("values", [
    by_kind("Application")[0]["spec"]["source"]["helm"]["valuesObject"],
    by_kind("HelmRelease")[0]["spec"]["values"],
], ids=["argocd", "flux"])
def test_gitops_values_pass_the_chart_schema(values: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm("template", "gpubatch", str(CHART_DIR), "-f", str(path))
    assert result.returncode == 0, result.stderr


def test_gitops_sources_point_at_the_chart() -> None:
    assert by_kind("Application")[0]["spec"]["source"]["path"] == "charts/gpubatch"
    assert by_kind("HelmRelease")[0]["spec"]["chart"]["spec"]["chart"] == "./charts/gpubatch"


def test_argocd_health_checks_cover_the_three_kinds_alike() -> None:
    (config,) = by_kind("ConfigMap")
    checks = {key.rsplit("_", 1)[1]: script for key, script in config["data"].items()
              if key.startswith("resource.customizations.health.gpubatch.dev_")}
    assert set(checks) == set(KINDS)
    assert len(set(checks.values())) == 1
    script = next(iter(checks.values()))
    for phase, health in (("Succeeded", "Healthy"), ("Failed", "Degraded")):
        assert re.search(rf'phase == "{phase}" then\s+hs.status = "{health}"', script), (phase, health)
    assert 'status = "Progressing"' in script
