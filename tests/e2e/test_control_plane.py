"""The Lambda control plane as real clients see it: boto3, the aws CLI, and raw HTTP only where
a client cannot send the request. Expectations follow the wire reference, section 1."""

import base64
import hashlib
import io
import json
import platform
import re
import time
import urllib.error
import urllib.request
import uuid
import zipfile

import botocore.exceptions
import pytest

from conftest import ROLE, create, unique, zip_binary, TARGET

ACCOUNT = "000000000000"
REGION = "us-east-1"
LOG_LEVEL_WITH_TEXT = (
    'LogLevel is not supported when LogFormat is set to "Text". Remove LogLevel from your request or change the '
    'LogFormat to "JSON" and try again.'
)
BAD_ZIP = "Could not unzip uploaded file. Please check your file, then try to upload again."
HOST_ARCH = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"


def fn_arn(name, qualifier=None):
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def sha_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def status(resp):
    return resp["ResponseMetadata"]["HTTPStatusCode"]


def client_error(fn, *args, **kwargs):
    """Call a boto3 operation that must fail; return the parsed error response."""
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn(*args, **kwargs)
    return e.value.response


def raw(server, method, path, body=None, headers=None):
    """One HTTP request with urllib; returns (status, headers, parsed JSON body or raw bytes)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"{server.endpoint}{path}", data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            code, hdrs, payload = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        code, hdrs, payload = e.code, e.headers, e.read()
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload
    return code, hdrs, parsed


def invoke(lam, name, payload, tenant="t1", **kw):
    args = dict(FunctionName=name, Payload=json.dumps(payload), **kw)
    if tenant is not None:
        args["TenantId"] = tenant
    r = lam.invoke(**args)
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    return r, body


def wait_active(lam, name):
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def wait_updated(lam, name):
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def zip_entries(entries):
    """A zip of (name, data, unix mode) entries; a mode with S_IFLNK makes a symbolic link."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix, so the mode bits count
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def probe_bytes():
    return (TARGET / "probe").read_bytes()


# ---------------------------------------------------------------- CreateFunction


