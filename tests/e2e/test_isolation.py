"""Tenant isolation end to end: every execution environment belongs to one tenant for its whole
life, and nothing of one tenant (memory, /tmp, processes) is reachable from another's."""

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
import uuid

import boto3
from botocore.config import Config

from conftest import QUARTERS, create, free_port


def call(lam, name, tenant, payload):
    r = lam.invoke(FunctionName=name, TenantId=tenant, Payload=json.dumps(payload))
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    assert body["tenantId"] == tenant, body
    return body


def wide_client(server, pool=64):
    """A client that can keep many calls in flight at once."""
    return boto3.client(
        "lambda",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}, read_timeout=120, connect_timeout=10, max_pool_connections=pool),
    )


def environments(server, name):
    with urllib.request.urlopen(f"{server.endpoint}/quarters/v1/environments?function={name}", timeout=10) as r:
        return json.loads(r.read())["Environments"]


DEMO = [
    ("BlueTenant", 1), ("BlueTenant", 2), ("BlueTenant", 3), ("BlueTenant", 4), ("BlueTenant", 5),
    ("GreenTenant", 1), ("BlueTenant", 6), ("OrangeTenant", 1),
]


def test_counter_demo_sequence(server, counter_zip):
    lam = server.client()
    name = create(lam, counter_zip)
    seen = []
    for tenant, _ in DEMO:
        r = lam.invoke(FunctionName=name, TenantId=tenant, Payload=b"{}")
        assert "FunctionError" not in r
        seen.append(json.loads(r["Payload"].read()))
    got = [(b["tenantId"], b["memoryCounter"], b["diskCounter"]) for b in seen]
    assert got == [(t, n, n) for t, n in DEMO], got
    blue = {b["environment"] for b in seen if b["tenantId"] == "BlueTenant"}
    green = {b["environment"] for b in seen if b["tenantId"] == "GreenTenant"}
    orange = {b["environment"] for b in seen if b["tenantId"] == "OrangeTenant"}
    assert len(blue) == 1 and len(green) == 1 and len(orange) == 1
    assert len(blue | green | orange) == 3, (blue, green, orange)
    # The platform's view agrees: one environment per tenant, bound to it.
    envs = environments(server, name)
    by_stream = {e["LogStream"]: e["Tenant"] for e in envs}
    for streams, tenant in ((blue, "BlueTenant"), (green, "GreenTenant"), (orange, "OrangeTenant")):
        assert by_stream.get(next(iter(streams))) == tenant, envs


def test_tenant_ids_are_exact_and_case_sensitive(server, counter_zip):
    lam = server.client()
    name = create(lam, counter_zip)
    out = {}
    for tenant in ["acme", "ACME", "acme.", "Acme", "acme"]:
        r = lam.invoke(FunctionName=name, TenantId=tenant, Payload=b"{}")
        body = json.loads(r["Payload"].read())
        assert body["tenantId"] == tenant
        out.setdefault(tenant, []).append(body)
    assert [b["memoryCounter"] for b in out["acme"]] == [1, 2]
    for t in ["ACME", "acme.", "Acme"]:
        assert out[t][0]["memoryCounter"] == 1 and out[t][0]["diskCounter"] == 1, (t, out[t])
    streams = {b["environment"] for bodies in out.values() for b in bodies}
    assert len(streams) == 4, streams


