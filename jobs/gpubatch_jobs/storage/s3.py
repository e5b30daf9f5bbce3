"""The `s3://BUCKET/KEY` driver: AWS S3 and S3-compatible servers, through pyarrow's S3FileSystem.

Credentials and endpoint are the standard AWS settings through the AWS C++
SDK's chain: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`),
`AWS_REGION`; the shared config and credentials files (`AWS_PROFILE`), web
identity (IRSA) and instance metadata. Requests are retried by the SDK
(`AwsStandardS3RetryStrategy`, `GPUBATCH_S3_RETRIES` attempts). An upload
is one PutObject or a multipart upload completed after its last part.
"""

from __future__ import annotations

import os
from typing import Any

from gpubatch_jobs.storage.arrow import ArrowStore, env_int


class S3Driver(ArrowStore):
    scheme = "s3"
    root_word = "bucket"
    form = "s3://BUCKET/KEY"
    settings_env = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                    "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
                    "GPUBATCH_S3_RETRIES")
    bad_credentials_marks = ("INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "SIGNATURE_DOES_NOT_MATCH",
                             "SignatureDoesNotMatch")
    missing_root_marks = ("NO_SUCH_BUCKET", "NoSuchBucket")
    denied_marks = ("ACCESS_DENIED", "AccessDenied", "Forbidden", "HTTP response code: 403", "HTTP status 403")
    credentials_hint = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    endpoint_hint = "AWS_ENDPOINT_URL"
    read_right = "s3:GetObject/ListBucket"
    write_right = "s3:PutObject"

    def endpoint(self) -> str:
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"

    def list_command(self, url: str) -> str:
        return f"aws s3 ls {url}"

    def make_filesystem(self) -> Any:
        from pyarrow import fs as pafs

        kwargs: dict[str, Any] = {
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=env_int("GPUBATCH_S3_RETRIES", 10)),
            "connect_timeout": 10.0,
            "request_timeout": 120.0,
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            scheme, sep, host = endpoint.partition("://")
            if sep:
                kwargs["scheme"], kwargs["endpoint_override"] = scheme, host.rstrip("/")
            else:
                kwargs["endpoint_override"] = endpoint.rstrip("/")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        elif endpoint:
            kwargs["region"] = "us-east-1"  # S3-compatible servers; avoids a region lookup
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            kwargs.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
        return pafs.S3FileSystem(**kwargs)