def test_create_function_returns_documented_configuration(lam, probe_zip):
    name = unique("cp-create")
    resp = lam.create_function(
        FunctionName=name, Runtime="provided.al2023", Role=ROLE, Handler="bootstrap", Code={"ZipFile": probe_zip}
    )
    assert status(resp) == 201
    assert resp["FunctionName"] == name
    assert resp["FunctionArn"] == fn_arn(name)
    assert resp["Runtime"] == "provided.al2023"
    assert resp["Role"] == ROLE
    assert resp["Handler"] == "bootstrap"
    assert resp["CodeSha256"] == sha_b64(probe_zip)
    assert resp["CodeSize"] == len(probe_zip)
    assert resp["Description"] == ""
    assert resp["Timeout"] == 3
    assert resp["MemorySize"] == 128
    assert resp["EphemeralStorage"] == {"Size": 512}
    assert resp["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}
    assert resp["Version"] == "$LATEST"
    assert resp["PackageType"] == "Zip"
    assert resp["Architectures"] == [HOST_ARCH]
    assert resp["TracingConfig"] == {"Mode": "PassThrough"}
    assert resp["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", resp["LastModified"]), resp["LastModified"]
    uuid.UUID(resp["RevisionId"])
    assert "RuntimeVersionArn" in resp["RuntimeVersionConfig"]
    assert resp["State"] == "Pending"
    assert resp["StateReason"] == "The function is being created."
    assert resp["StateReasonCode"] == "Creating"
    assert "TenancyConfig" not in resp
    assert "Environment" not in resp or resp["Environment"].get("Variables", {}) == {}
    # Not configured: not there on later reads either.
    assert "TenancyConfig" not in lam.get_function_configuration(FunctionName=name)


def test_create_function_with_tenancy_and_settings(lam, probe_zip):
    name = unique("cp-tenant")
    resp = lam.create_function(
        FunctionName=name,
        Runtime="provided.al2023",
        Role=ROLE,
        Handler="bootstrap",
        Code={"ZipFile": probe_zip},
        Description="a tenant function",
        Timeout=30,
        MemorySize=512,
        EphemeralStorage={"Size": 1024},
        Environment={"Variables": {"GREETING": "hello"}},
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "DEBUG", "LogGroup": "/custom/group"},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
    )
    assert status(resp) == 201
    assert resp["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    assert resp["Description"] == "a tenant function"
    assert resp["Timeout"] == 30
    assert resp["MemorySize"] == 512
    assert resp["EphemeralStorage"] == {"Size": 1024}
    assert resp["Environment"] == {"Variables": {"GREETING": "hello"}}
    assert resp["LoggingConfig"]["LogFormat"] == "JSON"
    assert resp["LoggingConfig"]["ApplicationLogLevel"] == "DEBUG"
    assert resp["LoggingConfig"]["LogGroup"] == "/custom/group"
    got = lam.get_function_configuration(FunctionName=name)
    assert got["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    assert got["LoggingConfig"]["LogGroup"] == "/custom/group"
    _, body = invoke(lam, name, {"action": "env"}, tenant="acme")
    assert body["tenantId"] == "acme"
    assert body["env"]["GREETING"] == "hello"
    assert body["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert body["env"]["AWS_LAMBDA_LOG_GROUP_NAME"] == "/custom/group"


# ---------------------------------------------------------------- Get*


def test_get_function_and_configuration(server, lam, probe_zip):
    name = create(lam, probe_zip)
    wait_active(lam, name)
    got = lam.get_function(FunctionName=name)
    assert status(got) == 200
    cfg = got["Configuration"]
    assert cfg["State"] == "Active"
    assert cfg["LastUpdateStatus"] == "Successful"
    assert cfg["FunctionArn"] == fn_arn(name)
    assert cfg["CodeSha256"] == sha_b64(probe_zip)
    assert cfg["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    assert got["Code"]["RepositoryType"] == "S3"
    with urllib.request.urlopen(got["Code"]["Location"], timeout=30) as r:
        assert r.read() == probe_zip
    assert "Concurrency" not in got

    conf = lam.get_function_configuration(FunctionName=name)
    assert status(conf) == 200
    assert conf["State"] == "Active"
    assert conf["LastUpdateStatus"] == "Successful"
    for key in ("FunctionArn", "CodeSha256", "CodeSize", "RevisionId", "MemorySize", "Timeout", "LoggingConfig"):
        assert conf[key] == cfg[key], key
    # The function may be named by full ARN, partial ARN, or with the $LATEST qualifier.
    for ref in (fn_arn(name), f"{ACCOUNT}:function:{name}"):
        assert lam.get_function_configuration(FunctionName=ref)["FunctionArn"] == fn_arn(name)
    assert lam.get_function(FunctionName=name, Qualifier="$LATEST")["Configuration"]["Version"] == "$LATEST"


def test_missing_function_is_resource_not_found(server, lam):
    name = unique("cp-missing")
    for op in (lam.get_function, lam.get_function_configuration, lam.delete_function):
        err = client_error(op, FunctionName=name)
        assert status(err) == 404
        assert err["Error"]["Code"] == "ResourceNotFoundException"
        assert err["Error"]["Message"] == f"Function not found: {fn_arn(name)}"
    err = client_error(lam.invoke, FunctionName=name, Payload=b"{}")
    assert status(err) == 404 and err["Error"]["Code"] == "ResourceNotFoundException"
    code, hdrs, body = raw(server, "GET", f"/2015-03-31/functions/{name}")
    assert code == 404
    assert hdrs["X-Amzn-ErrorType"].split(":")[0] == "ResourceNotFoundException"
    assert body["Message"] == f"Function not found: {fn_arn(name)}"  # the model's member is Message
    assert body["Type"] == "User"


# ---------------------------------------------------------------- ListFunctions


def test_list_functions_pagination_sees_each_function_once(lam, probe_zip):
    prefix = unique("cp-page")
    mine = {create(lam, probe_zip, name=f"{prefix}-{i}", tenant=(i % 2 == 0)) for i in range(5)}
    seen = []
    pages = 0
    kwargs = {"MaxItems": 2}
    while True:
        page = lam.list_functions(**kwargs)
        pages += 1
        assert len(page["Functions"]) <= 2
        seen.extend(f["FunctionName"] for f in page["Functions"])
        for f in page["Functions"]:
            if f["FunctionName"] in mine:
                assert f["FunctionArn"] == fn_arn(f["FunctionName"])
                assert f["CodeSha256"] == sha_b64(probe_zip)
                assert "State" not in f and "LastUpdateStatus" not in f  # omitted by ListFunctions
        marker = page.get("NextMarker")
        if not marker:
            break
        kwargs["Marker"] = marker
        assert pages < 1000
    assert pages >= 3
    assert len(seen) == len(set(seen)), "a function was listed twice"
    assert mine <= set(seen)
    unpaged = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    # One page holds at most 50; the paged walk must cover the same functions as an unpaged one.
    assert unpaged <= set(seen)


def test_list_functions_paginator(lam, probe_zip):
    prefix = unique("cp-pgr")
    mine = {create(lam, probe_zip, name=f"{prefix}-{i}") for i in range(3)}
    names = []
    pages = 0
    for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}):
        pages += 1
        assert len(page["Functions"]) <= 2
        names.extend(f["FunctionName"] for f in page["Functions"])
    assert pages >= 2
    assert len(names) == len(set(names))
    assert mine <= set(names)
    # MaxItems on the paginator stops early and hands back a token that resumes where it stopped.
    first = lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2, "MaxItems": 3}).build_full_result()
    assert len(first["Functions"]) == 3
    rest = lam.get_paginator("list_functions").paginate(
        PaginationConfig={"PageSize": 2, "StartingToken": first["NextToken"]}
    ).build_full_result()
    both = [f["FunctionName"] for f in first["Functions"] + rest["Functions"]]
    assert sorted(both) == sorted(names)


