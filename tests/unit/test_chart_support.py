"""Render the Helm chart with the cached helm binary, for the chart's unit tests.

helm is built with the test cluster's binaries (tests/cluster/k8s-binaries.sh);
rendering needs no cluster. Where it has not been built the tests skip with
the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import harness

CHART_DIR = harness.REPO_ROOT / "charts" / "gpubatch"


def helm_binary() -> Path:
    helm = harness.bin_dir() / "helm"
    if not helm.exists():
        reason = f"helm is not built ({helm}); run `bash {harness.BINARIES_SH}`"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return helm


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    home = harness.cache_root() / "helm"
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def render(*values: str, namespace: str = "gpubatch-system", release: str = "rel") -> list[dict[str, Any]]:
    """`helm template` with `--set` VALUES, as a list of objects."""
    args = [arg for value in values for arg in ("--set", value)]
    result = helm("template", release, str(CHART_DIR), "-n", namespace, *args)
    if result.returncode != 0:
        raise AssertionError(f"helm template {' '.join(args)} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [obj for obj in objects
            if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)]
