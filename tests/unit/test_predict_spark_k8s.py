"""Spark on Kubernetes (spark_k8s.py, spark_executor.py): the driver's settings, the executor
pod template, the executors' command line, and the operator's side (identity, POD_IP)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gpubatch_jobs.errors import BadInput
from gpubatch_jobs.kinds import find
from gpubatch_jobs.predict.spark_executor import DISCOVERY_SCRIPT, command
from gpubatch_jobs.predict.spark_k8s import executor_template, kubernetes_conf, master_url
from gpubatch_jobs.predict.spark_session import spark_conf
from gpubatch_jobs.spec.kinds import SparkSpec
from gpubatch_operator.builders.rbac import SPARK_DRIVER_RULES
from tests.operator.helpers import make_job

ENV = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443", "POD_IP": "10.88.0.7"}
TOKEN_MOUNT = {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
DRIVER = {
    "metadata": {"name": "p-predict-abcde", "namespace": "team-a"},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": {"kubernetes.io/hostname": "real-0"},
        "containers": [{
            "name": "main", "image": "gpubatch/gpubatch-cpu:t", "imagePullPolicy": "Never",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": True},
            "env": [{"name": "GPUBATCH_SPEC", "value": "{}"}, {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "pvc-data", "mountPath": "/data"},
                             TOKEN_MOUNT],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "pvc-data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "kube-api-access-x", "projected": {"sources": []}}],
    },
}


@pytest.mark.parametrize(("spark", "on"), [
    ({}, False), ({"master": "local[2]"}, False), ({"master": "local[2]", "executors": 3}, False),
    ({"master": "k8s://https://kubernetes.default.svc"}, True), ({"executors": 2}, True),
])
def test_which_specs_have_executor_pods(spark: dict, on: bool) -> None:
    assert SparkSpec.model_validate(spark).on_kubernetes is on


def test_executors_alone_mean_the_in_cluster_api_server() -> None:
    assert master_url(SparkSpec.model_validate({"executors": 2}), ENV) == "k8s://https://10.0.0.1:443"
    # The one k8s:// master a spec may name is the cluster's own API server, reached by its address.
    explicit = SparkSpec.model_validate({"master": "k8s://https://kubernetes.default.svc:443", "executors": 2})
    assert master_url(explicit, ENV) == "k8s://https://10.0.0.1:443"
    with pytest.raises(BadInput, match="spec.spark.master"):
        master_url(SparkSpec.model_validate({"executors": 2}), {})


def test_the_driver_settings(tmp_path: Path) -> None:
    spark = SparkSpec.model_validate({"executors": 2, "gpuInUdf": True})
    conf = kubernetes_conf(spark, template_dir=tmp_path, environ=ENV, driver=DRIVER)
    assert conf["spark.master"] == "k8s://https://10.0.0.1:443"
    assert conf["spark.submit.deployMode"] == "client"
    assert conf["spark.driver.host"] == "10.88.0.7" and "spark.driver.bindAddress" not in conf
    assert conf["spark.kubernetes.driver.pod.name"] == "p-predict-abcde"  # the executors' owner
    assert conf["spark.kubernetes.namespace"] == "team-a"
    assert conf["spark.kubernetes.container.image"] == "gpubatch/gpubatch-cpu:t"
    assert conf["spark.executor.instances"] == "2"
    assert conf["spark.kubernetes.driver.reusePersistentVolumeClaim"] == "false"
    assert conf["spark.executor.resource.gpu.vendor"] == "nvidia.com"
    template = json.loads(Path(conf["spark.kubernetes.executor.podTemplateFile"]).read_text())
    assert template == executor_template(DRIVER)
    # The engine's settings win over the tenant's conf (whose own keys of ours are refused at admission).
    spark = SparkSpec.model_construct(executors=2, conf={"spark.driver.port": "9000"}, master=None,
                                      gpu_in_udf=False, partitions=None)
    merged = spark_conf(spark, app="a", backend="tensorflow", partitions=2, cluster=conf)
    assert merged["spark.driver.port"] == conf["spark.driver.port"] and merged["spark.master"] == conf["spark.master"]
    assert merged["spark.authenticate"] == "true"


def test_the_driver_needs_its_pod_ip(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="POD_IP"):
        kubernetes_conf(SparkSpec.model_validate({"executors": 2}), template_dir=tmp_path,
                        environ={k: v for k, v in ENV.items() if k != "POD_IP"}, driver=DRIVER)


def test_executor_template_keeps_security_and_volumes_but_no_token() -> None:
    template = executor_template(DRIVER)
    spec = template["spec"]
    (container,) = spec["containers"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == DRIVER["spec"]["securityContext"]
    assert spec["nodeSelector"] == DRIVER["spec"]["nodeSelector"]
    assert container["securityContext"] == DRIVER["spec"]["containers"][0]["securityContext"]
    assert container["image"] == "gpubatch/gpubatch-cpu:t" and container["imagePullPolicy"] == "Never"
    assert container["command"][1:] == ["-m", "gpubatch_jobs.predict.spark_executor"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp", "/data"]
    assert [v["name"] for v in spec["volumes"]] == ["tmp", "pvc-data"]
    assert container["env"] == [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]


def test_executor_command_line() -> None:
    env = {"SPARK_EXECUTOR_MEMORY": "512m", "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.88.0.7:7078",
           "SPARK_EXECUTOR_ID": "3", "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": "spark-app",
           "SPARK_EXECUTOR_POD_IP": "10.88.0.9", "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": "x-exec-3",
           "SPARK_JAVA_OPT_10": "-Dlast", "SPARK_JAVA_OPT_2": "-Dsecond", "SPARK_JAVA_OPT_0": "-Dfirst"}
    argv = command(env, Path("/py/pyspark"), "/jvm")
    assert argv[:6] == ["/jvm/bin/java", "-Dfirst", "-Dsecond", "-Dlast", "-Xms512m", "-Xmx512m"]
    assert argv[argv.index("-cp") + 1] == "/py/pyspark/jars/*"
    assert argv[argv.index("--executor-id") + 1] == "3" and argv[argv.index("--hostname") + 1] == "10.88.0.9"
    with pytest.raises(SystemExit, match="SPARK_DRIVER_URL"):
        command({k: v for k, v in env.items() if k != "SPARK_DRIVER_URL"}, Path("/p"), "/jvm")


def test_gpu_discovery_script_prints_spark_json(tmp_path: Path) -> None:
    out = subprocess.run(["sh", "-c", DISCOVERY_SCRIPT], capture_output=True, text=True, check=True).stdout
    body = json.loads(out)
    assert body["name"] == "gpu" and isinstance(body["addresses"], list)


def test_operator_gives_a_spark_driver_its_own_identity_and_ip() -> None:
    job = make_job("p", "PredictJob").set(engine="spark", spark={"executors": 2}).obj()
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gpubatch-spark-driver"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    local = make_job("p", "PredictJob").set(engine="spark", spark={"master": "local[2]"}).obj()
    assert local["spec"]["template"]["spec"]["serviceAccountName"] == "gpubatch-job"
    assert "POD_IP" not in {e["name"] for e in local["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_spark_driver_rules_are_exactly_what_spark_needs() -> None:
    rules = {(r["resources"][0]): set(r["verbs"]) for r in SPARK_DRIVER_RULES}
    assert rules == {"pods": {"get", "list", "watch", "create", "delete", "patch"},
                     "configmaps": {"get", "list", "create", "delete"}}
    spec = make_job("p", "PredictJob").set(engine="spark", spark={"executors": 2}).request().spec
    assert find("PredictJob").is_spark_driver(spec)


@pytest.mark.parametrize("master", ["k8s://https://attacker.example:6443", "k8s://https://10.0.0.9:443",
                                    "spark://elsewhere:7077", "local[2]; rm", "k8s://https://kubernetes.default.svc.evil"])
def test_a_master_elsewhere_is_refused(master: str) -> None:
    with pytest.raises(ValueError, match="master"):
        SparkSpec.model_validate({"master": master})


@pytest.mark.parametrize("key", ["spark.master", "spark.kubernetes.executor.podTemplateFile",
                                 "spark.kubernetes.container.image", "spark.driver.extraJavaOptions",
                                 "spark.authenticate", "spark.authenticate.secret", "spark.ssl.enabled",
                                 "spark.network.crypto.enabled", "spark.jars", "spark.executorEnv.LD_PRELOAD",
                                 "spark.pyspark.python", "spark.executor.extraJavaOptions", "spark.plugins"])
def test_conf_keys_a_tenant_may_not_set_are_refused_naming_the_key(key: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        SparkSpec.model_validate({"conf": {"spark.executor.memory": "1g", key: "x"}})
    message = caught.value.errors()[0]["msg"]
    assert repr(key) in message and "spark.executor.memory" not in message


def test_ordinary_conf_keys_pass_and_the_engine_settings_win() -> None:
    from gpubatch_jobs.predict.spark_session import spark_conf

    spark = SparkSpec.model_validate({"conf": {"spark.executor.memory": "1g", "spark.sql.adaptive.enabled": "false",
                                               "spark.masterx": "kept"}})
    conf = spark_conf(spark, app="a", backend="tensorflow", partitions=4)
    assert conf["spark.executor.memory"] == "1g" and conf["spark.masterx"] == "kept"
    assert conf["spark.authenticate"] == "true" and conf["spark.master"] == "local[*]"