# ---------------------------------------------------------------- Update*


def test_update_function_code_runs_new_code(lam, probe_zip):
    name = create(lam, probe_zip)
    _, body = invoke(lam, name, {"action": "ls", "path": "/var/task"})
    assert body["entries"] == ["bootstrap"]
    new_zip = zip_binary(TARGET / "probe", extra={"extra.txt": "new code is here"})
    resp = lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    assert status(resp) == 200
    assert resp["CodeSha256"] == sha_b64(new_zip) != sha_b64(probe_zip)
    assert resp["CodeSize"] == len(new_zip)
    assert resp["State"] == "Active"
    assert resp["LastUpdateStatus"] == "InProgress"
    wait_updated(lam, name)
    got = lam.get_function(FunctionName=name)
    assert got["Configuration"]["CodeSha256"] == sha_b64(new_zip)
    assert got["Configuration"]["LastUpdateStatus"] == "Successful"
    with urllib.request.urlopen(got["Code"]["Location"], timeout=30) as r:
        assert r.read() == new_zip
    # The same tenant (whose warm environment ran the old code) now runs the new code.
    _, body = invoke(lam, name, {"action": "ls", "path": "/var/task"})
    assert body["entries"] == ["bootstrap", "extra.txt"]
    _, body = invoke(lam, name, {"action": "read", "path": "/var/task/extra.txt"})
    assert body["content"] == "new code is here"


