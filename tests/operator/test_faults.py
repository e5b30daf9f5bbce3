"""Injected API faults: the operator retries, does not crash, and still gets every job done.

The operator talks to a fault-injecting proxy (fault_proxy.py) in front of the
real test API server: 5xx and 429 on Job creation and status writes, a 409 for
a Job that does not exist, 410 Gone on the Job and Pod watches, 5xx on the
startup lists.
"""

from __future__ import annotations

import kopf

from tests.operator.fault_proxy import Fault, FaultProxy
from tests.operator.operator_process import OperatorProcess, render_job, wait_for_phase

JOBS = r"/apis/batch/v1/namespaces/[^/]+/jobs$"
STATUS = r"/apis/gpubatch\.dev/v1alpha1/namespaces/[^/]+/renderjobs/[^/]+/status$"


def test_operator_survives_injected_faults(k8s_cluster, namespace, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(k8s_cluster.kubeconfig))
    upstream = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    faults = [
        Fault("GET", r"/api/v1/nodes$", 500, times=2, watch=False),
        Fault("POST", JOBS, 500, times=3),
        Fault("POST", JOBS, 409, times=1),
        Fault("PATCH", STATUS, 503, times=3),
        Fault("PATCH", STATUS, 429, times=1),
        Fault("GET", r"/apis/batch/v1/namespaces/[^/]+/jobs$", 410, times=2, watch=True, in_stream=True),
        Fault("GET", r"/api/v1/namespaces/[^/]+/pods$", 410, times=1, watch=True),
    ]
    proxy = FaultProxy(upstream, faults).start()
    config = tmp_path / "kubeconfig"
    config.write_text(proxy.kubeconfig())
    operator = OperatorProcess(config, namespace, tmp_path / "operator.log").start()
    try:
        names = [f"faulty-{i}" for i in range(5)]
        k8s_cluster.apply(*(render_job(n, device={"policy": "cpu"}) for n in names), namespace=namespace)
        for name in names:
            status = wait_for_phase(k8s_cluster, namespace, "renderjob", name, {"Succeeded", "Failed"}, timeout=120)
            assert status["phase"] == "Succeeded", (status, operator.tail())
            assert k8s_cluster.get("job", f"{name}-render", "-n", namespace)["metadata"]["name"]
        assert operator.alive, operator.tail()
        missed = [f for f in faults if f.hits < f.times]
        assert not missed, f"faults never triggered: {missed}"
        text = operator.metrics()
        assert "gpubatch_reconcile_errors_total" in text
    finally:
        operator.stop()
        proxy.stop()
