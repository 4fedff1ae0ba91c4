"""Prometheus metrics at /metrics, per function and per tenant (beyond Lambda), read with the
official Prometheus text-format parser; the cardinality guard; environment gauges."""

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Server, create


def scrape(server):
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_per_tenant_metrics(server, probe_zip):
    lam = server.client()
    fn = create(lam, probe_zip)
    for tenant, payload in [("Blue", b'{"action":"echo"}'), ("Blue", b'{"action":"echo"}'),
                            ("Green", b'{"action":"echo"}'), ("Green", b'{"action":"error"}')]:
        lam.invoke(FunctionName=fn, TenantId=tenant, Payload=payload)
    s = scrape(server)
    assert value(s, "quarters_invocations_total", function=fn, tenant="Blue") == 2
    assert value(s, "quarters_invocations_total", function=fn, tenant="Green") == 2
    assert value(s, "quarters_errors_total", function=fn, tenant="Green") == 1
    assert value(s, "quarters_errors_total", function=fn, tenant="Blue") == 0
    assert value(s, "quarters_cold_starts_total", function=fn, tenant="Blue") == 1
    assert value(s, "quarters_duration_seconds_count", function=fn, tenant="Blue") == 2
    assert value(s, "quarters_duration_seconds_bucket", function=fn, tenant="Blue", le="+Inf") == 2
    assert value(s, "quarters_init_duration_seconds_count", function=fn, tenant="Green") == 1
    assert value(s, "quarters_environments", function=fn) == 2
    assert value(s, "quarters_concurrent_executions", function=fn) == 0
    # Throttles: no concurrency at all for this function.
    lam.put_function_concurrency(FunctionName=fn, ReservedConcurrentExecutions=0)
    # One raw request (an SDK would retry a 429).
    req = urllib.request.Request(f"{server.endpoint}/2015-03-31/functions/{fn}/invocations", data=b"{}",
                                 headers={"X-Amz-Tenant-Id": "Blue"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 429
    assert value(scrape(server), "quarters_throttles_total", function=fn, tenant="Blue") == 1


def test_cardinality_guard_folds_quiet_tenants(tmp_path, probe_zip):
    s = Server(tmp_path / "data", extra_args=["--metrics-top-tenants", "2"]).start()
    try:
        lam = s.client()
        fn = create(lam, probe_zip)
        for tenant, n in [("loud", 3), ("medium", 2), ("quiet-1", 1), ("quiet-2", 1), ("a tenant/with:odd=chars", 1)]:
            for _ in range(n):
                lam.invoke(FunctionName=fn, TenantId=tenant, Payload=b'{"action":"echo"}')
        m = scrape(s)
        assert value(m, "quarters_invocations_total", function=fn, tenant="loud") == 3
        assert value(m, "quarters_invocations_total", function=fn, tenant="medium") == 2
        assert value(m, "quarters_invocations_total", function=fn, tenant="__other__") == 3
        tenants = {dict(k[1]).get("tenant") for k in m if k[0] == "quarters_invocations_total"}
        assert tenants == {"loud", "medium", "__other__"}
    finally:
        s.stop()


EMF_APP = '''
import json, time
def handler(event, context):
    print(json.dumps({
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
            "Namespace": "MyApp", "Dimensions": [["service", "tenant_id"]],
            "Metrics": [{"Name": "Orders", "Unit": "Count", "StorageResolution": 60}]}]},
        "service": "orders", "tenant_id": context.tenant_id, "Orders": event.get("orders", 1)}))
    return "ok"
'''


def test_embedded_metric_format_becomes_metrics(server):
    """EMF lines (the reference's record) become metrics, by dimension and tenant, in the API and
    at /metrics."""
    from test_runtimes import invoke, make
    lam = server.client()
    fn = make(lam, "python3.12", "lambda_function.handler", {"lambda_function.py": EMF_APP})
    for tenant, orders in [("blue", 2), ("blue", 3), ("green", 7)]:
        invoke(lam, fn, {"orders": orders}, tenant=tenant)
    with urllib.request.urlopen(f"{server.endpoint}/quarters/v1/metrics/emf?namespace=MyApp&function={fn}") as r:
        metrics = json.load(r)["Metrics"]
    by_tenant = {m["Tenant"]: m for m in metrics}
    assert set(by_tenant) == {"blue", "green"}
    blue = by_tenant["blue"]
    assert (blue["MetricName"], blue["Unit"], blue["SampleCount"], blue["Sum"], blue["Maximum"]) == ("Orders", "Count", 2, 5, 3)
    assert {"Name": "tenant_id", "Value": "blue"} in blue["Dimensions"]
    s = scrape(server)
    labels = dict(dim_service="orders", dim_tenant_id="green", function=fn, metric="Orders",
                  namespace="MyApp", tenant="green", unit="Count")
    assert value(s, "quarters_emf_sum", **labels) == 7
