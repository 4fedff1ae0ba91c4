"""The Invoke API end to end: tenant ids, invocation types, logs, errors, timeouts, versions,
payload limits and what the runtime sees, driven through boto3, the aws CLI and raw HTTP."""

import base64
import datetime
import http.client
import json
import re
import time
import urllib.request
import uuid

import botocore.exceptions
import pytest

from conftest import create, unique

TENANT_REQUIRED = (
    "The invoked function is enabled with tenancy configuration. Add a valid tenant ID in your request and try again."
)
SYNC_LIMIT = 6291456
ASYNC_LIMIT = 1048576
STREAM_RE = re.compile(r"^(\d{4})/(\d{2})/(\d{2})/\[(\$LATEST|\d+)\]([0-9a-f]{32})$")


# ---------------------------------------------------------------- helpers


def invoke(lam, name, tenant, payload=None, **kw):
    """Invoke through boto3; returns (response, decoded JSON body)."""
    args = dict(FunctionName=name, **kw)
    if tenant is not None:
        args["TenantId"] = tenant
    if payload is not None:
        args["Payload"] = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    r = lam.invoke(**args)
    raw = r["Payload"].read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw
    return r, body


def client_error(fn, *a, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        fn(*a, **kw)
    return ei.value.response


def raw_invoke(server, name, headers=None, body=b"{}", qualifier=None):
    """POST the Invoke path with exact header bytes (for what a client refuses to send).
    Header values may be bytes; returns (status, headers dict (lower-case), body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    path = f"/2015-03-31/functions/{urllib.request.quote(name, safe='')}/invocations"
    if qualifier:
        path += f"?Qualifier={urllib.request.quote(qualifier, safe='')}"
    # Signed over Host and Content-Type only (the raw headers below stay outside the signature,
    # which SigV4 allows), so header values botocore cannot sign still reach the server.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from conftest import CREDS
    aws = AWSRequest(method="POST", url=f"{server.endpoint}{path}", data=body,
                     headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(CREDS["AWS_ACCESS_KEY_ID"], CREDS["AWS_SECRET_ACCESS_KEY"]), "lambda", "us-east-1").add_auth(aws)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Authorization", aws.headers["Authorization"])
        conn.putheader("X-Amz-Date", aws.headers["X-Amz-Date"])
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def environments(server, name):
    with urllib.request.urlopen(f"{server.endpoint}/quarters/v1/environments?function={name}", timeout=10) as r:
        return json.loads(r.read())["Environments"]


def tail_of(resp):
    assert "LogResult" in resp, resp
    return base64.b64decode(resp["LogResult"]).decode()


def report_fields(line):
    """'REPORT RequestId: x\\tDuration: 1.00 ms\\t...' -> {'Duration': '1.00 ms', ...}"""
    fields = {}
    for part in line.split("\t"):
        if ": " in part:
            k, v = part.split(": ", 1)
            fields[k.strip()] = v.strip()
    return fields


def wait_updated(lam, name):
    for _ in range(200):
        c = lam.get_function_configuration(FunctionName=name)
        if c.get("LastUpdateStatus", "Successful") == "Successful" and c.get("State", "Active") == "Active":
            return c
        time.sleep(0.05)
    raise AssertionError(f"{name} did not finish updating: {c}")


@pytest.fixture(scope="module")
def fn(server, probe_zip):
    """A PER_TENANT probe function shared by the tests that do not need their own."""
    return create(server.client(), probe_zip, Timeout=10)


@pytest.fixture(scope="module")
def plain_fn(server, probe_zip):
    """A probe function without tenancy configuration."""
    return create(server.client(), probe_zip, tenant=False, Timeout=10)


# ---------------------------------------------------------------- RequestResponse


def test_request_response_via_boto3(server, lam, fn):
    tenant = "t-" + uuid.uuid4().hex[:8]
    r, body = invoke(lam, fn, tenant, {"action": "echo", "value": [1, "two", {"three": 3}]})
    assert r["StatusCode"] == 200
    assert "FunctionError" not in r
    assert r["ExecutedVersion"] == "$LATEST"
    assert r["ResponseMetadata"]["HTTPHeaders"]["content-type"].startswith("application/json")
    assert body["tenantId"] == tenant
    assert body["payload"] == {"action": "echo", "value": [1, "two", {"three": 3}]}
    # The request id the caller gets is the one the runtime saw.
    assert body["requestId"] == r["ResponseMetadata"]["RequestId"]
    # A second call of the same tenant is served warm by the same environment.
    r2, body2 = invoke(lam, fn, tenant, {"action": "echo"})
    assert body2["instance"] == body["instance"]
    assert body2["requestId"] != body["requestId"]


def test_empty_payload_reaches_function_as_empty_object(lam, fn):
    r, body = invoke(lam, fn, "empty-payload")
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    assert body["payload"] == {}


def test_plain_function_without_tenant(lam, plain_fn):
    r, body = invoke(lam, plain_fn, None, {"action": "echo"})
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    assert body["tenantId"] is None


def test_request_response_via_aws_cli(server, fn, tmp_path):
    tenant = "cli-" + uuid.uuid4().hex[:8]
    out = tmp_path / "out.json"
    p = server.cli(
        "lambda", "invoke", "--function-name", fn, "--tenant-id", tenant,
        "--payload", '{"action":"echo","from":"cli"}', "--log-type", "Tail", "--output", "json", str(out),
    )
    meta = json.loads(p.stdout)
    assert meta["StatusCode"] == 200
    assert meta["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in meta
    body = json.loads(out.read_text())
    assert body["tenantId"] == tenant
    assert body["payload"] == {"action": "echo", "from": "cli"}
    log = base64.b64decode(meta["LogResult"]).decode()
    assert f"START RequestId: {body['requestId']}" in log
    assert f"REPORT RequestId: {body['requestId']}" in log


def test_aws_cli_without_tenant_id_reports_the_error(server, fn, tmp_path):
    p = server.cli("lambda", "invoke", "--function-name", fn, str(tmp_path / "o.json"), check=False)
    assert p.returncode != 0
    assert "InvalidParameterValueException" in p.stderr, p.stderr
    assert TENANT_REQUIRED in p.stderr, p.stderr
    assert not (tmp_path / "o.json").exists() or (tmp_path / "o.json").read_text() == ""


# ---------------------------------------------------------------- tenant id rules


def test_tenant_function_without_tenant_id(server, lam, fn):
    resp = client_error(invoke, lam, fn, None, {"action": "echo"})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert resp["Error"]["Code"] == "InvalidParameterValueException"
    assert resp["Error"]["Message"] == TENANT_REQUIRED
    # Same through raw HTTP, and for every invocation type: nothing is queued or validated away.
    for itype in ("RequestResponse", "Event", "DryRun"):
        status, headers, data = raw_invoke(server, fn, {"X-Amz-Invocation-Type": itype})
        assert status == 400, (itype, status, data)
        assert headers.get("x-amzn-errortype", "").split(":")[0] == "InvalidParameterValueException"
        assert json.loads(data).get("message") == TENANT_REQUIRED


def test_tenant_id_on_function_without_tenancy(lam, plain_fn):
    resp = client_error(invoke, lam, plain_fn, "blue", {"action": "echo"})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert resp["Error"]["Code"] == "InvalidParameterValueException"
    assert resp["Error"]["Message"]


def assert_tenant_validation(status, code, message, shown=None):
    assert status == 400, (status, code, message)
    assert code == "ValidationException", (code, message)
    assert "tenantId" in message, message
    assert "failed to satisfy constraint" in message, message
    if shown is not None:
        assert shown in message


def test_tenant_id_too_long(lam, fn):
    resp = client_error(invoke, lam, fn, "x" * 257, {"action": "echo"})
    assert_tenant_validation(resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"]["Message"])
    assert "256" in resp["Error"]["Message"]


@pytest.mark.parametrize("bad", ["café", "a#b", "semi;colon", "star*", "comma,x", 'quote"x', "tilde~", "bang!", "pct%20", "a\\b"])
def test_tenant_id_bad_characters_via_boto3(lam, fn, bad):
    resp = client_error(invoke, lam, fn, bad, {"action": "echo"})
    assert_tenant_validation(resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"]["Message"])
    assert "regular expression pattern" in resp["Error"]["Message"]


@pytest.mark.parametrize(
    "raw",
    [
        "café".encode("utf-8"),  # valid UTF-8, not in the pattern
        "テナント".encode("utf-8"),
        b"tab\there",
    ],
)
def test_tenant_id_bad_characters_via_raw_http(server, fn, raw):
    status, headers, data = raw_invoke(server, fn, {"X-Amz-Tenant-Id": raw}, b'{"action":"echo"}')
    code = headers.get("x-amzn-errortype", "").split(":")[0]
    assert_tenant_validation(status, code, json.loads(data).get("message", ""))


def test_tenant_id_empty_via_raw_http(server, fn):
    # botocore refuses an empty TenantId client-side (min length 1); the server must too.
    status, headers, data = raw_invoke(server, fn, {"X-Amz-Tenant-Id": ""}, b'{"action":"echo"}')
    assert status == 400, (status, data)
    code = headers.get("x-amzn-errortype", "").split(":")[0]
    msg = json.loads(data).get("message", "")
    assert_tenant_validation(status, code, msg)
    assert "length" in msg, msg


def test_botocore_refuses_empty_tenant_id_client_side(lam, fn):
    with pytest.raises(botocore.exceptions.ParamValidationError):
        lam.invoke(FunctionName=fn, TenantId="", Payload=b"{}")


@pytest.mark.parametrize(
    "tenant",
    ["a/b c:d=e+f-g@h.i_j", "../..", "x" * 256, "0", "Z", "=+-@", "urn:tenant:acme/eu-west-1", "with space"],
    ids=["odd", "dotdot", "len256", "digit", "upper", "symbols", "urn", "space"],
)
def test_valid_odd_tenant_ids_reach_the_function_unchanged(server, lam, fn, tenant):
    r, body = invoke(lam, fn, tenant, {"action": "echo"})
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    assert body["tenantId"] == tenant
    # The environment is bound to exactly that tenant.
    envs = [e for e in environments(server, fn) if e["LogStream"] == body["stream"]]
    assert len(envs) == 1 and envs[0]["Tenant"] == tenant, envs


def test_tenant_id_256_chars_via_cli(server, fn, tmp_path):
    tenant = ("abc/=+-@:._ " * 30)[:255] + "Z"
    assert len(tenant) == 256
    out = tmp_path / "o.json"
    server.cli("lambda", "invoke", "--function-name", fn, "--tenant-id", tenant, "--payload", '{"action":"echo"}', str(out))
    assert json.loads(out.read_text())["tenantId"] == tenant


# ---------------------------------------------------------------- Tail logs


def test_tail_log_cold_then_warm(lam, probe_zip):
    name = create(lam, probe_zip)
    tenant = "tail-" + uuid.uuid4().hex[:8]
    r, body = invoke(lam, name, tenant, {"action": "print", "lines": ["hello-from-the-probe"]}, LogType="Tail")
    assert "FunctionError" not in r, body
    rid = body["requestId"]
    assert rid == r["ResponseMetadata"]["RequestId"]
    log = tail_of(r)
    lines = log.splitlines()
    idx = {}
    for i, line in enumerate(lines):
        if line.startswith(f"START RequestId: {rid}"):
            idx["start"] = i
            assert line == f"START RequestId: {rid} Version: $LATEST", line
        elif line.rstrip() == f"END RequestId: {rid}":
            idx["end"] = i
        elif line.startswith(f"REPORT RequestId: {rid}"):
            idx["report"] = i
        elif "hello-from-the-probe" in line:
            idx["app"] = i
    assert set(idx) == {"start", "end", "report", "app"}, log
    assert idx["start"] < idx["app"] < idx["end"] < idx["report"], log
    rep = report_fields(lines[idx["report"]])
    dur = float(rep["Duration"].removesuffix(" ms"))
    billed = int(rep["Billed Duration"].removesuffix(" ms"))
    assert dur > 0 and billed >= int(dur) and billed >= 1, rep
    assert rep["Memory Size"] == "128 MB", rep
    assert re.fullmatch(r"\d+ MB", rep["Max Memory Used"]), rep
    assert int(rep["Max Memory Used"].split()[0]) >= 1, rep
    assert re.fullmatch(r"\d+\.\d{2} ms", rep["Init Duration"]), rep
    # Text format carries no tenant id.
    assert tenant not in log

    # Warm: the same environment, no Init Duration.
    r2, body2 = invoke(lam, name, tenant, {"action": "echo"}, LogType="Tail")
    assert body2["instance"] == body["instance"]
    log2 = tail_of(r2)
    rep2 = [l for l in log2.splitlines() if l.startswith(f"REPORT RequestId: {body2['requestId']}")]
    assert len(rep2) == 1, log2
    assert "Init Duration" not in log2, log2
    assert "Duration" in report_fields(rep2[0])
    # The tail is this invocation's log only.
    assert rid not in log2

    # Without LogType there is no LogResult.
    r3, _ = invoke(lam, name, tenant, {"action": "echo"})
    assert "LogResult" not in r3
    assert "x-amz-log-result" not in r3["ResponseMetadata"]["HTTPHeaders"]


def test_tail_is_the_last_4kb(lam, fn):
    lines = [f"line-{i:04d}-" + "y" * 90 for i in range(200)]  # ~20 KB of output
    r, body = invoke(lam, fn, "tail-big", {"action": "print", "lines": lines}, LogType="Tail")
    raw = base64.b64decode(r["LogResult"])
    assert 3500 <= len(raw) <= 4096, len(raw)
    log = raw.decode(errors="replace")
    assert lines[-1] in log
    assert lines[0] not in log
    assert f"REPORT RequestId: {body['requestId']}" in log
    assert log.rstrip("\n").splitlines()[-1].startswith("REPORT RequestId:")


def test_tail_with_function_error_contains_report(lam, fn):
    r, body = invoke(lam, fn, "tail-err", {"action": "error", "message": "tail-boom"}, LogType="Tail")
    assert r.get("FunctionError") == "Unhandled"
    log = tail_of(r)
    rid = r["ResponseMetadata"]["RequestId"]
    assert f"START RequestId: {rid}" in log and f"REPORT RequestId: {rid}" in log, log


# ---------------------------------------------------------------- Event and DryRun


def test_event_invocation_runs_asynchronously(server, lam, fn):
    tenant = "evt-" + uuid.uuid4().hex[:8]
    fname = "evt-" + uuid.uuid4().hex[:8]
    # Warm the tenant so the event lands on an idle environment of that tenant.
    invoke(lam, fn, tenant, {"action": "echo"})
    t0 = time.time()
    r = lam.invoke(
        FunctionName=fn, TenantId=tenant, InvocationType="Event",
        Payload=json.dumps({"action": "write_tmp", "name": fname, "data": "from-event"}),
    )
    assert r["StatusCode"] == 202
    assert r["Payload"].read() == b""
    assert time.time() - t0 < 2
    seen = None
    deadline = time.time() + 10
    time.sleep(0.3)
    while time.time() < deadline:
        _, body = invoke(lam, fn, tenant, {"action": "list_tmp"})
        if fname in body["tmp"]:
            seen = body
            break
        time.sleep(0.2)
    assert seen is not None, "the Event invocation never wrote its file"
    assert seen["tenantId"] == tenant
    # Another tenant never sees it.
    _, other = invoke(lam, fn, tenant + "-other", {"action": "list_tmp"})
    assert fname not in other["tmp"]


def test_event_does_not_wait_for_the_function(lam, fn):
    t0 = time.time()
    r = lam.invoke(FunctionName=fn, TenantId="evt-slow", InvocationType="Event",
                   Payload=json.dumps({"action": "sleep", "ms": 3000}))
    assert r["StatusCode"] == 202
    assert time.time() - t0 < 2.0


def test_event_payload_limit(lam, fn):
    ok = json.dumps({"action": "echo", "pad": ""})
    ok = ok[:-2] + "x" * (ASYNC_LIMIT - len(ok)) + '"}'
    assert len(ok) == ASYNC_LIMIT
    r = lam.invoke(FunctionName=fn, TenantId="evt-limit", InvocationType="Event", Payload=ok)
    assert r["StatusCode"] == 202
    too_big = ok[:-2] + 'x"}'
    assert len(too_big) == ASYNC_LIMIT + 1
    resp = client_error(lam.invoke, FunctionName=fn, TenantId="evt-limit", InvocationType="Event", Payload=too_big)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert resp["Error"]["Code"] == "RequestEntityTooLargeException"


def test_dry_run_validates_and_runs_nothing(server, lam, fn):
    tenant = "dry-" + uuid.uuid4().hex[:8]
    fname = "dry-" + uuid.uuid4().hex[:8]
    r = lam.invoke(FunctionName=fn, TenantId=tenant, InvocationType="DryRun",
                   Payload=json.dumps({"action": "write_tmp", "name": fname, "data": "x"}))
    assert r["StatusCode"] == 204
    assert r["Payload"].read() == b""
    time.sleep(0.3)
    assert [e for e in environments(server, fn) if e["Tenant"] == tenant] == []
    _, body = invoke(lam, fn, tenant, {"action": "list_tmp"})
    assert fname not in body["tmp"]
    # DryRun still checks that the function exists.
    resp = client_error(lam.invoke, FunctionName=unique("nope"), InvocationType="DryRun", Payload=b"{}")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert resp["Error"]["Code"] == "ResourceNotFoundException"


def test_unknown_invocation_type_is_rejected(server, fn):
    status, headers, data = raw_invoke(server, fn, {"X-Amz-Invocation-Type": "Sometimes", "X-Amz-Tenant-Id": "t"})
    assert status == 400, data
    assert "invocationType" in json.loads(data).get("message", ""), data


# ---------------------------------------------------------------- function errors


def test_function_error_shape_and_environment_survives(lam, fn):
    tenant = "err-" + uuid.uuid4().hex[:8]
    _, before = invoke(lam, fn, tenant, {"action": "echo"})
    r, body = invoke(lam, fn, tenant, {"action": "error", "message": "kaboom 42"})
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amz-function-error"] == "Unhandled"
    assert r["ExecutedVersion"] == "$LATEST"
    assert isinstance(body, dict), body
    assert body["errorMessage"] == "kaboom 42"
    assert isinstance(body.get("errorType"), str) and body["errorType"], body
    # A handled error does not cost the environment.
    r2, after = invoke(lam, fn, tenant, {"action": "echo"})
    assert "FunctionError" not in r2
    assert after["instance"] == before["instance"]


# ---------------------------------------------------------------- timeouts and crashes


def test_timeout_shape_timing_and_recovery(server, lam, probe_zip):
    name = create(lam, probe_zip, Timeout=1)
    tenant = "slow-" + uuid.uuid4().hex[:8]
    _, warm = invoke(lam, name, tenant, {"action": "echo"})
    t0 = time.monotonic()
    r, body = invoke(lam, name, tenant, {"action": "sleep", "ms": 3000})
    elapsed = time.monotonic() - t0
    assert 0.95 <= elapsed <= 1.5, f"timeout answered after {elapsed:.2f}s"
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout", body
    assert re.search(r"Task timed out after 1\.00 seconds$", body["errorMessage"]), body
    assert r["ResponseMetadata"]["RequestId"] in body["errorMessage"]
    # The next invocation works, in a fresh environment.
    r2, after = invoke(lam, name, tenant, {"action": "echo"})
    assert "FunctionError" not in r2, after
    assert after["tenantId"] == tenant
    assert after["instance"] != warm["instance"]
    # The timed-out environment is gone; only the fresh one is live.
    streams = {e["LogStream"] for e in environments(server, name)}
    assert warm["stream"] not in streams and after["stream"] in streams, streams


def test_timeout_applies_to_a_cold_start_too(lam, probe_zip):
    name = create(lam, probe_zip, Timeout=1)
    t0 = time.monotonic()
    r, body = invoke(lam, name, "cold-slow", {"action": "sleep", "ms": 5000})
    elapsed = time.monotonic() - t0
    assert elapsed <= 1.6, elapsed
    assert r["FunctionError"] == "Unhandled" and body["errorType"] == "Sandbox.Timedout", body


def test_runtime_exit_shape_and_recovery(server, lam, fn):
    tenant = "exit-" + uuid.uuid4().hex[:8]
    _, before = invoke(lam, fn, tenant, {"action": "echo"})
    r, body = invoke(lam, fn, tenant, {"action": "exit", "code": 1})
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError", body
    assert "Runtime exited with error: exit status 1" in body["errorMessage"], body
    assert r["ResponseMetadata"]["RequestId"] in body["errorMessage"]
    r2, after = invoke(lam, fn, tenant, {"action": "echo"})
    assert "FunctionError" not in r2, after
    assert after["instance"] != before["instance"]
    assert before["stream"] not in {e["LogStream"] for e in environments(server, fn)}


def test_runtime_exit_other_code(lam, fn):
    r, body = invoke(lam, fn, "exit-7", {"action": "exit", "code": 7})
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert "exit status 7" in body["errorMessage"], body


# ---------------------------------------------------------------- versions, aliases, ARNs


def test_executed_version_with_versions_aliases_and_arns(lam, probe_zip):
    name = create(lam, probe_zip, Environment={"Variables": {"STAGE": "one"}})
    arn = lam.get_function_configuration(FunctionName=name)["FunctionArn"]
    account = arn.split(":")[4]
    v1 = lam.publish_version(FunctionName=name)
    assert v1["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"STAGE": "two"}})
    wait_updated(lam, name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    t = "ver-tenant"

    def check(expect_version, stage, **kw):
        r, body = invoke(lam, kw.pop("fn_name", name), t, {"action": "env"}, **kw)
        assert "FunctionError" not in r, body
        assert r["ExecutedVersion"] == expect_version, (kw, r["ExecutedVersion"])
        assert body["env"]["AWS_LAMBDA_FUNCTION_VERSION"] == expect_version
        assert body["env"]["STAGE"] == stage
        m = STREAM_RE.match(body["stream"])
        assert m and m.group(4) == expect_version, body["stream"]
        return body

    b = check("$LATEST", "two")
    assert b["invokedFunctionArn"] == arn
    check("$LATEST", "two", Qualifier="$LATEST")
    b = check("1", "one", Qualifier="1")
    assert b["invokedFunctionArn"] == f"{arn}:1"
    b = check("1", "one", Qualifier="live")
    assert b["invokedFunctionArn"] == f"{arn}:live"
    check("1", "one", fn_name=f"{name}:live")
    check("1", "one", fn_name=f"{name}:1")
    check("1", "one", fn_name=f"{arn}:live")
    check("$LATEST", "two", fn_name=arn)
    check("$LATEST", "two", fn_name=f"{account}:function:{name}")
    check("1", "one", fn_name=f"{account}:function:{name}:live")
    # Version 1 keeps tenancy: a tenant is still required.
    resp = client_error(invoke, lam, f"{name}:live", None, {"action": "echo"})
    assert resp["Error"]["Code"] == "InvalidParameterValueException"
    assert resp["Error"]["Message"] == TENANT_REQUIRED
    # Unknown qualifiers are not found.
    resp = client_error(invoke, lam, name, t, {"action": "echo"}, Qualifier="nosuchalias")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert resp["Error"]["Code"] == "ResourceNotFoundException"
    resp = client_error(invoke, lam, name, t, {"action": "echo"}, Qualifier="7")
    assert resp["Error"]["Code"] == "ResourceNotFoundException"


def test_invoke_missing_function(lam):
    resp = client_error(invoke, lam, unique("missing"), "t", {"action": "echo"})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert resp["Error"]["Code"] == "ResourceNotFoundException"
    assert "Function not found: arn:aws:lambda:us-east-1:" in resp["Error"]["Message"]


# ---------------------------------------------------------------- payload limits


def padded(total, action="list_tmp"):
    s = json.dumps({"action": action, "pad": ""})
    s = s[:-2] + "p" * (total - len(s)) + '"}'
    assert len(s) == total
    return s.encode()


def test_sync_payload_limit(lam, fn):
    resp = client_error(lam.invoke, FunctionName=fn, TenantId="big", Payload=padded(SYNC_LIMIT + 1))
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert resp["Error"]["Code"] == "RequestEntityTooLargeException", resp["Error"]
    assert "6291456" in resp["Error"]["Message"]
    # Exactly the limit is accepted and reaches the function.
    r, body = invoke(lam, fn, "big", padded(SYNC_LIMIT))
    assert r["StatusCode"] == 200 and "FunctionError" not in r, body
    assert body["tenantId"] == "big" and "tmp" in body


def test_response_too_large_is_a_function_error(lam, fn):
    r, body = invoke(lam, fn, "big-out", {"action": "big", "bytes": 6_400_000})
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge", body
    r2, ok = invoke(lam, fn, "big-out", {"action": "big", "bytes": 1_000_000})
    assert "FunctionError" not in r2 and len(ok["blob"]) == 1_000_000


@pytest.mark.parametrize("payload", [b"not json", b'{"action": "echo"', b"{'single': 1}", b"\xff\xfe"])
def test_non_json_payload(lam, fn, payload):
    resp = client_error(lam.invoke, FunctionName=fn, TenantId="nonjson", Payload=payload)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert resp["Error"]["Code"] == "InvalidRequestContentException", resp["Error"]


def test_non_object_json_payloads_are_accepted(lam, fn):
    for payload in (b"[1,2]", b'"just a string"', b"42"):
        r, body = invoke(lam, fn, "scalar", payload)
        assert r["StatusCode"] == 200 and "FunctionError" not in r, (payload, body)
        assert body["payload"] == json.loads(payload)


# ---------------------------------------------------------------- what the runtime sees


def test_environment_variables_and_stream(lam, probe_zip):
    name = create(lam, probe_zip, MemorySize=256, Timeout=7, Environment={"Variables": {"GREETING": "hello"}})
    tenant = "env-" + uuid.uuid4().hex[:8]
    before = time.time()
    r, body = invoke(lam, name, tenant, {"action": "env"})
    assert "FunctionError" not in r, body
    env = body["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["LAMBDA_TASK_ROOT"] == "/var/task"
    assert env["_HANDLER"] == "bootstrap"
    assert env["GREETING"] == "hello"
    assert env.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "on-demand"
    assert re.fullmatch(r"[\w.\-]+:\d+", env["AWS_LAMBDA_RUNTIME_API"]), env["AWS_LAMBDA_RUNTIME_API"]
    stream = env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert stream == body["stream"]
    m = STREAM_RE.match(stream)
    assert m, stream
    assert m.group(4) == "$LATEST"
    day = datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    today = datetime.datetime.fromtimestamp(before, datetime.timezone.utc).date()
    assert day in (today, today + datetime.timedelta(days=1)), (day, today)
    # No environment variable carries the tenant (it exists only per invocation).
    assert not any(tenant in v for v in env.values()), [k for k, v in env.items() if tenant in v]
    # Context: deadline ~ now + Timeout, and the invoked ARN.
    deadline_s = body["deadlineMs"] / 1000
    assert before + 5 < deadline_s < time.time() + 7.5, (before, deadline_s)
    assert body["invokedFunctionArn"].endswith(f":function:{name}")
    # Another tenant gets another environment and another stream of the same form.
    _, other = invoke(lam, name, tenant + "-b", {"action": "env"})
    assert STREAM_RE.match(other["stream"])
    assert other["stream"] != stream
    assert other["instance"] != body["instance"]


def test_client_context_reaches_the_runtime(lam, fn):
    # (lambda_runtime requires every field of "client" when it is present, so it is left out)
    cc = base64.b64encode(json.dumps({"custom": {"k": "v"}, "environment": {"locale": "en"}}).encode()).decode()
    r, body = invoke(lam, fn, "cc", {"action": "env"}, ClientContext=cc)
    assert "FunctionError" not in r, body
    assert body["clientContext"] == {"k": "v"}


# ---------------------------------------------------------------- JSON logs


def test_json_log_format_carries_tenant_id(lam, probe_zip):
    name = create(lam, probe_zip, LoggingConfig={"LogFormat": "JSON"})
    tenant = "json-" + uuid.uuid4().hex[:8]
    payload = {"action": "print", "lines": ["plain app line", json.dumps({"level": "WARN", "message": "structured", "k": 1})]}
    r, body = invoke(lam, name, tenant, payload, LogType="Tail")
    assert "FunctionError" not in r, body
    rid = body["requestId"]
    records = [json.loads(l) for l in tail_of(r).splitlines() if l.strip()]  # every line is JSON
    by_type = {}
    for rec in records:
        by_type.setdefault(rec.get("type", "app"), []).append(rec)
    start = [x for x in by_type.get("platform.start", []) if x["record"]["requestId"] == rid]
    report = [x for x in by_type.get("platform.report", []) if x["record"]["requestId"] == rid]
    assert len(start) == 1 and len(report) == 1, records
    assert start[0]["record"]["tenantId"] == tenant
    assert start[0]["record"]["version"] == "$LATEST"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", start[0]["time"]), start[0]
    rep = report[0]["record"]
    assert rep["tenantId"] == tenant
    assert rep["status"] == "success"
    m = rep["metrics"]
    assert m["durationMs"] > 0 and m["billedDurationMs"] >= 1 and m["memorySizeMB"] == 128
    assert "maxMemoryUsedMB" in m
    assert m["initDurationMs"] > 0  # cold start
    apps = by_type.get("app", [])
    plain = [a for a in apps if a.get("message") == "plain app line"]
    assert len(plain) == 1, apps
    assert plain[0]["tenantId"] == tenant and plain[0]["requestId"] == rid and plain[0]["level"] == "INFO"
    structured = [a for a in apps if a.get("message") == "structured"]
    assert len(structured) == 1, apps
    assert structured[0]["tenantId"] == tenant and structured[0]["level"] == "WARN" and structured[0]["k"] == 1
    assert not any(l.startswith(("START ", "END ", "REPORT ")) for l in tail_of(r).splitlines())

    # Warm: no initDurationMs; the tenant id is the invocation's.
    r2, b2 = invoke(lam, name, tenant, {"action": "echo"}, LogType="Tail")
    assert b2["instance"] == body["instance"]
    recs2 = [json.loads(l) for l in tail_of(r2).splitlines() if l.strip()]
    rep2 = [x for x in recs2 if x.get("type") == "platform.report"]
    assert len(rep2) == 1 and "initDurationMs" not in rep2[0]["record"]["metrics"], recs2
    assert rep2[0]["record"]["tenantId"] == tenant

    # The function sees the JSON setting.
    _, envb = invoke(lam, name, tenant, {"action": "env"})
    assert envb["env"].get("AWS_LAMBDA_LOG_FORMAT") == "JSON"


def test_json_log_format_without_tenant(lam, probe_zip):
    name = create(lam, probe_zip, tenant=False, LoggingConfig={"LogFormat": "JSON"})
    r, body = invoke(lam, name, None, {"action": "print", "lines": ["no tenant here"]}, LogType="Tail")
    recs = [json.loads(l) for l in tail_of(r).splitlines() if l.strip()]
    for rec in recs:
        assert "tenantId" not in rec and "tenantId" not in rec.get("record", {}), rec
    assert any(rec.get("message") == "no tenant here" for rec in recs), recs


def test_report_max_memory_used_follows_the_environments_peak(lam, probe_zip):
    """REPORT's Max Memory Used is the environment's peak so far, read again after every
    invocation: it rises after a large allocation and stays there (a peak) on the next call."""
    import base64 as b64
    name = create(lam, probe_zip, MemorySize=256)

    def max_used(payload):
        r = lam.invoke(FunctionName=name, TenantId="peak", Payload=json.dumps(payload), LogType="Tail")
        log = b64.b64decode(r["LogResult"]).decode()
        line = next(l for l in log.splitlines() if l.startswith("REPORT "))
        return int(report_fields(line)["Max Memory Used"].split()[0])

    small = max_used({"action": "echo"})
    big = max_used({"action": "alloc", "mb": 80})
    after = max_used({"action": "echo"})
    assert small < 60, small
    assert big >= 80, (small, big)
    assert after >= big, (big, after)
