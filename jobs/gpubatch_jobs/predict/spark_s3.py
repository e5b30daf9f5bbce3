"""s3:// for Spark's own readers and writers: Hadoop's s3a:// connector, set from the AWS_* environment.

With executor pods (spark_k8s.py) the executors read the input and write
their part files themselves, so an s3:// path cannot be staged by the
driver alone. They go through `s3a://` (hadoop-aws and the AWS SDK v2
modules it needs, which the images put in GPUBATCH_SPARK_JARS: see
images/spark-jars/pom.xml), set from the same variables the local engine's
S3 client reads (storage.py): AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL,
AWS_REGION or AWS_DEFAULT_REGION, and the credentials. Only where the
server is goes into Spark's configuration; the keys stay in the
environment, where s3a's environment credential provider reads them: the
executor pods get them as the driver pod does, by `secretKeyRef` to the
Secret named in spec.storage.secretName (spark_k8s.executor_template), never
as values in a pod spec or in Spark's configuration.

Spark writes its part files under a `.partial` prefix beside the output
(a `.partial` name: storage.py's listings skip it); the driver reads them back with the local engine's S3
client, writes the one result file and uploads it whole to its final key
(storage.Place.push), then deletes the prefix: the final key only ever holds
a complete file, as with the local engine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.storage import object_store, scheme_of, store_of

log = logging.getLogger("gpubatch.predict")
ENV_SPARK_JARS = "GPUBATCH_SPARK_JARS"
# The variables the executor pods take from the driver pod's Secret references (storage.py reads the same).
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
          "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
ENV_CREDENTIALS = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"



def is_s3(url: str) -> bool:
    """Spark reads object storage through Hadoop's s3a connector: s3:// is the one scheme it maps."""
    return scheme_of(str(url)) == "s3"

def s3a_url(url: str) -> str:
    """s3://BUCKET/KEY as Hadoop's s3a://BUCKET/KEY (anything else is returned as it is)."""
    if not is_s3(url):
        return url
    bucket, key = store_of(url).parse(url)
    return f"s3a://{bucket}/{key}" if key else f"s3a://{bucket}/"


def s3a_conf(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Spark settings (spark.hadoop.fs.s3a.*) for the S3 server the AWS_* environment names; no secret."""
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    conf = {
        "spark.hadoop.fs.s3a.retry.limit": environ.get("GPUBATCH_S3_RETRIES", "10"),
        "spark.hadoop.fs.s3a.attempts.maximum": environ.get("GPUBATCH_S3_RETRIES", "10"),
    }
    if endpoint:
        endpoint = endpoint.rstrip("/")
        if "://" not in endpoint:
            endpoint = f"https://{endpoint}"
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https://")).lower()
        # S3-compatible servers (SeaweedFS, MinIO, Ceph) are addressed by path, as the local engine's
        # client does; AWS's own endpoint keeps virtual-host addressing.
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    conf["spark.hadoop.fs.s3a.endpoint.region"] = region or "us-east-1"
    if environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        # The keys (and AWS_SESSION_TOKEN) are read from each JVM's own environment.
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = ENV_CREDENTIALS
    return conf


def jars_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The folder of the s3a jars (GPUBATCH_SPARK_JARS, set in the images), or None without one."""
    folder = environ.get(ENV_SPARK_JARS)
    if not folder or not any(Path(folder).glob("hadoop-aws-*.jar")):
        return None
    return Path(folder)


def classpath_conf(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The s3a jars on the driver's and the executors' class path (none without GPUBATCH_SPARK_JARS)."""
    folder = jars_dir(environ)
    if folder is None:
        return {}
    jars = f"{folder}/*"
    return {"spark.driver.extraClassPath": jars, "spark.executor.extraClassPath": jars}


def check_executor_access(paths: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> None:
    """Executor pods read s3:// with the Secret's keys: refuse at once what they could not read."""
    for field, path in paths.items():
        store = object_store(path)
        if store is not None and not is_s3(path):
            raise BadInput(f"{path}: {store.prefix} paths work with engine spark on the pod's own Spark (no "
                           "executors, master local) but not with executor pods, which read object storage through "
                           "Hadoop's s3a connector (s3:// only); use an s3:// or pvc:// path, or run Spark in the "
                           "pod (unset spark.executors and spark.master)", field=field)
    fields = [field for field, path in paths.items() if is_s3(path)]
    if not fields:
        return
    if not (environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY")):
        raise BadInput(f"{fields[0]} is an s3:// path and the executor pods read it with the keys of the Secret "
                       "named in spec.storage.secretName (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), but this pod "
                       "has none (workload identity does not reach executor pods); set spec.storage.secretName, "
                       "or run Spark in the pod (unset spark.executors and spark.master)",
                       field="spec.storage.secretName")
    if jars_dir(environ) is None:
        raise BadInput(f"{fields[0]} is an s3:// path, which executor pods read through Hadoop's s3a connector, "
                       f"but this image has no s3a jars ({ENV_SPARK_JARS}); use a gpubatch job image "
                       "(spec.image) or run Spark in the pod (unset spark.executors and spark.master)",
                       field="spec.image")


def read_parts(location: str | Path) -> Any:
    """Spark's part files under `location` (a folder, or an s3:// prefix) as one Arrow table."""
    import pyarrow.parquet as pq

    if not is_s3(str(location)):
        return pq.read_table(location)
    store = store_of(str(location))
    bucket, key = store.parse(str(location))
    return pq.read_table(f"{bucket}/{key.rstrip('/')}", filesystem=store.filesystem())  # type: ignore[attr-defined]


def remove_parts(location: str) -> None:
    """Delete every object under the s3:// prefix `location` (the part files, Hadoop's _SUCCESS).

    Called on the way out, also after a failure: a failed cleanup is logged, not raised over the
    job's own outcome (what is left is under a `.partial` name, which readers skip)."""
    from gpubatch_jobs import storage

    try:
        storage.delete_prefix(location.rstrip("/"))
    except Exception as err:  # noqa: BLE001 - never hide the job's own error or result
        log.warning("could not delete Spark's part files under %s: %s", location, err)