def test_concurrent_tenants_never_share_an_environment(server, probe_zip):
    lam = wide_client(server)
    name = create(lam, probe_zip, Timeout=30)
    tenants = [f"conc-{i}-{uuid.uuid4().hex[:4]}" for i in range(6)]
    jobs = [(t, k) for k in range(8) for t in tenants]
    results = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(i):
        tenant, _ = jobs[i]
        start.wait()
        try:
            results[i] = ("ok", tenant, call(lam, name, tenant, {"action": "sleep", "ms": 300}))
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = ("error", tenant, repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors[:5]
    # They overlapped: 48 x 300 ms one after another would take 14.4 s.
    assert elapsed < 10, elapsed
    tenant_of = {}
    per_tenant = {}
    for _, tenant, body in results:
        assert body["tenantId"] == tenant
        tenant_of.setdefault(body["instance"], set()).add(tenant)
        per_tenant.setdefault(tenant, set()).add(body["instance"])
    shared = {i: ts for i, ts in tenant_of.items() if len(ts) != 1}
    assert not shared, f"environments served more than one tenant: {shared}"
    for tenant in tenants:
        assert len(per_tenant[tenant]) > 1, (tenant, per_tenant[tenant])
    # The platform agrees: each live environment is bound to one of our tenants, and the
    # streams the function reported belong to the tenant that saw them.
    envs = environments(server, name)
    bound = {e["LogStream"]: e["Tenant"] for e in envs}
    for _, tenant, body in results:
        assert bound.get(body["stream"]) == tenant, (body["stream"], bound.get(body["stream"]))
    # Afterwards each tenant's calls are served warm by one of that tenant's environments.
    for tenant in tenants:
        again = call(lam, name, tenant, {"action": "echo"})
        assert again["instance"] in per_tenant[tenant]


def test_tmp_is_private_to_a_tenant(server, probe_zip):
    lam = server.client()
    name = create(lam, probe_zip, Timeout=20)
    secret_name = "secret-" + uuid.uuid4().hex[:8]
    secret = "s3cr3t-" + uuid.uuid4().hex
    a = call(lam, name, "tenant-A", {"action": "write_tmp", "name": secret_name, "data": secret})
    assert secret_name in a["tmp"]
    again = call(lam, name, "tenant-A", {"action": "read", "path": f"/tmp/{secret_name}"})
    assert again["instance"] == a["instance"] and again["content"] == secret  # it is really there
    b = call(lam, name, "tenant-B", {"action": "list_tmp"})
    assert b["instance"] != a["instance"]
    assert secret_name not in b["tmp"]
    miss = call(lam, name, "tenant-B", {"action": "read", "path": f"/tmp/{secret_name}"})
    assert isinstance(miss["content"], dict) and "error" in miss["content"], miss


def test_processes_of_other_tenants_are_invisible(server, probe_zip):
    lam = wide_client(server, pool=8)
    name = create(lam, probe_zip, Timeout=20)
    secret_name = "secret-" + uuid.uuid4().hex[:8]
    a = call(lam, name, "proc-A", {"action": "write_tmp", "name": secret_name, "data": "x"})
    alone = call(lam, name, "proc-B", {"action": "ps"})
    # Keep tenant A busy (its runtime alive and mid-invocation) while B looks around.
    busy = threading.Thread(target=lambda: call(lam, name, "proc-A", {"action": "sleep", "ms": 2500}))
    busy.start()
    time.sleep(0.5)
    try:
        during = call(lam, name, "proc-B", {"action": "ps"})
        assert during["instance"] == alone["instance"]
        cmdlines = [p["cmdline"] for p in during["processes"]]
        assert 1 <= len(cmdlines) <= 4, cmdlines
        assert {p["pid"] for p in during["processes"]} == {p["pid"] for p in alone["processes"]}, (alone, during)
        # A's sandbox would show its own log stream on its command line; the host's server
        # would show "serve --listen".
        assert not any(a["stream"] in c for c in cmdlines), cmdlines
        assert not any("serve --listen" in c for c in cmdlines), cmdlines
        ls = call(lam, name, "proc-B", {"action": "ls", "path": "/proc"})
        pids = sorted(e for e in ls["entries"] if e.isdigit())
        assert set(pids) >= {p["pid"] for p in during["processes"]}
        assert len(pids) <= 5, pids
        for pid in pids:
            tmp = call(lam, name, "proc-B", {"action": "ls", "path": f"/proc/{pid}/root/tmp"})
            assert secret_name not in json.dumps(tmp["entries"]), (pid, tmp)
            environ = call(lam, name, "proc-B", {"action": "read", "path": f"/proc/{pid}/environ"})
            assert a["stream"] not in json.dumps(environ["content"]), pid
    finally:
        busy.join()


def test_function_cannot_reach_the_platform_api(server, probe_zip):
    lam = server.client()
    name = create(lam, probe_zip, Timeout=20)
    # The connect action works: the environment's own Runtime API is reachable.
    env = call(lam, name, "net", {"action": "env"})
    own = call(lam, name, "net", {"action": "connect", "addr": env["env"]["AWS_LAMBDA_RUNTIME_API"]})
    assert own["connect"] == "connected", own
    blocked = call(lam, name, "net", {"action": "connect", "addr": f"127.0.0.1:{server.port}"})
    assert blocked["connect"] != "connected", blocked
    assert "error" in blocked["connect"]


ENV_HEADER = re.compile(r'^tenant "(?P<tenant>[^"]*)": (?P<n>\d+) environment\(s\)$')
ENV_LINE = re.compile(r"^\s+(?P<id>[0-9a-f-]+)\s+(?P<fn>\S+)\s+(?P<state>\S+)\s+(?P<inv>\d+) invocation\(s\)\s+stream (?P<stream>\S+)$")


def parse_envs(text):
    groups = {}
    order = []
    current = None
    for line in text.splitlines():
        if m := ENV_HEADER.match(line):
            current = m["tenant"]
            order.append(current)
            groups[current] = {"n": int(m["n"]), "envs": []}
        elif m := ENV_LINE.match(line):
            assert current is not None, text
            groups[current]["envs"].append(m.groupdict())
    return order, groups


def test_quarters_envs_groups_environments_by_tenant(server, probe_zip):
    lam = wide_client(server, pool=8)
    name = create(lam, probe_zip, Timeout=20)
    # Two overlapping calls give tenant "two" two environments; "one" gets one.
    bodies = []
    threads = [threading.Thread(target=lambda: bodies.append(call(lam, name, "two", {"action": "sleep", "ms": 600}))) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    one = call(lam, name, "one", {"action": "echo"})
    for t in threads:
        t.join()
    one2 = call(lam, name, "one", {"action": "echo"})
    assert one2["instance"] == one["instance"]
    two_streams = {b["stream"] for b in bodies}
    assert len(two_streams) == 2
    out = server.quarters("envs", name).stdout
    order, groups = parse_envs(out)
    assert sorted(order) == ["one", "two"], out  # each tenant exactly once
    assert groups["one"]["n"] == 1 and len(groups["one"]["envs"]) == 1, out
    assert groups["two"]["n"] == 2 and len(groups["two"]["envs"]) == 2, out
    assert {e["stream"] for e in groups["one"]["envs"]} == {one["stream"]}, out
    assert {e["stream"] for e in groups["two"]["envs"]} == two_streams, out
    assert groups["one"]["envs"][0]["inv"] == "2", out
    for g in groups.values():
        for e in g["envs"]:
            assert e["fn"].startswith(name[:12]) or name.startswith(e["fn"]), (e, name)


def test_quarters_demo_exit(tmp_path):
    port = free_port()
    p = subprocess.run(
        [str(QUARTERS), "demo", "--exit", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    rows = re.findall(r"^\s+(\w+Tenant)\s+(\d+)\s+(\d+)\s+(\S+)\s*$", p.stdout, re.M)
    got = [(t, int(m), int(d)) for t, m, d, _ in rows]
    assert got == [(t, n, n) for t, n in DEMO], p.stdout
    blue_envs = {e for t, _, _, e in rows if t == "BlueTenant"}
    assert len(blue_envs) == 1, p.stdout
    assert len({e for _, _, _, e in rows}) == 3, p.stdout
    # Its summary groups the live environments by tenant.
    _, groups = parse_envs(p.stdout.split("[4/4]", 1)[1])
    assert {t: g["n"] for t, g in groups.items()} == {"BlueTenant": 1, "GreenTenant": 1, "OrangeTenant": 1}, p.stdout
    # --exit: the server is gone afterwards.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/2015-03-31/functions", timeout=2)
        raise AssertionError("the demo's server is still serving after --exit")
    except OSError:
        pass
