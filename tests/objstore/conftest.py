"""Fixtures of the scheme-parametrized object-storage tests: one real server per scheme and
session (started on first use), a fresh bucket or container per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.objstore.servers import SCHEMES, ObjectServer, running

_CLOUD_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
              "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
              "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT",
              "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
              "AZURE_STORAGE_SAS_TOKEN")


@pytest.fixture(scope="session", params=SCHEMES)
def store(request: pytest.FixtureRequest) -> Iterator[ObjectServer]:
    """A real server of one scheme (tests run once per scheme; pin one with
    `@pytest.mark.parametrize("store", ["s3"], indirect=True)`)."""
    with running(request.param) as server:
        yield server


@pytest.fixture
def store_env(store: ObjectServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The server's usual variables, set in this process too (and no other cloud's); scratch in the
    test's temp folder."""
    env = {**store.env(), "GPUBATCH_SCRATCH": str(tmp_path / "scratch")}
    for key in _CLOUD_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def bucket(store: ObjectServer) -> str:
    """A new, empty bucket or container (its name)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    store.create_bucket(name)
    return name