def test_update_function_configuration_is_seen_by_function(lam, probe_zip):
    name = create(lam, probe_zip, Timeout=10, Environment={"Variables": {"OLD": "1"}})
    _, body = invoke(lam, name, {"action": "env"})
    assert body["env"]["OLD"] == "1"
    assert body["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    before = lam.get_function_configuration(FunctionName=name)
    resp = lam.update_function_configuration(
        FunctionName=name,
        MemorySize=256,
        Timeout=42,
        Description="changed",
        Environment={"Variables": {"NEW": "two"}},
    )
    assert status(resp) == 200
    assert resp["MemorySize"] == 256
    assert resp["Timeout"] == 42
    assert resp["Description"] == "changed"
    assert resp["Environment"] == {"Variables": {"NEW": "two"}}
    assert resp["RevisionId"] != before["RevisionId"]
    assert resp["LastUpdateStatus"] == "InProgress"
    assert resp["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}  # untouched
    wait_updated(lam, name)
    conf = lam.get_function_configuration(FunctionName=name)
    assert (conf["MemorySize"], conf["Timeout"], conf["Description"]) == (256, 42, "changed")
    assert conf["CodeSha256"] == before["CodeSha256"]
    start_ms = time.time() * 1000
    _, body = invoke(lam, name, {"action": "env"})
    env = body["env"]
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["NEW"] == "two"
    assert "OLD" not in env
    # The deadline the runtime got reflects the new 42 s timeout (old was 10 s).
    remaining = body["deadlineMs"] - start_ms
    assert 30_000 < remaining < 52_000, remaining
    # A stale RevisionId is refused with PreconditionFailed and changes nothing.
    err = client_error(
        lam.update_function_configuration, FunctionName=name, MemorySize=512, RevisionId=before["RevisionId"]
    )
    assert status(err) == 412
    assert err["Error"]["Code"] == "PreconditionFailedException"
    assert err["Error"]["Message"] == (
        "The Revision Id provided does not match the latest Revision Id. "
        "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
    )
    assert lam.get_function_configuration(FunctionName=name)["MemorySize"] == 256
    # The current RevisionId is accepted.
    ok = lam.update_function_configuration(FunctionName=name, MemorySize=512, RevisionId=conf["RevisionId"])
    assert ok["MemorySize"] == 512


def test_update_configuration_rejects_bad_values_without_changing(lam, probe_zip):
    name = create(lam, probe_zip)
    before = lam.get_function_configuration(FunctionName=name)
    for kwargs in ({"MemorySize": 20000}, {"Timeout": 1000}, {"EphemeralStorage": {"Size": 20000}}):
        err = client_error(lam.update_function_configuration, FunctionName=name, Description="x", **kwargs)
        assert status(err) == 400, kwargs
        assert err["Error"]["Code"] in ("InvalidParameterValueException", "ValidationException"), kwargs
    after = lam.get_function_configuration(FunctionName=name)
    assert after["RevisionId"] == before["RevisionId"]
    assert after["Description"] == before["Description"]
    assert after["MemorySize"] == before["MemorySize"]


def test_tenancy_config_is_immutable(server, lam, probe_zip):
    tenant_fn = create(lam, probe_zip)
    plain_fn = create(lam, probe_zip, tenant=False)
    with pytest.raises(botocore.exceptions.ParamValidationError):
        lam.update_function_configuration(FunctionName=tenant_fn, TenancyConfig={"TenantIsolationMode": "PER_TENANT"})
    for name in (tenant_fn, plain_fn):
        before = lam.get_function_configuration(FunctionName=name)
        code, hdrs, body = raw(
            server,
            "PUT",
            f"/2015-03-31/functions/{name}/configuration",
            {"TenancyConfig": {"TenantIsolationMode": "PER_TENANT"}, "Description": "sneaky"},
        )
        assert code == 400, body
        assert hdrs["X-Amzn-ErrorType"].split(":")[0] == "InvalidParameterValueException"
        assert body["Type"] == "User"
        assert body["message"]  # InvalidParameterValueException's member is `message`
        after = lam.get_function_configuration(FunctionName=name)
        assert after.get("TenancyConfig") == before.get("TenancyConfig")
        assert after["Description"] == before["Description"]
        assert after["RevisionId"] == before["RevisionId"]
    # The plain function still rejects a tenant id, the tenant function still requires one.
    err = client_error(lam.invoke, FunctionName=plain_fn, TenantId="x", Payload=b"{}")
    assert status(err) == 400
    err = client_error(lam.invoke, FunctionName=tenant_fn, Payload=b"{}")
    assert status(err) == 400


# ---------------------------------------------------------------- versions and aliases


def test_publish_version_and_versions_are_immutable(lam, probe_zip):
    name = create(lam, probe_zip, Environment={"Variables": {"STAGE": "one"}})
    v1 = lam.publish_version(FunctionName=name, Description="first")
    assert status(v1) == 201
    assert v1["Version"] == "1"
    assert v1["FunctionArn"] == fn_arn(name, "1")
    assert v1["Description"] == "first"
    assert v1["CodeSha256"] == sha_b64(probe_zip)
    assert v1["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}  # versions inherit it

    new_zip = zip_binary(TARGET / "probe", extra={"v2.txt": "2"})
    lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    wait_updated(lam, name)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"STAGE": "two"}})
    wait_updated(lam, name)
    v2 = lam.publish_version(FunctionName=name)
    assert v2["Version"] == "2"
    assert v2["CodeSha256"] == sha_b64(new_zip)

    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    assert [v["FunctionArn"] for v in versions] == [fn_arn(name), fn_arn(name, "1"), fn_arn(name, "2")]
    every = lam.get_paginator("list_functions").paginate(FunctionVersion="ALL").build_full_result()["Functions"]
    assert sorted(f["Version"] for f in every if f["FunctionName"] == name) == sorted(["$LATEST", "1", "2"])

    # Change $LATEST after publishing: the published versions keep what they had.
    lam.update_function_configuration(FunctionName=name, MemorySize=256, Environment={"Variables": {"STAGE": "three"}})
    wait_updated(lam, name)
    c1 = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert c1["Version"] == "1"
    assert c1["MemorySize"] == 128
    assert c1["Environment"] == {"Variables": {"STAGE": "one"}}
    assert c1["CodeSha256"] == sha_b64(probe_zip)
    c2 = lam.get_function_configuration(FunctionName=f"{name}:2")
    assert c2["Environment"] == {"Variables": {"STAGE": "two"}}
    assert c2["MemorySize"] == 128
    assert lam.get_function_configuration(FunctionName=name)["MemorySize"] == 256

    r, body = invoke(lam, name, {"action": "env"}, Qualifier="1")
    assert r["ExecutedVersion"] == "1"
    assert body["env"]["STAGE"] == "one"
    assert body["env"]["AWS_LAMBDA_FUNCTION_VERSION"] == "1"
    assert body["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    _, body = invoke(lam, name, {"action": "ls", "path": "/var/task"}, Qualifier="1")
    assert body["entries"] == ["bootstrap"]
    r, body = invoke(lam, name, {"action": "env"}, Qualifier="2")
    assert r["ExecutedVersion"] == "2"
    assert body["env"]["STAGE"] == "two"
    r, body = invoke(lam, name, {"action": "env"})
    assert r["ExecutedVersion"] == "$LATEST"
    assert body["env"]["STAGE"] == "three"

    err = client_error(lam.get_function_configuration, FunctionName=name, Qualifier="9")
    assert status(err) == 404
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    assert err["Error"]["Message"] == f"Function not found: {fn_arn(name, '9')}"


def test_aliases(lam, probe_zip):
    name = create(lam, probe_zip, Environment={"Variables": {"STAGE": "one"}})
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"STAGE": "two"}})
    wait_updated(lam, name)
    lam.publish_version(FunctionName=name)

    created = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="production")
    assert status(created) == 201
    assert created["AliasArn"] == fn_arn(name, "live")
    assert created["Name"] == "live"
    assert created["FunctionVersion"] == "1"
    assert created["Description"] == "production"
    uuid.UUID(created["RevisionId"])

    got = lam.get_alias(FunctionName=name, Name="live")
    assert status(got) == 200
    assert (got["AliasArn"], got["FunctionVersion"], got["Description"]) == (fn_arn(name, "live"), "1", "production")

    r, body = invoke(lam, name, {"action": "env"}, Qualifier="live")
    assert r["ExecutedVersion"] == "1"
    assert body["env"]["STAGE"] == "one"
    assert body["invokedFunctionArn"] == fn_arn(name, "live")

    updated = lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    assert status(updated) == 200
    assert updated["FunctionVersion"] == "2"
    assert updated["Description"] == "production"
    assert updated["RevisionId"] != created["RevisionId"]
    r, body = invoke(lam, name, {"action": "env"}, Qualifier="live")
    assert r["ExecutedVersion"] == "2"
    assert body["env"]["STAGE"] == "two"
    # Through the ARN form too.
    r, _ = invoke(lam, fn_arn(name, "live"), {"action": "echo"})
    assert r["ExecutedVersion"] == "2"

    lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="$LATEST")
    listed = lam.list_aliases(FunctionName=name)["Aliases"]
    assert sorted(a["Name"] for a in listed) == ["beta", "live"]
    assert {a["Name"]: a["FunctionVersion"] for a in listed} == {"beta": "$LATEST", "live": "2"}

    err = client_error(lam.create_alias, FunctionName=name, Name="live", FunctionVersion="1")
    assert status(err) == 409 and err["Error"]["Code"] == "ResourceConflictException"
    err = client_error(lam.create_alias, FunctionName=name, Name="ghost", FunctionVersion="7")
    assert status(err) == 404 and err["Error"]["Code"] == "ResourceNotFoundException"

    deleted = lam.delete_alias(FunctionName=name, Name="live")
    assert status(deleted) == 204
    err = client_error(lam.get_alias, FunctionName=name, Name="live")
    assert status(err) == 404
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    assert err["Error"]["Message"] == f"Cannot find alias arn: {fn_arn(name, 'live')}"
    err = client_error(lam.get_alias, FunctionName=name, Name="never")
    assert status(err) == 404 and err["Error"]["Code"] == "ResourceNotFoundException"
    err = client_error(lam.invoke, FunctionName=name, Qualifier="live", TenantId="t1", Payload=b"{}")
    assert status(err) == 404 and err["Error"]["Code"] == "ResourceNotFoundException"
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == ["beta"]


