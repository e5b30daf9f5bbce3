"""Fixtures for the s3:// tests: one real SeaweedFS S3 server per session, a fresh bucket per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.s3.server import SeaweedS3, running_server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    with running_server() as server:
        yield server


@pytest.fixture
def s3_env(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> dict[str, str]:
    """The admin identity's AWS variables, set in this process too; scratch in the test's temp folder."""
    env = {**s3_server.env(), "GPUBATCH_SCRATCH": str(tmp_path) + "/scratch"}
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def bucket(s3_server: SeaweedS3) -> str:
    """A new, empty bucket (its name)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name
