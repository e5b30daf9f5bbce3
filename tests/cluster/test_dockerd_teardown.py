"""The Docker engine that `make images` starts leaves nothing behind (issue 28).

images/build.sh starts dockerd through images/dockerd.sh when none answers and
stops it at exit. On a host where Docker never ran, dockerd makes /run/docker,
/etc/docker/key.json and docker cgroups outside the folders it is told to use;
a fresh CI machine then failed the host-state check after 671 passing tests.
This test takes the host-state snapshot with none of those present (moving a
leftover /run/docker aside for the duration), runs the same start/stop with a
real container in between, and compares what the snapshots say about Docker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST_STATE = ROOT / "tests" / "cluster" / "host-state.sh"
DOCKERD = ROOT / "images" / "dockerd.sh"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def _docker_lines(snapshot: Path) -> list[str]:
    """The snapshot's lines about Docker: its folders, files, cgroups, mounts and processes."""
    return [line for line in snapshot.read_text().splitlines() if "docker" in line.lower()]


def _engine_answers() -> bool:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(["docker", "info"], capture_output=True, env=env).returncode == 0


@pytest.fixture
def no_docker_leftovers(tmp_path: Path):
    """The host as a machine where Docker never ran: leftovers moved aside, restored after."""
    if os.geteuid() != 0:
        _unavailable("starting dockerd needs root")
    if not shutil.which("dockerd") or not shutil.which("docker"):
        _unavailable("dockerd is not installed (make node-deps)")
    if _engine_answers():
        pytest.skip("a Docker engine is already running; dockerd.sh would use it and start nothing")
    aside: list[tuple[Path, Path]] = []
    for path in (Path("/run/docker"), Path("/etc/docker")):
        if path.exists():
            moved = path.with_name(path.name + ".gpubatch-test-aside")
            path.rename(moved)
            aside.append((path, moved))
    try:
        yield tmp_path
    finally:
        for path, moved in aside:
            if path.exists():
                shutil.rmtree(path)
            moved.rename(path)


def test_engine_start_stop_leaves_host_as_it_was(no_docker_leftovers: Path) -> None:
    tmp = no_docker_leftovers
    before = tmp / "before.txt"
    subprocess.run(["bash", str(HOST_STATE), "snapshot", str(before)], check=True)
    shim_dir_before = Path("/run/containerd/s").exists()
    assert "/run/docker\n" not in before.read_text()

    # A static binary to run as a real container (so dockerd makes its cgroups too).
    binary = tmp / "rootfs" / "pause"
    binary.parent.mkdir()
    subprocess.run(
        ["go", "build", "-o", str(binary), str(ROOT / "images" / "pause" / "pause.go")],
        check=True,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    script = f"""
set -euo pipefail
source {DOCKERD}
trap dockerd_down EXIT
dockerd_up {tmp}/docker-state teardown-test
test -d /run/docker
tar -C {binary.parent} -c pause | docker import -c 'ENTRYPOINT ["/pause"]' - gpubatch.test/pause:1 >/dev/null
id=$(docker run -d --network none gpubatch.test/pause:1)
test "$(docker inspect -f '{{{{.State.Running}}}}' "$id")" = true
docker rm -f "$id" >/dev/null
"""
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr

    after = tmp / "after.txt"
    subprocess.run(["bash", str(HOST_STATE), "snapshot", str(after)], check=True)
    # The shim sockets' folder goes too, also when /run/containerd was there before (the test
    # node's mount point while it runs): else the node's `down` cannot remove /run/containerd.
    assert shim_dir_before or not Path("/run/containerd/s").exists()
    # Only what Docker owns is compared: the test cluster may be up meanwhile, its
    # pods starting and stopping (their processes are in the snapshot too).
    assert _docker_lines(after) == _docker_lines(before)
    # The images stay in the state folder (the build cache), nothing else does.
    assert (tmp / "docker-state" / "data").is_dir()
    assert not (tmp / "docker-state" / "run").exists()