# ---------------------------------------------------------------- concurrency and account


def test_function_concurrency(lam, probe_zip):
    name = create(lam, probe_zip)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert status(put) == 200
    assert put["ReservedConcurrentExecutions"] == 5
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    invoke(lam, name, {"action": "echo"})

    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 0}
    err = client_error(lam.invoke, FunctionName=name, TenantId="t1", Payload=b'{"action":"echo"}')
    assert status(err) == 429
    assert err["Error"]["Code"] == "TooManyRequestsException"
    assert err.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded", err
    retry_after = err["ResponseMetadata"]["HTTPHeaders"].get("retry-after")
    assert retry_after is not None and int(retry_after) >= 0

    deleted = lam.delete_function_concurrency(FunctionName=name)
    assert status(deleted) == 204
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    assert "Concurrency" not in lam.get_function(FunctionName=name)
    _, body = invoke(lam, name, {"action": "echo", "n": 1})
    assert body["payload"]["n"] == 1

    err = client_error(lam.put_function_concurrency, FunctionName=unique("cp-nofn"), ReservedConcurrentExecutions=1)
    assert status(err) == 404 and err["Error"]["Code"] == "ResourceNotFoundException"


def test_account_settings(lam, probe_zip):
    name = create(lam, probe_zip)
    s = lam.get_account_settings()
    assert status(s) == 200
    limit, usage = s["AccountLimit"], s["AccountUsage"]
    assert set(limit) >= {
        "TotalCodeSize",
        "CodeSizeUnzipped",
        "CodeSizeZipped",
        "ConcurrentExecutions",
        "UnreservedConcurrentExecutions",
    }
    assert limit["CodeSizeZipped"] == 52428800
    assert limit["CodeSizeUnzipped"] == 262144000
    assert 0 < limit["UnreservedConcurrentExecutions"] <= limit["ConcurrentExecutions"]
    assert usage["FunctionCount"] >= 1
    assert usage["TotalCodeSize"] >= len(probe_zip)
    functions = lam.get_paginator("list_functions").paginate().build_full_result()["Functions"]
    assert usage["FunctionCount"] == len(functions)
    # Reserving concurrency takes it out of the unreserved pool.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=7)
    after = lam.get_account_settings()["AccountLimit"]
    assert after["UnreservedConcurrentExecutions"] == limit["UnreservedConcurrentExecutions"] - 7
    lam.delete_function_concurrency(FunctionName=name)
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == limit[
        "UnreservedConcurrentExecutions"
    ]


