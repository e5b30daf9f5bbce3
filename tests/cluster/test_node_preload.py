"""`node.sh load-images` with no node running fills the node's image store (issue 28).

`make images` loads what it built into the test node's store while the Go
builds go on (images/build.sh), through a containerd of its own: so the first
`cluster.sh up` does not wait minutes for `docker save | ctr import`. Once an
image is unpacked its layer blobs are removed from the store (the snapshots
are what containers run from), which halves the store on disk.

Here, on a throwaway cache folder: a dockerd of this test's own, a one-layer
image under the pause image's name, `node.sh load-images`, then a containerd
on the filled store says what is in it; the host is compared before and after
(no process, mount or folder left from either daemon). That pods run from such
a store is what every tests/e2e test shows on the real node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cluster.test_dockerd_teardown import (
    DOCKERD,
    HOST_STATE,
    ROOT,
    _engine_answers,
    _unavailable,
)

NODE = ROOT / "tests" / "cluster" / "node.sh"


def _image_name(name: str) -> str:
    listing = subprocess.run(["bash", str(ROOT / "images" / "build.sh"), "--list"], capture_output=True,
                             text=True, check=True).stdout
    return dict(line.split() for line in listing.splitlines())[name]


def _ours(snapshot: str, cache: Path) -> list[str]:
    """The snapshot's lines that the two daemons of this test could leave: Docker's folders,
    cgroups and processes, anything naming the test's folder, and /run/containerd. (The test
    cluster may be up meanwhile, its pods' shims starting and stopping: not compared.)"""
    return [line for line in snapshot.splitlines()
            if "docker" in line.lower() or str(cache) in line or line.strip() == "/run/containerd"]


def test_load_images_without_a_node_fills_its_store_and_leaves_nothing_running(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        _unavailable("containerd and dockerd need root")
    for tool in ("dockerd", "docker", "containerd", "ctr", "go"):
        if not shutil.which(tool):
            _unavailable(f"{tool} is not installed (make node-deps)")
    if _engine_answers():
        pytest.skip("a Docker engine is running; this test tags an image and would change that engine's")
    # Short paths: unix socket paths are limited to 107 bytes.
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpubatch-preload-{os.getpid()}"
    cache.mkdir()
    try:
        before = subprocess.run(["bash", str(HOST_STATE), "snapshot", "/dev/stdout"], capture_output=True,
                                text=True, check=True).stdout
        rootfs = tmp_path / "rootfs"
        rootfs.mkdir()
        subprocess.run(["go", "build", "-o", str(rootfs / "pause"), str(ROOT / "images" / "pause" / "pause.go")],
                       check=True, env={**os.environ, "CGO_ENABLED": "0"})
        pause = _image_name("pause")
        script = f"""
set -euo pipefail
source {DOCKERD}
trap dockerd_down EXIT
dockerd_up {cache}/docker preload-test
tar -C {rootfs} -c pause | docker import -c 'ENTRYPOINT ["/pause"]' - {pause} >/dev/null
docker image inspect -f '{{{{.Id}}}}' {pause}
GPUBATCH_CACHE={cache} bash {NODE} load-images
"""
        load = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
        assert load.returncode == 0, load.stdout + load.stderr
        assert "loading the images into its store" in load.stderr, load.stderr
        image_id = load.stdout.split()[0]
        store = cache / "node-containerd"
        stamp = store / ".gpubatch-loaded" / pause.replace("/", "_").replace(":", "_")
        assert stamp.read_text().strip() == image_id

        # What the store holds, read by a containerd of its own (as the node's will).
        inspect = f"""
set -euo pipefail
cat >{cache}/c.toml <<EOF
version = 2
root = "{store}"
state = "{cache}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{cache}/c.sock"
[ttrpc]
  address = "{cache}/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{cache}/opt"
EOF
unshare --mount --propagation private containerd --config {cache}/c.toml >{cache}/c.log 2>&1 &
pid=$!
trap 'kill $pid; wait $pid || true' EXIT
for _ in $(seq 120); do [[ -S {cache}/c.sock ]] && break; sleep 0.25; done
c() {{ ctr --address {cache}/c.sock --namespace k8s.io "$@"; }}
target=$(c images ls | awk '$1 == "{pause}" {{ print $3 }}')
echo "TARGET $target"
echo "CHECK $(c images check "name=={pause}" | tail -n +2)"
echo "CONTENT $(c content ls -q | tr '\\n' ' ')"
echo "MANIFEST $(c content get "$target" | tr -d '\\n')"
"""
        seen = subprocess.run(["bash", "-c", inspect], capture_output=True, text=True, timeout=120)
        assert seen.returncode == 0, seen.stdout + seen.stderr + (cache / "c.log").read_text()
        said = dict(line.split(" ", 1) for line in seen.stdout.splitlines() if " " in line)
        assert said["TARGET"].startswith("sha256:"), seen.stdout
        manifest = json.loads(said["MANIFEST"])
        layers = [layer["digest"] for layer in manifest["layers"]]
        content = said["CONTENT"].split()
        assert len(layers) == 1
        # Unpacked (its snapshot is there), its layer blob gone, manifest and config kept.
        assert said["CHECK"].endswith("true"), said["CHECK"]
        assert layers[0] not in content, content
        assert said["TARGET"] in content and manifest["config"]["digest"] in content, content

        after = subprocess.run(["bash", str(HOST_STATE), "snapshot", "/dev/stdout"], capture_output=True,
                               text=True, check=True).stdout
        assert _ours(after, cache) == _ours(before, cache)
        assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("gpubatch-node-preload.*"))
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(cache)], capture_output=True)
        shutil.rmtree(cache, ignore_errors=True)
