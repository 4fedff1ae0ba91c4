"""Concurrency controls: account limit, reserved concurrency, the tenant-environment cap, and
(beyond Lambda) a per-tenant limit per function."""

import json
import threading
import urllib.request

import botocore.exceptions
import pytest

from conftest import Server, create


def invoke(lam, name, tenant, payload):
    return lam.invoke(FunctionName=name, TenantId=tenant, Payload=json.dumps(payload))


def concurrently(n, fn):
    results = [None] * n

    def run(i):
        try:
            results[i] = ("ok", fn(i))
        except botocore.exceptions.ClientError as e:
            results[i] = ("error", e.response)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def throttles(results, reason):
    out = [r for kind, r in results if kind == "error"]
    for r in out:
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert r["Error"]["Code"] == "TooManyRequestsException"
        assert r.get("Reason") == reason, r
    return len(out)


def test_per_tenant_limit_protects_other_tenants(server, probe_zip):
    lam = server.client()
    name = create(lam, probe_zip, Timeout=20)
    server.quarters("tenant-limit", name, "--max-concurrency", "2")
    shown = server.quarters("tenant-limit", name)
    assert "at most 2" in shown.stdout
    results = concurrently(6, lambda i: invoke(lam, name, "noisy", {"action": "sleep", "ms": 2000}))
    assert throttles(results, "TenantConcurrentInvocationLimitExceeded") >= 3
    assert sum(1 for kind, _ in results if kind == "ok") >= 2
    # While the noisy tenant is at its cap, a quiet tenant still gets through.
    blocker = threading.Thread(target=lambda: concurrently(2, lambda i: invoke(lam, name, "noisy", {"action": "sleep", "ms": 2000})))
    blocker.start()
    r = invoke(lam, name, "quiet", {"action": "echo"})
    assert "FunctionError" not in r
    blocker.join()
    server.quarters("tenant-limit", name, "--clear")
    results = concurrently(4, lambda i: invoke(lam, name, "noisy", {"action": "sleep", "ms": 300}))
    assert all(kind == "ok" for kind, _ in results)


def test_tenant_limit_rejects_bad_values(server, probe_zip):
    lam = server.client()
    name = create(lam, probe_zip)
    req = urllib.request.Request(
        f"{server.endpoint}/quarters/v1/functions/{name}/tenant-concurrency",
        data=json.dumps({"MaxConcurrencyPerTenant": 0}).encode(),
        method="PUT",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400
    assert e.value.headers["X-Amzn-ErrorType"] == "InvalidParameterValueException"


def test_account_concurrency_limit(tmp_path, probe_zip):
    s = Server(tmp_path / "data", extra_args=["--account-concurrency", "2"]).start()
    try:
        lam = s.client()
        name = create(lam, probe_zip, Timeout=20)
        results = concurrently(5, lambda i: invoke(lam, name, f"t{i}", {"action": "sleep", "ms": 2000}))
        assert throttles(results, "ConcurrentInvocationLimitExceeded") >= 2
    finally:
        s.stop()


def test_tenant_environment_cap_evicts_idle_environments(server, probe_zip):
    lam = server.client()
    name = create(lam, probe_zip)
    # Reserved concurrency 1 allows ceil(2500 * 1 / 1000) = 3 tenant environments.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    for i in range(5):
        r = invoke(lam, name, f"tenant-{i}", {"action": "echo"})
        assert "FunctionError" not in r
    envs = json.loads(urllib.request.urlopen(f"{server.endpoint}/quarters/v1/environments?function={name}").read())
    assert len(envs["Environments"]) <= 3
    tenants = {e["Tenant"] for e in envs["Environments"]}
    assert "tenant-4" in tenants, "the newest tenant got an environment; the least recently used went"
