"""s3:// for Spark with executor pods (spark_s3.py): the s3a:// mapping, the Spark settings made from
the AWS_* environment (never a key), the jars on the class path, the executors' Secret references,
and the refusals that name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.predict.spark_k8s import executor_template
from gpubatch_jobs.predict.spark_s3 import (
    ENV_CREDENTIALS,
    check_executor_access,
    classpath_conf,
    s3a_conf,
    s3a_url,
)
from gpubatch_jobs.predict.spark_session import spark_conf
from gpubatch_jobs.spec.kinds import SparkSpec, spark_conf_refused

KEY, SECRET, TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI-not-a-real-secret", "session-token-value"


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://bucket-a/data/rows.parquet", "s3a://bucket-a/data/rows.parquet"),
    ("s3://bucket-a/out/.p.parquet.partial-7.spark", "s3a://bucket-a/out/.p.parquet.partial-7.spark"),
    ("s3://bucket-a/models/rnn/", "s3a://bucket-a/models/rnn"),
    ("s3://bucket-a", "s3a://bucket-a/"),
    ("s3://my.bucket-1/a b/c", "s3a://my.bucket-1/a b/c"),
    ("/data/rows.parquet", "/data/rows.parquet"),
    ("pvc://data/rows.parquet", "pvc://data/rows.parquet"),
    ("s3a://bucket-a/x", "s3a://bucket-a/x"),
])
def test_s3_urls_become_s3a_urls(url: str, expected: str) -> None:
    assert s3a_url(url) == expected


@pytest.mark.parametrize(("env", "expected", "absent"), [
    # an S3-compatible server on plain HTTP: by path, no TLS, the region given
    ({"AWS_ENDPOINT_URL": "http://10.87.0.1:8333", "AWS_REGION": "eu-west-3"},
     {"spark.hadoop.fs.s3a.endpoint": "http://10.87.0.1:8333", "spark.hadoop.fs.s3a.path.style.access": "true",
      "spark.hadoop.fs.s3a.connection.ssl.enabled": "false", "spark.hadoop.fs.s3a.endpoint.region": "eu-west-3"},
     ()),
    # the S3-only variable wins over the general one, as in storage.py; a host alone is HTTPS
    ({"AWS_ENDPOINT_URL": "http://elsewhere:1", "AWS_ENDPOINT_URL_S3": "s3.example.test/",
      "AWS_DEFAULT_REGION": "ap-south-1"},
     {"spark.hadoop.fs.s3a.endpoint": "https://s3.example.test", "spark.hadoop.fs.s3a.connection.ssl.enabled": "true",
      "spark.hadoop.fs.s3a.endpoint.region": "ap-south-1"},
     ()),
    # AWS itself: no endpoint, virtual-host addressing, the region
    ({"AWS_REGION": "us-west-2"}, {"spark.hadoop.fs.s3a.endpoint.region": "us-west-2"},
     ("spark.hadoop.fs.s3a.endpoint", "spark.hadoop.fs.s3a.path.style.access")),
    # no region: us-east-1, as the local engine's client assumes for S3-compatible servers
    ({"AWS_ENDPOINT_URL": "https://minio.local:9000"}, {"spark.hadoop.fs.s3a.endpoint.region": "us-east-1"}, ()),
    ({"GPUBATCH_S3_RETRIES": "4"}, {"spark.hadoop.fs.s3a.retry.limit": "4"}, ()),
])
def test_s3a_settings_come_from_the_aws_environment(env: dict[str, str], expected: dict[str, str],
                                                    absent: tuple[str, ...]) -> None:
    conf = s3a_conf(env)
    assert {key: conf.get(key) for key in expected} == expected
    assert not [key for key in absent if key in conf]
    assert all(key.startswith("spark.hadoop.fs.s3a.") for key in conf)
    assert all(spark_conf_refused(key) for key in conf)  # a tenant may not set them


def test_credentials_are_read_from_the_environment_never_written_in_the_settings() -> None:
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
           "AWS_ENDPOINT_URL": "http://127.0.0.1:8333"}
    conf = s3a_conf(env)
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"] == ENV_CREDENTIALS
    assert not [value for value in conf.values() if KEY in value or SECRET in value or TOKEN in value]
    # without keys (workload identity on the driver), s3a's own provider chain is left alone
    assert "spark.hadoop.fs.s3a.aws.credentials.provider" not in s3a_conf({"AWS_REGION": "us-east-1"})


def test_the_s3a_jars_go_on_the_driver_and_executor_class_path(tmp_path: Path) -> None:
    assert classpath_conf({}) == {}
    assert classpath_conf({"GPUBATCH_SPARK_JARS": str(tmp_path)}) == {}  # a folder without hadoop-aws
    (tmp_path / "hadoop-aws-3.5.0.jar").write_bytes(b"PK")
    conf = classpath_conf({"GPUBATCH_SPARK_JARS": str(tmp_path)})
    assert conf == {"spark.driver.extraClassPath": f"{tmp_path}/*", "spark.executor.extraClassPath": f"{tmp_path}/*"}


def test_the_engines_s3a_settings_win_over_a_tenants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.87.0.1:8333")
    spark = SparkSpec.model_construct(conf={"spark.hadoop.fs.s3a.endpoint": "http://attacker.example:80"})
    conf = spark_conf(spark, app="a", backend="tensorflow", partitions=2)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://10.87.0.1:8333"
    with pytest.raises(ValueError, match="spark.hadoop.fs.s3a.endpoint"):
        SparkSpec.model_validate({"conf": {"spark.hadoop.fs.s3a.endpoint": "http://attacker.example:80"}})


def _secret_ref(name: str, secret: str = "s3-creds", optional: bool = False) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name, "optional": optional}}}


def test_executor_pods_get_the_storage_secret_by_reference_only() -> None:
    storage = [_secret_ref("AWS_ACCESS_KEY_ID"), _secret_ref("AWS_SECRET_ACCESS_KEY"),
               _secret_ref("AWS_SESSION_TOKEN", optional=True), _secret_ref("AWS_ENDPOINT_URL", optional=True),
               _secret_ref("AWS_REGION", optional=True)]
    driver = {"metadata": {"name": "p", "namespace": "team-a"},
              "spec": {"containers": [{"name": "main", "image": "gpubatch/gpubatch-cpu:t", "env": [
                  {"name": "GPUBATCH_SPEC", "value": "{}"}, {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"},
                  *storage,
                  _secret_ref("OTHER_TOKEN", secret="not-for-executors"),
                  {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                  {"name": "AWS_PROFILE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}]}}
    env = executor_template(driver)["spec"]["containers"][0]["env"]
    assert env == [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}, *storage]
    assert not [e for e in env if e["name"].startswith("AWS_") and "value" in e]


@pytest.mark.parametrize("field", ["spec.input.path", "spec.model", "spec.output.path"])
def test_s3_with_executor_pods_needs_the_secrets_keys(field: str, tmp_path: Path) -> None:
    paths = {"spec.input.path": "/data/rows.parquet", "spec.model": "/models/rnn", "spec.output.path": "/out/p.parquet"}
    paths[field] = "s3://bucket-a/x"
    with pytest.raises(BadInput, match="spec.storage.secretName") as err:
        check_executor_access(paths, {"AWS_REGION": "us-east-1"})
    assert field in str(err.value)
    keys = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    with pytest.raises(BadInput, match="spec.image") as err:
        check_executor_access(paths, keys)  # an image without the s3a jars
    assert "s3a" in str(err.value)
    (tmp_path / "hadoop-aws-3.5.0.jar").write_bytes(b"PK")
    check_executor_access(paths, {**keys, "GPUBATCH_SPARK_JARS": str(tmp_path)})
    check_executor_access({"spec.input.path": "pvc://data/x", "spec.model": "/m", "spec.output.path": "/o"}, {})
