"""What `gpubatch run --workers N` hands its N worker processes (gpubatch_jobs/workers.py).

The supervisor starts each worker as `gpubatch run FILE ...` again: options that say where the job's
files are (`--mount`, `--base-dir`) must reach every worker, and `--progress-file` (how
`Client(local=True)` follows a job) worker 0, whose progress is the group's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from gpubatch_jobs import cli, workers

MANIFEST = """\
apiVersion: gpubatch.dev/v1alpha1
kind: TrainJob
metadata:
  name: group
spec:
  device: {policy: cpu}
  model: {type: dnn, hiddenUnits: [8]}
  epochs: 1
  input: {path: data/rows.parquet}
  output: {path: out/group}
"""


def test_every_worker_gets_the_files_options_and_worker_0_the_progress_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(MANIFEST)
    started: list[list[str]] = []

    class Exited:
        """A worker that has already exited 0 with no output."""

        def __init__(self, command: list[str], **_: Any) -> None:
            started.append(command)
            self.returncode = 0

        def poll(self) -> int:
            return 0

        def wait(self, timeout: float | None = None) -> int:
            return 0

    monkeypatch.setattr(workers.subprocess, "Popen", Exited)
    progress, base = tmp_path / "progress.json", tmp_path / "base"
    cli.main(["run", "-q", str(manifest), "--workers", "2", "--mount", f"data={tmp_path}",
              "--base-dir", str(base), "--progress-file", str(progress), "--device", "cpu"])
    assert len(started) == 2, started
    for index, command in enumerate(started):
        assert command[:4] == [sys.executable, "-m", "gpubatch_jobs.cli", "run"], command
        assert f"--mount=data={tmp_path}" in command and command[command.index("--base-dir") + 1] == str(base)
        assert ("--progress-file" in command) == (index == 0), command
    assert started[0][started[0].index("--progress-file") + 1] == str(progress)
