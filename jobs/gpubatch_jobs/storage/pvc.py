"""The `pvc://CLAIM/sub/path` driver: a PersistentVolumeClaim mounted into the pod (or `--mount`ed
under `gpubatch run`). It is local storage: `RunContext` resolves the URL to a path under the
claim's mount, confined there in a job pod; nothing is staged or published."""

from __future__ import annotations

from gpubatch_jobs.storage.driver import Driver


class PvcDriver(Driver):
    scheme = "pvc"
    remote = False
    root_word = "claim"
    form = "pvc://CLAIM/sub/path"

    def parse(self, url: str) -> tuple[str, str]:
        """(claim, sub/path) as written: RunContext joins and confines the sub path itself."""
        claim, _, sub = url[len(self.prefix):].partition("/")
        return claim, sub