# ---------------------------------------------------------------- delete, conflicts


def test_delete_function(lam, probe_zip):
    name = create(lam, probe_zip)
    invoke(lam, name, {"action": "echo"})
    resp = lam.delete_function(FunctionName=name)
    assert status(resp) in (200, 204)
    for op in (lam.get_function, lam.get_function_configuration):
        err = client_error(op, FunctionName=name)
        assert status(err) == 404
        assert err["Error"]["Code"] == "ResourceNotFoundException"
        assert err["Error"]["Message"] == f"Function not found: {fn_arn(name)}"
    err = client_error(lam.invoke, FunctionName=name, TenantId="t1", Payload=b"{}")
    assert status(err) == 404
    assert name not in {f["FunctionName"] for f in lam.get_paginator("list_functions").paginate().build_full_result()["Functions"]}
    # The name is free again, and the new function starts from scratch.
    create(lam, probe_zip, name=name, tenant=False)
    assert "TenancyConfig" not in lam.get_function_configuration(FunctionName=name)
    _, body = invoke(lam, name, {"action": "echo"}, tenant=None)
    assert body["tenantId"] is None


def test_create_twice_conflicts(lam, probe_zip):
    name = create(lam, probe_zip)
    err = client_error(create, lam, probe_zip, name=name)
    assert status(err) == 409
    assert err["Error"]["Code"] == "ResourceConflictException"
    assert err["Error"]["Message"] == f"Function already exist: {name}"


# ---------------------------------------------------------------- bad input


def assert_not_created(lam, name):
    err = client_error(lam.get_function, FunctionName=name)
    assert status(err) == 404


