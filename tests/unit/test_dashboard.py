"""The chart's Grafana dashboard queries only metrics the operator really exports.

Every panel's PromQL names its metrics; each must be in a scrape of the
operator's /metrics endpoint (gpubatch_operator.metrics served over HTTP, a
running job in its store, so the per-job gauges have samples). The e2e
test (tests/e2e/test_submit.py) checks the same against the operator pod.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_chart_support import CHART_DIR, render

DASHBOARD = CHART_DIR / "dashboards" / "gpubatch.json"
# PromQL's functions, aggregations, keywords and the label names the panels group by.
NOT_METRICS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate", "histogram_quantile",
    "label_values", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "topk",
    "le", "kind", "phase", "device", "reason", "name", "job_namespace", "namespace", "pod", "job",
}


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names in one PromQL expression (label matchers, ranges and strings left out)."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    return {t for t in tokens if t not in NOT_METRICS}


SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                   "summary": ("_sum", "_count", ""), "gauge": ("",), "untyped": ("",), "info": ("_info",)}


def names_in_scrape(text: str) -> set[str]:
    """Every series name the exposition declares (a labelled counter no event has touched yet,
    e.g. a fresh operator's gpubatch_fallbacks_total, has its # TYPE line but no sample)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def scrape() -> str:
    """/metrics of the operator's own endpoint, with one running job and one of each event counted."""
    from gpubatch_operator import metrics
    from gpubatch_operator.store import Store

    store = Store()
    store.put_resource({
        "apiVersion": "gpubatch.dev/v1alpha1", "kind": "RenderJob",
        "metadata": {"name": "charts", "namespace": "team-a", "uid": "u1", "generation": 1},
        "spec": {}, "status": {"phase": "Running", "device": "gpu", "progress": "42%",
                               "throughputPerSecond": 812.5, "estimatedRemainingSeconds": 65}})
    metrics.FALLBACKS.labels("RenderJob", "GpuUnschedulable").inc()
    metrics.JOB_CREATIONS.labels("RenderJob", "gpu").inc()
    metrics.RECONCILE_SECONDS.labels("RenderJob").observe(0.01)
    metrics.RECONCILE_ERRORS.labels("RenderJob").inc()
    port = free_port()
    metrics.serve(port, store, lambda: 3)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_every_panel_queries_metrics_the_operator_exports(scrape: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = names_in_scrape(scrape)
    queries = panel_queries(dashboard)
    assert len(queries) >= 10
    for title, expr in queries:
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric in {expr!r}"
        missing = names - exported
        assert not missing, f"panel {title!r} queries {sorted(missing)}, not in the operator's /metrics"


def test_per_job_metrics_carry_the_running_job(scrape: str) -> None:
    samples = {(s.name, s.labels.get("job_namespace"), s.labels.get("name")): s.value
               for family in text_string_to_metric_families(scrape) for s in family.samples}
    assert samples[("gpubatch_job_throughput_per_second", "team-a", "charts")] == 812.5
    assert samples[("gpubatch_job_progress_ratio", "team-a", "charts")] == 0.42
    assert samples[("gpubatch_job_estimated_remaining_seconds", "team-a", "charts")] == 65


def test_a_declared_metric_without_samples_counts() -> None:
    text = "# HELP gpubatch_fallbacks_total Fallbacks.\n# TYPE gpubatch_fallbacks_total counter\n"
    assert "gpubatch_fallbacks_total" in names_in_scrape(text)
    assert "gpubatch_fallbacks_total_total" not in names_in_scrape(text)


def test_the_check_catches_a_misspelt_metric(scrape: str) -> None:
    assert metric_names('sum by (phase) (gpubatch_job{kind="x"})') == {"gpubatch_job"}
    assert "gpubatch_job" not in names_in_scrape(scrape)
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(gpubatch_reconcile_duration_seconds_bucket[5m])))') \
        == {"gpubatch_reconcile_duration_seconds_bucket"}


def test_the_chart_ships_it_for_grafana_s_sidecar_off_by_default() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["dashboard"]["enabled"] is False
    assert not [d for d in render() if d["kind"] == "ConfigMap"]
    (config_map,) = [d for d in render("dashboard.enabled=true") if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["gpubatch.json"]) == json.loads(DASHBOARD.read_text())


def test_the_dashboard_file_is_where_the_chart_reads_it() -> None:
    assert DASHBOARD.exists()
    assert 'Files.Get "dashboards/gpubatch.json"' in (CHART_DIR / "templates" / "dashboard.yaml").read_text()
    assert Path(DASHBOARD).parent.parent == CHART_DIR
