"""Faults of the runtime: it never asks for work, it reports an init error, it posts twice or
for a request it does not have, it outlives its maximum lifetime. Each must fail only that
environment, in the documented shape, and quickly."""

import io
import json
import time
import zipfile

import pytest

from conftest import ROLE, Server, create

PYTHON_RUNTIME = r'''#!/usr/bin/python3
# A tiny custom runtime on the standard library, to misbehave on purpose.
import http.client, json, os, sys
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
mode = os.environ.get("MODE", "")
conn = http.client.HTTPConnection(api)

def call(method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read().decode(), r.headers  # case-insensitive, as HTTP headers are

if mode == "init_error":
    call("POST", "/2018-06-01/runtime/init/error",
         json.dumps({"errorMessage": "cannot load the config", "errorType": "Runtime.InitError"}),
         {"Lambda-Runtime-Function-Error-Type": "Runtime.InitError"})
    sys.exit(1)

last = {}
while True:
    status, body, headers = call("GET", "/2018-06-01/runtime/invocation/next")
    rid = headers["Lambda-Runtime-Aws-Request-Id"]
    out = json.dumps({"previous": last, "tenant": headers.get("Lambda-Runtime-Aws-Tenant-Id")})
    call("POST", f"/2018-06-01/runtime/invocation/{rid}/response", out)
    s2, b2, _ = call("POST", f"/2018-06-01/runtime/invocation/{rid}/response", "again")
    s3, b3, _ = call("POST", "/2018-06-01/runtime/invocation/not-a-request/response", "x")
    last = {"twice": [s2, json.loads(b2)], "unknown": [s3, json.loads(b3)]}
'''


def zip_files(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            z.writestr(info, data)
    return buf.getvalue()


PY_ZIP = zip_files({"bootstrap": (PYTHON_RUNTIME, 0o100755)})
SLEEPER_ZIP = zip_files({"bootstrap": ("#!/bin/sh\nexec sleep 600\n", 0o100755)})


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("strict"), extra_args=["--init-timeout", "1", "--max-lifetime", "2"]).start()
    yield s
    s.stop()


def invoke(lam, name, tenant="t"):
    r = lam.invoke(FunctionName=name, TenantId=tenant, Payload=b"{}")
    return r, json.loads(r["Payload"].read() or b"null")


def test_runtime_that_never_polls_fails_init_within_the_init_timeout(strict_server):
    lam = strict_server.client()
    name = create(lam, SLEEPER_ZIP, Timeout=30)
    t = time.monotonic()
    r, body = invoke(lam, name)
    took = time.monotonic() - t
    assert r.get("FunctionError") == "Unhandled", body
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Init timed out after 1.00 seconds" in body["errorMessage"]
    assert took < 3, f"took {took:.2f} s with a 1 s init timeout"
    # The environment was killed, not kept: none is left for that function.
    envs = strict_server.quarters("envs", name).stdout
    assert "no live environments" in envs


def test_init_error_shape(strict_server):
    lam = strict_server.client()
    name = create(lam, PY_ZIP, Environment={"Variables": {"MODE": "init_error"}})
    r, body = invoke(lam, name)
    assert r.get("FunctionError") == "Unhandled"
    assert body == {"errorMessage": "cannot load the config", "errorType": "Runtime.InitError"}


def test_posting_twice_and_unknown_ids_are_refused(strict_server):
    lam = strict_server.client()
    name = create(lam, PY_ZIP)
    r, first = invoke(lam, name, "poster")
    assert "FunctionError" not in r, first
    assert first["tenant"] == "poster"
    r, second = invoke(lam, name, "poster")
    twice_status, twice_body = second["previous"]["twice"]
    assert twice_status == 403
    assert twice_body["errorType"] == "InvalidStateTransition"
    unknown_status, unknown_body = second["previous"]["unknown"]
    assert unknown_status == 400
    assert unknown_body["errorType"] == "InvalidRequestID"


def test_environments_are_recycled_after_their_maximum_lifetime(strict_server, probe_zip):
    lam = strict_server.client()
    name = create(lam, probe_zip)
    _, a = invoke(lam, name, "old")
    _, b = invoke(lam, name, "old")
    assert a["instance"] == b["instance"]
    time.sleep(2.5)
    _, c = invoke(lam, name, "old")
    assert c["instance"] != a["instance"], "recycled after --max-lifetime 2"