def test_unparsable_json_body(server):
    code, hdrs, body = raw(server, "POST", "/2015-03-31/functions", b'{"FunctionName": "x", ')
    assert code == 400
    assert hdrs["X-Amzn-ErrorType"].split(":")[0] == "InvalidRequestContentException"
    assert body["message"]


def test_environment_over_4kb(lam, probe_zip):
    name = unique("cp-env")
    err = client_error(create, lam, probe_zip, name=name, Environment={"Variables": {"BIG": "x" * 5000}})
    assert status(err) == 400
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert err["Error"]["Message"].startswith(
        "Lambda was unable to configure your environment variables because the environment variables you have "
        "provided exceeded the 4KB limit."
    ), err["Error"]["Message"]
    assert_not_created(lam, name)


def test_unknown_runtime(lam, probe_zip):
    name = unique("cp-rt")
    err = client_error(create, lam, probe_zip, name=name, Runtime="cobol85.x")
    assert status(err) == 400
    assert err["Error"]["Code"] in ("ValidationException", "InvalidParameterValueException")
    assert "cobol85.x" in err["Error"]["Message"]
    assert_not_created(lam, name)


def test_garbage_zip(lam):
    name = unique("cp-garbage")
    err = client_error(create, lam, b"this is not a zip file at all" * 10, name=name)
    assert status(err) == 400
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert err["Error"]["Message"] == BAD_ZIP
    assert_not_created(lam, name)
    # UpdateFunctionCode checks the same way and keeps the old code.
    good = create(lam, zip_binary(TARGET / "probe"))
    sha = lam.get_function_configuration(FunctionName=good)["CodeSha256"]
    err = client_error(lam.update_function_code, FunctionName=good, ZipFile=b"PK\x03\x04 truncated")
    assert status(err) == 400
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert err["Error"]["Message"].startswith("Could not unzip uploaded file")
    assert lam.get_function_configuration(FunctionName=good)["CodeSha256"] == sha


def test_zip_with_parent_path_entry_is_rejected(server, lam):
    name = unique("cp-slip")
    evil = zip_entries([("bootstrap", probe_bytes(), 0o100755), ("../evil", b"owned", 0o100644)])
    err = client_error(create, lam, evil, name=name)
    assert status(err) == 400
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert "../evil" in err["Error"]["Message"]
    assert_not_created(lam, name)
    assert not list(server.data_dir.rglob("evil")), "the ../evil entry was written"


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../../../../etc/passwd"])
def test_zip_with_symlink_outside_is_rejected(server, lam, target):
    name = unique("cp-link")
    evil = zip_entries([("bootstrap", probe_bytes(), 0o100755), ("passwd", target.encode(), 0o120777)])
    err = client_error(create, lam, evil, name=name)
    assert status(err) == 400
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    msg = err["Error"]["Message"]
    assert "passwd" in msg and ("link" in msg.lower()), msg
    assert_not_created(lam, name)


def test_zip_with_symlink_inside_is_accepted(lam):
    # The control case for the two above: a link that stays in the tree is fine.
    good = zip_entries([("bootstrap", probe_bytes(), 0o100755), ("data/real.txt", b"real", 0o100644), ("link.txt", b"data/real.txt", 0o120777)])
    name = create(lam, good)
    _, body = invoke(lam, name, {"action": "read", "path": "/var/task/link.txt"})
    assert body["content"] == "real"


def test_function_name_too_long(server, lam, probe_zip):
    name = "n" * 65
    err = client_error(create, lam, probe_zip, name=name)
    assert status(err) == 400
    assert err["Error"]["Code"] == "ValidationException"
    assert err["Error"]["Message"] == (
        f"1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: "
        "Member must have length less than or equal to 64"
    )
    assert_not_created(lam, "n" * 64)
    # 64 is allowed.
    ok = "m" + uuid.uuid4().hex[:8] + "m" * 55
    assert len(ok) == 64
    create(lam, probe_zip, name=ok)
    assert lam.get_function_configuration(FunctionName=ok)["FunctionName"] == ok


@pytest.mark.parametrize(
    "kwargs",
    [{"MemorySize": 20000}, {"Timeout": 1000}, {"EphemeralStorage": {"Size": 20000}}, {"MemorySize": 10241}],
    ids=["memory-20000", "timeout-1000", "ephemeral-20000", "memory-10241"],
)
def test_out_of_range_settings_are_rejected(lam, probe_zip, kwargs):
    name = unique("cp-range")
    err = client_error(create, lam, probe_zip, name=name, **kwargs)
    assert status(err) == 400
    assert err["Error"]["Code"] in ("InvalidParameterValueException", "ValidationException")
    assert err["Error"]["Message"]
    assert_not_created(lam, name)


