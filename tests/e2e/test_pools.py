"""Tenant-ready pools (beyond Lambda): PutProvisionedConcurrencyConfig on a tenant-isolated
function keeps environments that have run their init, and binds one to a tenant at its first
call."""

import base64
import json
import time

import botocore.exceptions
import pytest

from conftest import Server, create


def wait_ready(lam, name, qualifier, n, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        cfg = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if cfg["AvailableProvisionedConcurrentExecutions"] >= n and cfg["Status"] == "READY":
            return cfg
        time.sleep(0.1)
    raise AssertionError(f"pool of {name}:{qualifier} not ready: {cfg}")


def invoke_tail(lam, name, qualifier, tenant):
    r = lam.invoke(FunctionName=name, Qualifier=qualifier, TenantId=tenant, LogType="Tail", Payload=b'{"action":"echo"}')
    assert "FunctionError" not in r
    return json.loads(r["Payload"].read()), base64.b64decode(r["LogResult"]).decode()


def test_pool_serves_new_tenants_without_init(tmp_path, probe_zip):
    s = Server(tmp_path / "data").start()
    try:
        lam = s.client()
        name = create(lam, probe_zip)
        version = lam.publish_version(FunctionName=name)["Version"]
        put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=2)
        assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert put["RequestedProvisionedConcurrentExecutions"] == 2
        wait_ready(lam, name, version, 2)

        body, log = invoke_tail(lam, name, version, "pooled-blue")
        assert body["tenantId"] == "pooled-blue"
        assert "REPORT RequestId" in log and "Init Duration" not in log, log
        shown = s.quarters("envs", name).stdout
        assert "pooled-blue" in shown

        other, log2 = invoke_tail(lam, name, version, "pooled-green")
        assert other["instance"] != body["instance"], "each tenant gets its own pooled environment"
        again, _ = invoke_tail(lam, name, version, "pooled-blue")
        assert again["instance"] == body["instance"], "bound for life to its first tenant"

        # The pool refills, and its environments never served anyone.
        wait_ready(lam, name, version, 2)
        fresh, _ = invoke_tail(lam, name, version, "pooled-orange")
        assert fresh["instance"] not in (body["instance"], other["instance"])

        listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
        assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == [version]

        # Survives a restart.
        s.stop()
        s.start()
        lam = s.client()
        cfg = wait_ready(lam, name, version, 2)
        assert cfg["RequestedProvisionedConcurrentExecutions"] == 2
        _, log = invoke_tail(lam, name, version, "after-restart")
        assert "Init Duration" not in log

        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
        assert e.value.response["Error"]["Code"] == "ProvisionedConcurrencyConfigNotFoundException"
        s.quarters("pool", name, "--size", "1")
        assert "ready" in s.quarters("pool", name).stdout
    finally:
        s.stop()


def test_cold_start_reports_init_duration(server, probe_zip):
    lam = server.client()
    name = create(lam, probe_zip)
    _, log = invoke_tail(lam, name, "$LATEST", "cold-tenant")
    assert "Init Duration" in log
