"""The `gs://BUCKET/OBJECT` driver: Google Cloud Storage, through pyarrow's GcsFileSystem.

Credentials are Google's usual chain (google-cloud-cpp): the service-account
or user JSON named by `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata
server (GKE Workload Identity). `STORAGE_EMULATOR_HOST` (`host:port` or
`http://host:port`, as the Google client libraries read it) sends requests
to an emulator without credentials. A publish is one resumable upload,
finalized after its last byte: a killed one leaves no object.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from gpubatch_jobs import contract
from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.storage.arrow import ArrowStore, env_int

CREDENTIALS_ENV = contract.GOOGLE_APPLICATION_CREDENTIALS
EMULATOR_ENV = contract.STORAGE_EMULATOR_HOST


class GcsDriver(ArrowStore):
    scheme = "gs"
    root_word = "bucket"
    form = "gs://BUCKET/OBJECT"
    settings_env = (CREDENTIALS_ENV, EMULATOR_ENV, "GOOGLE_CLOUD_PROJECT", "GPUBATCH_GCS_RETRY_S")
    bad_credentials_marks = ("UNAUTHENTICATED", "invalid_grant", "Invalid JWT", "invalid_client")
    missing_root_marks = ("The specified bucket does not exist", "bucket does not exist", "Bucket not found")
    denied_marks = ("PERMISSION_DENIED", "does not have storage.", "HTTP status code: 403")
    credentials_hint = f"{CREDENTIALS_ENV} (the service-account JSON file it names)"
    endpoint_hint = EMULATOR_ENV
    read_right = "roles/storage.objectViewer"
    write_right = "roles/storage.objectUser"
    # Larger writes into the resumable upload: 8 MB writes ran at half the rate of one large write
    # against the test server (bench/storage.py).
    upload_chunk = 64 << 20

    def endpoint(self) -> str:
        return os.environ.get(EMULATOR_ENV) or "Google Cloud Storage"

    def list_command(self, url: str) -> str:
        return f"gcloud storage ls {url}"

    def make_filesystem(self) -> Any:
        from pyarrow import fs as pafs

        kwargs: dict[str, Any] = {
            # google-cloud-cpp retries transient errors for up to 15 minutes by default; the driver's
            # own retry loop (backing off, then a clear message) takes over sooner.
            "retry_time_limit": datetime.timedelta(seconds=env_int("GPUBATCH_GCS_RETRY_S", 60)),
        }
        self._check_credentials_file()
        emulator = os.environ.get(EMULATOR_ENV)
        if emulator:
            scheme, sep, host = emulator.partition("://")
            kwargs.update(anonymous=True, scheme=scheme if sep else "http",
                          endpoint_override=(host if sep else emulator).rstrip("/"))
        if os.environ.get("GOOGLE_CLOUD_PROJECT"):
            kwargs["project_id"] = os.environ["GOOGLE_CLOUD_PROJECT"]
        return pafs.GcsFileSystem(**kwargs)

    @staticmethod
    def _check_credentials_file() -> None:
        """A wrong GOOGLE_APPLICATION_CREDENTIALS is named at once, not as an SDK error mid-transfer."""
        path = os.environ.get(CREDENTIALS_ENV)
        if not path:
            return
        fix = f"set {CREDENTIALS_ENV} to a service-account JSON key file (in a pod: the Secret named by " \
              "spec.storage.secretName, key " \
              f"{contract.GCS_CREDENTIALS_KEY})"
        try:
            data = json.loads(open(path, encoding="utf-8").read())
        except OSError as err:
            raise BadInput(f"{CREDENTIALS_ENV}={path}: cannot read it ({err.strerror}); {fix}") from err
        except ValueError as err:
            raise BadInput(f"{CREDENTIALS_ENV}={path}: not JSON ({err}); {fix}") from err
        if not isinstance(data, dict) or "type" not in data:
            raise BadInput(f"{CREDENTIALS_ENV}={path}: not a Google credentials file (no \"type\"); {fix}")
