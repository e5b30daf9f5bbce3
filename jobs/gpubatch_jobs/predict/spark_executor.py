"""The executor pods' command: start Spark's executor backend as Spark's own images do.

Spark on Kubernetes creates each executor pod from the driver's pod template
(spark_k8s.py) with the argument `executor` and its settings in the
environment (SPARK_DRIVER_URL, SPARK_EXECUTOR_ID, ...); Spark's images read
them in their entrypoint script. Ours has no Spark distribution, only PySpark
(its jars) and Java: this module builds the same `java ...
KubernetesExecutorBackend` command line and execs it. It first writes the GPU
discovery script Spark's resource scheduling runs (`spark.gpuInUdf: true`):
the GPUs this container sees, as JSON.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from gpubatch_jobs.predict.spark_k8s import GPU_DISCOVERY

BACKEND = "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
DISCOVERY_SCRIPT = """#!/bin/sh
# The GPUs this container sees (the device plugin mounts only its own), as Spark's discovery JSON.
ids=$(ls /dev 2>/dev/null | sed -n 's/^nvidia\\([0-9][0-9]*\\)$/"\\1"/p' | sort -n | paste -sd, -)
echo "{\\"name\\": \\"gpu\\", \\"addresses\\": [$ids]}"
"""


def command(environ: Mapping[str, str], spark_home: Path, java_home: str) -> list[str]:
    def need(name: str) -> str:
        value = environ.get(name)
        if not value:
            raise SystemExit(f"spark executor: {name} is not set (this command runs in executor pods Spark makes)")
        return value

    numbered = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in environ.items()
                      if k.startswith("SPARK_JAVA_OPT_") and k.rsplit("_", 1)[1].isdigit())
    memory = need("SPARK_EXECUTOR_MEMORY")
    classpath = ":".join(p for p in (environ.get("SPARK_CLASSPATH"), str(spark_home / "jars" / "*")) if p)
    return [
        str(Path(java_home) / "bin" / "java"), *(v for _, v in numbered),
        f"-Xms{memory}", f"-Xmx{memory}", "-cp", classpath, BACKEND,
        "--driver-url", need("SPARK_DRIVER_URL"),
        "--executor-id", need("SPARK_EXECUTOR_ID"),
        "--cores", need("SPARK_EXECUTOR_CORES"),
        "--app-id", need("SPARK_APPLICATION_ID"),
        "--hostname", need("SPARK_EXECUTOR_POD_IP"),
        "--resourceProfileId", environ.get("SPARK_RESOURCE_PROFILE_ID", "0"),
        "--podName", need("SPARK_EXECUTOR_POD_NAME"),
    ]


def write_discovery_script(path: Path = Path(GPU_DISCOVERY)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DISCOVERY_SCRIPT)
    path.chmod(0o755)


def main() -> None:
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    write_discovery_script()
    env = {**os.environ, "SPARK_HOME": str(spark_home)}
    argv = command(env, spark_home, os.environ.get("JAVA_HOME", "/usr"))
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
