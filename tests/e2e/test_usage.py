"""Usage per tenant per hour (beyond Lambda): through the API and `quarters usage`, kept across a
restart of the server."""

import json
import urllib.parse
import urllib.request

from conftest import Server, create


def usage(server, **q):
    with urllib.request.urlopen(f"{server.endpoint}/quarters/v1/usage?{urllib.parse.urlencode(q)}", timeout=10) as r:
        return json.load(r)


def test_usage_per_tenant(tmp_path, probe_zip):
    s = Server(tmp_path / "data").start()
    try:
        lam = s.client()
        fn = create(lam, probe_zip, MemorySize=256)
        payload = b'{"action":"echo","pad":"' + b"x" * 100 + b'"}'
        for tenant in ["Blue", "Blue", "Blue", "Green"]:
            lam.invoke(FunctionName=fn, TenantId=tenant, Payload=payload)
        lam.invoke(FunctionName=fn, TenantId="Green", Payload=b'{"action":"error"}')
        blue = usage(s, tenant="Blue")
        assert len(blue["Usage"]) == 1
        row = blue["Usage"][0]
        assert (row["Function"], row["Tenant"], row["Invocations"], row["Errors"]) == (fn, "Blue", 3, 0)
        assert row["BytesIn"] == 3 * len(payload)
        assert row["BytesOut"] > 3 * 100
        assert 0 < row["GBSeconds"] < 3 * 10 * 0.25
        green = usage(s, tenant="Green")["Total"]
        assert (green["Invocations"], green["Errors"]) == (2, 1)
        assert usage(s, tenant="Nobody")["Usage"] == []
        out = s.quarters("usage", "--tenant", "Blue").stdout
        assert fn in out and "Blue" in out and "Green" not in out
    finally:
        s.stop()
    # Written to disk: the same figures after a restart.
    s2 = Server(tmp_path / "data").start()
    try:
        assert usage(s2, tenant="Blue")["Total"]["Invocations"] == 3
        assert usage(s2, function=fn)["Total"]["Invocations"] == 5
    finally:
        s2.stop()