def test_log_level_with_text_format(lam, probe_zip):
    name = unique("cp-log")
    err = client_error(
        create, lam, probe_zip, name=name, LoggingConfig={"LogFormat": "Text", "ApplicationLogLevel": "INFO"}
    )
    assert status(err) == 400
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert err["Error"]["Message"] == LOG_LEVEL_WITH_TEXT
    assert_not_created(lam, name)
    # The same levels with JSON are fine.
    create(lam, probe_zip, name=name, LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "WARN"})
    lc = lam.get_function_configuration(FunctionName=name)["LoggingConfig"]
    assert lc["LogFormat"] == "JSON" and lc["ApplicationLogLevel"] == "WARN"
    # Switching back to Text while a level is set is rejected on update too.
    err = client_error(lam.update_function_configuration, FunctionName=name, LoggingConfig={"LogFormat": "Text", "SystemLogLevel": "WARN"})
    assert status(err) == 400
    assert err["Error"]["Message"] == LOG_LEVEL_WITH_TEXT


def test_trailing_slash_paths(server, lam, probe_zip):
    name = create(lam, probe_zip)
    code, _, body = raw(server, "GET", "/2015-03-31/functions/")
    assert code == 200
    assert isinstance(body["Functions"], list)
    code, _, body = raw(server, "GET", "/2015-03-31/functions/?MaxItems=50")
    assert code == 200 and len(body["Functions"]) <= 50
    code, _, body = raw(server, "GET", "/2016-08-19/account-settings/")
    assert code == 200
    assert "ConcurrentExecutions" in body["AccountLimit"]
    assert body["AccountUsage"]["FunctionCount"] >= 1
    assert name in {f["FunctionName"] for f in lam.get_paginator("list_functions").paginate().build_full_result()["Functions"]}


# ---------------------------------------------------------------- the aws CLI


def test_aws_cli_lifecycle(server, probe_zip, tmp_path):
    name = unique("cp-cli")
    zip_path = tmp_path / "fn.zip"
    zip_path.write_bytes(probe_zip)
    out = server.cli(
        "lambda",
        "create-function",
        "--function-name", name,
        "--runtime", "provided.al2023",
        "--role", ROLE,
        "--handler", "bootstrap",
        "--zip-file", f"fileb://{zip_path}",
        "--tenancy-config", '{"TenantIsolationMode":"PER_TENANT"}',
        "--output", "json",
    )
    created = json.loads(out.stdout)
    assert created["FunctionArn"] == fn_arn(name)
    assert created["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    assert created["CodeSha256"] == sha_b64(probe_zip)
    assert created["State"] == "Pending"

    server.cli("lambda", "wait", "function-active-v2", "--function-name", name, timeout=90)
    out = server.cli("lambda", "update-function-configuration", "--function-name", name, "--memory-size", "256")
    assert json.loads(out.stdout)["MemorySize"] == 256
    server.cli("lambda", "wait", "function-updated-v2", "--function-name", name, timeout=90)

    conf = json.loads(server.cli("lambda", "get-function-configuration", "--function-name", name, "--output", "json").stdout)
    assert conf["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    assert conf["MemorySize"] == 256
    assert conf["State"] == "Active" and conf["LastUpdateStatus"] == "Successful"

    outfile = tmp_path / "out.json"
    inv = server.cli(
        "lambda", "invoke", "--function-name", name, "--tenant-id", "cli-tenant",
        "--payload", '{"action":"echo"}', str(outfile),
    )
    assert json.loads(inv.stdout)["StatusCode"] == 200
    assert json.loads(outfile.read_text())["tenantId"] == "cli-tenant"

    listed = json.loads(server.cli("lambda", "list-functions", "--output", "json").stdout)
    assert name in [f["FunctionName"] for f in listed["Functions"]]

    server.cli("lambda", "delete-function", "--function-name", name)
    gone = server.cli("lambda", "get-function-configuration", "--function-name", name, check=False)
    assert gone.returncode != 0
    assert "ResourceNotFoundException" in gone.stderr
    listed = json.loads(server.cli("lambda", "list-functions", "--output", "json").stdout)
    assert name not in [f["FunctionName"] for f in listed["Functions"]]
