"""SIGKILL the operator ten times during a burst of 200 resources: no duplicate Job, every resource final.

Job names are deterministic and the decision is level-based, so whatever the
moment of the kill, the restarted operator finds the Jobs already made (a
create answers 409) and carries on from the status.
"""

from __future__ import annotations

import random
import threading
import time

from tests.cluster import harness
from tests.operator.operator_process import OperatorProcess, render_job

BURST, KILLS = 200, 10


def test_kill_and_restart_during_a_burst(k8s_cluster, namespace, tmp_path):
    operator = OperatorProcess(k8s_cluster.kubeconfig, namespace, tmp_path / "operator.log").start()
    names = [f"burst-{i:03d}" for i in range(BURST)]
    rng = random.Random(7)
    done = threading.Event()

    def chaos() -> None:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))
            operator.kill()
            operator.start(wait=False)
            # Let each new process get some work done before the next kill.
            harness.wait_until(operator.healthy, timeout=60, what="the restarted operator")
        done.set()

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    try:
        for chunk in range(0, BURST, 20):
            k8s_cluster.apply(*(render_job(n, device={"policy": "cpu"}) for n in names[chunk:chunk + 20]),
                              namespace=namespace)
            time.sleep(0.3)
        killer.join(240)
        assert done.is_set(), "the chaos thread did not finish its restarts"
        assert operator.starts == KILLS + 1

        def all_final() -> list[dict] | None:
            items = k8s_cluster.get("renderjobs", "-n", namespace)["items"]
            ours = [i for i in items if i["metadata"]["name"].startswith("burst-")]
            final = [i for i in ours if (i.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
            return ours if len(final) == BURST else None

        resources = harness.wait_until(all_final, timeout=300, interval=2, what=f"{BURST} resources final")
        assert all(r["status"]["phase"] == "Succeeded" for r in resources)
        assert all(r["status"]["attempts"] == 1 for r in resources)
        jobs = [j for j in k8s_cluster.get("jobs", "-n", namespace)["items"]
                if j["metadata"]["name"].startswith("burst-")]
        assert sorted(j["metadata"]["name"] for j in jobs) == sorted(f"{n}-render" for n in names)
        uids = {r["metadata"]["name"]: r["metadata"]["uid"] for r in resources}
        for job in jobs:
            (owner,) = job["metadata"]["ownerReferences"]
            assert owner["uid"] == uids[owner["name"]]
        pods = [p for p in k8s_cluster.get("pods", "-n", namespace)["items"]
                if p["metadata"]["name"].startswith("burst-")]
        assert len(pods) == BURST, "one pod per Job: no Job was made twice"
        assert operator.alive
    finally:
        operator.stop()
