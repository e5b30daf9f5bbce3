"""Run docs/install.md's Argo CD health checks as Argo CD runs them: Lua in gopher-lua.

`main.go` here is a tiny program on github.com/yuin/gopher-lua (the Lua
interpreter Argo CD embeds), built once with the Go toolchain from the module
proxy into ~/.cache/gpubatch; `evaluate()` feeds it resources and returns
what each script returned ({"status", "message"}).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import harness

HERE = Path(__file__).resolve().parent
DOC = harness.REPO_ROOT / "docs" / "install.md"
KEY = "resource.customizations.health.gpubatch.dev_{kind}"


def scripts() -> dict[str, str]:
    """{kind: Lua} from the argocd-cm ConfigMap in docs/install.md."""
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S):
        for doc in yaml.safe_load_all(block):
            if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "argocd-cm":
                return {key.rsplit("_", 1)[1]: text for key, text in doc["data"].items()
                        if key.startswith("resource.customizations.health.gpubatch.dev_")}
    raise AssertionError(f"{DOC}: no argocd-cm ConfigMap with health checks")


def binary() -> Path:
    """The built checker (skips without Go, fails under CI=true)."""
    go = shutil.which("go")
    if go is None:
        reason = "the Go toolchain is not installed (needed to build tests/argocd/main.go with gopher-lua)"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    digest = hashlib.sha256(b"".join((HERE / n).read_bytes() for n in ("main.go", "go.mod", "go.sum"))).hexdigest()
    target = harness.cache_root() / f"argocd-health-{digest[:16]}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        subprocess.run([go, "build", "-mod=mod", "-o", str(partial), "."], cwd=HERE, check=True, timeout=600,
                       capture_output=True)
        os.replace(partial, target)
    return target


def evaluate(kind: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Argo CD's health check for `kind` says of each resource."""
    checker = binary()
    with tempfile.TemporaryDirectory(prefix="argocd-health-") as folder:
        script = Path(folder) / f"{kind}.lua"
        script.write_text(scripts()[kind])
        done = subprocess.run([str(checker), str(script)], input="".join(json.dumps(o) + "\n" for o in objects),
                              capture_output=True, text=True, check=True, timeout=60)
    return [json.loads(line) for line in done.stdout.splitlines()]
