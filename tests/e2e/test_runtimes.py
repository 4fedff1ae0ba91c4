"""Managed runtimes (Python, Node.js) through boto3, the real server and real sandboxes: handler
resolution, the context object, error shapes, log capture in Text and JSON, tenant isolation, and
conformance with AWS's own Python runtime client (awslambdaric) on the same functions."""

import base64
import io
import json
import pathlib
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile

import pytest
from botocore.exceptions import ClientError

from conftest import ROLE, unique

HOST_PYTHON = subprocess.run(
    ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
    capture_output=True, text=True, check=True,
).stdout.strip()


def zip_files(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            if isinstance(data, tuple):  # (bytes, mode)
                info = zipfile.ZipInfo(name)
                info.external_attr = data[1] << 16
                z.writestr(info, data[0])
            else:
                z.writestr(name, data)
    return buf.getvalue()


def make(lam, runtime, handler, files, tenant=True, **kw):
    name = unique(runtime.replace(".", "-"))
    args = dict(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                Code={"ZipFile": zip_files(files)}, Timeout=kw.pop("Timeout", 10))
    if tenant:
        args["TenancyConfig"] = {"TenantIsolationMode": "PER_TENANT"}
    args.update(kw)
    lam.create_function(**args)
    return name


def invoke(lam, name, payload=None, tenant="t1", tail=True):
    kw = dict(FunctionName=name, Payload=json.dumps(payload if payload is not None else {}).encode())
    if tenant:
        kw["TenantId"] = tenant
    if tail:
        kw["LogType"] = "Tail"
    r = lam.invoke(**kw)
    body = r["Payload"].read()
    logs = base64.b64decode(r["LogResult"]).decode() if tail else ""
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return r, body, logs


def stored_logs(server, name, needle, timeout=10):
    """The function's stored log lines, once one contains `needle` (the writer batches)."""
    deadline = time.time() + timeout
    while True:
        url = f"{server.endpoint}/quarters/v1/logs?function={urllib.parse.quote(name)}&limit=1000"
        with urllib.request.urlopen(url, timeout=10) as r:
            lines = [rec["message"] for rec in json.load(r)["Records"]]
        if any(needle in line for line in lines) or time.time() > deadline:
            return "\n".join(lines)
        time.sleep(0.1)


PY_APP = '''
import json, logging, os, time
logger = logging.getLogger()
logger.setLevel(logging.INFO)
COUNT = 0

def handler(event, context):
    global COUNT
    COUNT += 1
    action = event.get("action", "context")
    if action == "context":
        print("hello from", context.function_name)
        logger.info("logged %s", "info")
        return {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "remaining": context.get_remaining_time_in_millis(),
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "tenant_id": context.tenant_id,
            "execution_env": os.environ.get("AWS_EXECUTION_ENV"),
            "cwd": os.getcwd(),
            "count": COUNT,
            "pid": os.getpid(),
        }
    if action == "raise":
        raise ValueError("boom: " + str(event.get("n", 0)))
    if action == "custom":
        class InsufficientFunds(Exception):
            pass
        raise InsufficientFunds({"balance": 3})
    if action == "tmp":
        path = "/tmp/owner"
        before = open(path).read() if os.path.exists(path) else None
        with open(path, "w") as f:
            f.write(context.tenant_id or "")
        return {"before": before}
    if action == "bytes":
        return b"raw bytes"
    if action == "unserialisable":
        return {"s": {1, 2}}
    if action == "echo":
        return event
    if action == "unicode":
        return {"text": "zürich ✓"}
    if action == "none":
        return None
    if action == "exit":
        os._exit(3)
    return {"unknown": action}
'''

NODE_APP = '''
let count = 0;
exports.handler = async (event, context) => {
  count += 1;
  const action = event.action || "context";
  if (action === "context") {
    console.log("hello from", context.functionName);
    console.error("an error line");
    return {
      awsRequestId: context.awsRequestId,
      functionName: context.functionName,
      functionVersion: context.functionVersion,
      invokedFunctionArn: context.invokedFunctionArn,
      memoryLimitInMB: context.memoryLimitInMB,
      remaining: context.getRemainingTimeInMillis(),
      logGroupName: context.logGroupName,
      logStreamName: context.logStreamName,
      tenantId: context.tenantId,
      executionEnv: process.env.AWS_EXECUTION_ENV,
      cwd: process.cwd(),
      count,
      waits: context.callbackWaitsForEmptyEventLoop,
    };
  }
  if (action === "raise") throw new TypeError("boom: " + (event.n || 0));
  if (action === "reject-string") throw "plain string";
  if (action === "echo") return event;
  if (action === "exit") process.exit(3);
  return { unknown: action };
};
exports.callback = (event, context, callback) => {
  setTimeout(() => callback(null, { via: "callback", tenantId: context.tenantId }), 5);
};
exports.callbackError = (event, context, callback) => {
  callback(new Error("callback failed"));
};
exports.succeed = (event, context) => {
  context.succeed({ via: "succeed" });
};
exports.nothing = (event, context) => {};
exports.nested = { deeper: { fn: async () => "nested export" } };
'''


# ---------------------------------------------------------------- Python


@pytest.fixture(scope="module")
def py_fn(server):
    lam = server.client()
    return make(lam, "python3.12", "lambda_function.handler", {"lambda_function.py": PY_APP})


def test_python_context_and_logs(server, lam, py_fn):
    r, body, logs = invoke(lam, py_fn, {"action": "context"}, tenant="blue tenant/..")
    assert "FunctionError" not in r, body
    assert re.fullmatch(r"[0-9a-f-]{36}", body["aws_request_id"])
    assert body["function_name"] == py_fn
    assert body["function_version"] == "$LATEST"
    assert body["invoked_function_arn"].endswith(f":function:{py_fn}")
    assert body["memory_limit_in_mb"] == "128"
    assert 0 < body["remaining"] <= 10_000
    assert body["log_group_name"] == f"/aws/lambda/{py_fn}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", body["log_stream_name"])
    assert body["tenant_id"] == "blue tenant/.."
    assert body["execution_env"] == "AWS_Lambda_python3.12"
    assert body["cwd"] == "/var/task"
    # print() and logging, in Lambda's Text format.
    assert f"hello from {py_fn}" in logs
    assert re.search(r"\[INFO\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t" + body["aws_request_id"] + r"\tlogged info", logs)
    stored = stored_logs(server, py_fn, "INIT_START")
    assert "INIT_START Runtime Version: python:3.12.quarters" in stored
    assert f"-host{HOST_PYTHON}" in stored


def test_python_warm_reuse_and_tenant_isolation(lam, py_fn):
    _, a1, _ = invoke(lam, py_fn, {"action": "context"}, tenant="iso-a")
    _, a2, _ = invoke(lam, py_fn, {"action": "context"}, tenant="iso-a")
    _, b1, _ = invoke(lam, py_fn, {"action": "context"}, tenant="iso-b")
    assert a2["count"] == a1["count"] + 1 and a2["log_stream_name"] == a1["log_stream_name"]
    assert b1["count"] == 1 and b1["log_stream_name"] != a1["log_stream_name"]
    _, t1, _ = invoke(lam, py_fn, {"action": "tmp"}, tenant="iso-a")
    _, t2, _ = invoke(lam, py_fn, {"action": "tmp"}, tenant="iso-b")
    _, t3, _ = invoke(lam, py_fn, {"action": "tmp"}, tenant="iso-a")
    assert t1["before"] is None and t2["before"] is None and t3["before"] == "iso-a"


def test_python_exception_shape(lam, py_fn):
    r, body, logs = invoke(lam, py_fn, {"action": "raise", "n": 7})
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "boom: 7"
    assert re.fullmatch(r"[0-9a-f-]{36}", body["requestId"])
    assert any('File "/var/task/lambda_function.py"' in line and "in handler" in line for line in body["stackTrace"])
    assert not any("bootstrap.py" in line for line in body["stackTrace"])
    assert "[ERROR] ValueError: boom: 7\rTraceback (most recent call last):" in logs
    # The environment survives a handled exception.
    r, body, _ = invoke(lam, py_fn, {"action": "echo", "x": 1})
    assert "FunctionError" not in r and body == {"action": "echo", "x": 1}


def test_python_return_values(lam, py_fn):
    _, body, _ = invoke(lam, py_fn, {"action": "unicode"})
    assert body == {"text": "zürich ✓"}
    r, body, _ = invoke(lam, py_fn, {"action": "none"})
    assert body is None and "FunctionError" not in r
    r, body, _ = invoke(lam, py_fn, {"action": "bytes"})
    assert body == b"raw bytes"
    r, body, _ = invoke(lam, py_fn, {"action": "unserialisable"})
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"
    assert body["errorMessage"].startswith("Unable to marshal response:")


def test_python_exit_is_runtime_exit_error(lam, py_fn):
    r, body, _ = invoke(lam, py_fn, {"action": "exit"}, tenant="exiter")
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    r, body, _ = invoke(lam, py_fn, {"action": "echo"}, tenant="exiter")
    assert "FunctionError" not in r


@pytest.mark.parametrize(
    "handler,files,error_type,message",
    [
        ("missing.handler", {"lambda_function.py": "def handler(e, c): return 1\n"},
         "Runtime.ImportModuleError", "Unable to import module 'missing': No module named 'missing'"),
        ("lambda_function.nope", {"lambda_function.py": "def handler(e, c): return 1\n"},
         "Runtime.HandlerNotFound", "Handler 'nope' missing on module 'lambda_function'"),
        ("nodot", {"lambda_function.py": "def handler(e, c): return 1\n"},
         "Runtime.MalformedHandlerName", "Bad handler 'nodot': not enough values to unpack (expected 2, got 1)"),
        ("lambda_function.handler", {"lambda_function.py": "def handler(e, c):\n  return (\n"},
         "Runtime.UserCodeSyntaxError", "Syntax error in module 'lambda_function'"),
        ("lambda_function.handler", {"lambda_function.py": "import nonexistent_dependency\n"},
         "Runtime.ImportModuleError", "Unable to import module 'lambda_function': No module named 'nonexistent_dependency'"),
        ("lambda_function.handler", {"lambda_function.py": "raise RuntimeError('init went wrong')\n"},
         "RuntimeError", "init went wrong"),
    ],
)
def test_python_init_errors(lam, handler, files, error_type, message):
    name = make(lam, "python3.12", handler, files)
    r, body, logs = invoke(lam, name)
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == error_type, body
    assert body["errorMessage"].startswith(message), body
    assert "stackTrace" in body and "requestId" in body
    assert "LAMBDA_WARNING: Unhandled exception." in logs
    assert f"[ERROR] {error_type}:" in logs


def test_python_nested_handler_and_packages(lam):
    files = {
        "src/app/main.py": "from helper import greet\ndef handler(e, c):\n    return greet(e['who'])\n",
        "src/app/__init__.py": "",
        "src/__init__.py": "",
        "helper.py": "def greet(who):\n    return 'hello ' + who\n",
    }
    for handler in ("src/app/main.handler", "src.app.main.handler"):
        name = make(lam, "python3.13", handler, files)
        r, body, _ = invoke(lam, name, {"who": "nested"})
        assert "FunctionError" not in r, body
        assert body == "hello nested"


def test_python_json_logs_carry_the_tenant(lam):
    name = make(lam, "python3.12", "lambda_function.handler", {"lambda_function.py": PY_APP},
                LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "INFO"})
    _, body, logs = invoke(lam, name, {"action": "context"}, tenant="json-tenant")
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    app = [x for x in records if x.get("message") == "logged info"]
    assert app, logs
    assert app[0]["level"] == "INFO" and app[0]["logger"] == "root"
    assert app[0]["requestId"] == body["aws_request_id"]
    assert app[0]["tenantId"] == "json-tenant"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", app[0]["timestamp"])
    r, body, logs = invoke(lam, name, {"action": "raise"}, tenant="json-tenant")
    errors = [json.loads(line) for line in logs.splitlines() if line.startswith("{") and '"errorType"' in line]
    assert any(e["errorType"] == "ValueError" and e["level"] == "ERROR" for e in errors), logs


# What a function sees of the runtime's imports: nothing heavy at start (json, re, logging,
# traceback cost a cold start 15-25 ms), logging configured as awslambdaric's when the
# function imports it, whenever that is (here inside the handler, through a submodule), and its
# own module already compiled (at CreateFunction).
PY_LAZY = """
import os, sys
HEAVY = ("json", "re", "logging", "traceback", "enum", "importlib")
AT_IMPORT = sorted(m for m in HEAVY if m in sys.modules)
# /var/task is read-only: a .pyc beside the source can only come from the deploy's compilation.
PRECOMPILED = os.path.exists(__cached__)

def handler(event, context):
    at_call = sorted(m for m in HEAVY if m in sys.modules)
    import logging.handlers
    logging.getLogger("app").warning("late %s", "logger")
    try:
        raise KeyError("inner")
    except KeyError:
        logging.getLogger().exception("caught")
    return {"at_import": AT_IMPORT, "at_call": at_call, "handlers": len(logging.getLogger().handlers),
            "event": event, "precompiled": PRECOMPILED}
"""


def test_python_runtime_imports_little_and_configures_logging_when_imported(lam):
    name = make(lam, f"python{HOST_PYTHON}", "lambda_function.handler", {"lambda_function.py": PY_LAZY})
    event = {"s": "caf\u00e9 \u2028", "n": [1, 2.5, -0.0, 1e300, 12345678901234567890], "o": {"t": True, "z": None}}
    r, body, logs = invoke(lam, name, event)
    assert "FunctionError" not in r, body
    assert body["at_import"] == [] and body["at_call"] == [], body
    assert body["handlers"] == 1, body
    assert body["precompiled"] is True, body
    assert body["event"] == event
    assert re.search(r"\[WARNING\]\t\S+\t\S+\tlate logger", logs), logs
    assert re.search(r"\[ERROR\]\t\S+\t\S+\tcaught", logs) and "KeyError: 'inner'" in logs, logs
    # JSON logs too, with the tenant.
    name = make(lam, f"python{HOST_PYTHON}", "lambda_function.handler", {"lambda_function.py": PY_LAZY},
                LoggingConfig={"LogFormat": "JSON"})
    _, body, logs = invoke(lam, name, {}, tenant="lazy-json")
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    late = [x for x in records if x.get("message") == "late logger"]
    assert late and late[0]["level"] == "WARNING" and late[0]["tenantId"] == "lazy-json", logs
    caught = [x for x in records if x.get("message") == "caught"]
    assert caught and caught[0]["errorType"] == "KeyError" and caught[0]["stackTrace"], logs


def test_every_python_identifier_runs_on_the_host_interpreter(lam):
    for minor in range(9, 15):
        rt = f"python3.{minor}"
        name = make(lam, rt, "lambda_function.handler", {"lambda_function.py": PY_APP}, tenant=False)
        r, body, logs = invoke(lam, name, {"action": "context"}, tenant=None)
        assert "FunctionError" not in r, (rt, body)
        assert body["execution_env"] == f"AWS_Lambda_{rt}"
        cfg = lam.get_function(FunctionName=name)["Configuration"]
        assert cfg["Runtime"] == rt
        assert f"host{HOST_PYTHON}" in cfg["RuntimeVersionConfig"]["RuntimeVersionArn"]


@pytest.mark.parametrize(
    "runtime,code,fragment",
    [
        ("python3.8", "InvalidParameterValueException", "no longer supported"),
        ("nodejs16.x", "InvalidParameterValueException", "no longer supported"),
        ("python4.0", "ValidationException", "Member must satisfy enum value set"),
        ("java21", "InvalidParameterValueException", "not supported by this Quarters server"),
    ],
)
def test_unknown_and_retired_runtimes_are_refused(lam, runtime, code, fragment):
    with pytest.raises(ClientError) as e:
        make(lam, runtime, "lambda_function.handler", {"lambda_function.py": PY_APP})
    assert e.value.response["Error"]["Code"] == code
    assert fragment in e.value.response["Error"]["Message"]


# ---------------------------------------------------------------- Node.js


@pytest.fixture(scope="module")
def node_fn(server):
    lam = server.client()
    return make(lam, "nodejs20.x", "index.handler", {"index.js": NODE_APP})


def test_node_context_and_logs(server, lam, node_fn):
    r, body, logs = invoke(lam, node_fn, {"action": "context"}, tenant="green")
    assert "FunctionError" not in r, body
    assert re.fullmatch(r"[0-9a-f-]{36}", body["awsRequestId"])
    assert body["functionName"] == node_fn
    assert body["functionVersion"] == "$LATEST"
    assert body["invokedFunctionArn"].endswith(f":function:{node_fn}")
    assert body["memoryLimitInMB"] == "128"
    assert 0 < body["remaining"] <= 10_000
    assert body["logGroupName"] == f"/aws/lambda/{node_fn}"
    assert body["tenantId"] == "green"
    assert body["executionEnv"] == "AWS_Lambda_nodejs20.x"
    assert body["cwd"] == "/var/task"
    assert body["waits"] is True
    rid = body["awsRequestId"]
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t" + rid + r"\tINFO\thello from " + node_fn, logs)
    assert re.search(rid + r"\tERROR\tan error line", logs)
    assert "INIT_START Runtime Version: nodejs:20.quarters" in stored_logs(server, node_fn, "INIT_START")


def test_node_handler_styles(lam, node_fn):
    name = make(lam, "nodejs22.x", "index.callback", {"index.js": NODE_APP})
    r, body, _ = invoke(lam, name, tenant="cb")
    assert body == {"via": "callback", "tenantId": "cb"}
    name = make(lam, "nodejs22.x", "index.succeed", {"index.js": NODE_APP})
    assert invoke(lam, name)[1] == {"via": "succeed"}
    name = make(lam, "nodejs22.x", "index.nothing", {"index.js": NODE_APP})
    r, body, _ = invoke(lam, name)
    assert body is None and "FunctionError" not in r
    name = make(lam, "nodejs22.x", "index.nested.deeper.fn", {"index.js": NODE_APP})
    assert invoke(lam, name)[1] == "nested export"
    name = make(lam, "nodejs22.x", "index.callbackError", {"index.js": NODE_APP})
    r, body, logs = invoke(lam, name)
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Error" and body["errorMessage"] == "callback failed"
    assert "\tERROR\tInvoke Error \t" in logs


def test_node_module_kinds(lam):
    esm = "export const handler = async (event) => ({ kind: 'esm', got: event.x });\n"
    cases = [
        ("index.handler", {"index.mjs": esm}),
        ("index.handler", {"index.js": esm, "package.json": '{"type": "module"}'}),
        ("index.handler", {"index.cjs": "module.exports.handler = async (e) => ({ kind: 'esm', got: e.x });\n"}),
        ("src/app.handler", {"src/app.mjs": esm}),
    ]
    for handler, files in cases:
        name = make(lam, "nodejs24.x", handler, files)
        r, body, _ = invoke(lam, name, {"x": 5})
        assert "FunctionError" not in r, (handler, files, body)
        assert body == {"kind": "esm", "got": 5}


def test_node_errors(lam, node_fn):
    r, body, logs = invoke(lam, node_fn, {"action": "raise", "n": 3})
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == "TypeError"
    assert body["errorMessage"] == "boom: 3"
    assert body["trace"][0] == "TypeError: boom: 3"
    assert any("/var/task/index.js" in line for line in body["trace"])
    assert "\tERROR\tInvoke Error \t" in logs
    r, body, _ = invoke(lam, node_fn, {"action": "reject-string"})
    assert body == {"errorType": "string", "errorMessage": "plain string", "trace": []}
    r, body, _ = invoke(lam, node_fn, {"action": "exit"}, tenant="node-exit")
    assert body["errorType"] == "Runtime.ExitError"
    r, body, _ = invoke(lam, node_fn, {"action": "echo", "ok": True}, tenant="node-exit")
    assert body == {"action": "echo", "ok": True}


@pytest.mark.parametrize(
    "handler,files,error_type,message",
    [
        ("missing.handler", {"index.js": NODE_APP}, "Runtime.ImportModuleError", "Error: Cannot find module 'missing'"),
        ("index.nope", {"index.js": NODE_APP}, "Runtime.HandlerNotFound", "index.nope is undefined or not exported"),
        ("index.handler", {"index.js": "exports.handler = 5;\n"}, "Runtime.HandlerNotFound", "index.handler is not a function"),
        ("nodot", {"index.js": NODE_APP}, "Runtime.MalformedHandlerName", "Bad handler"),
        ("index.handler", {"index.js": "exports.handler = async () => {;\n"}, "Runtime.UserCodeSyntaxError", "SyntaxError:"),
        ("index.handler", {"index.js": "throw new RangeError('init went wrong');\n"}, "RangeError", "init went wrong"),
    ],
)
def test_node_init_errors(lam, handler, files, error_type, message):
    name = make(lam, "nodejs20.x", handler, files)
    r, body, logs = invoke(lam, name)
    assert r["FunctionError"] == "Unhandled"
    assert body["errorType"] == error_type, body
    assert body["errorMessage"].startswith(message), body
    assert isinstance(body["trace"], list)
    assert "\tERROR\tUncaught Exception \t" in logs


def test_node_json_logs_carry_the_tenant(lam):
    name = make(lam, "nodejs20.x", "index.handler", {"index.js": NODE_APP}, LoggingConfig={"LogFormat": "JSON"})
    _, body, logs = invoke(lam, name, {"action": "context"}, tenant="json-node")
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    app = [x for x in records if x.get("message") == f"hello from {name}"]
    assert app, logs
    assert app[0]["level"] == "INFO" and app[0]["requestId"] == body["awsRequestId"]
    assert app[0]["tenantId"] == "json-node"
    assert any(x.get("level") == "ERROR" and x.get("message") == "an error line" for x in records)


def test_node_runtime_loads_no_network_stack(lam):
    """The runtime client speaks HTTP itself, on the Runtime API connection the sandbox's init
    opened for it (fd 3): neither `http` nor even `net` is loaded (each costs every cold start
    milliseconds)."""
    code = ("exports.handler = async (e) => ({ loaded: process.moduleLoadList.filter((m) => "
            "/^NativeModule (net|http|_http_\\w+)$/.test(m)), e });\n")
    name = make(lam, "nodejs20.x", "index.handler", {"index.js": code})
    big = {"s": "x" * 300_000, "u": "caf\u00e9"}
    r, body, _ = invoke(lam, name, big)
    assert "FunctionError" not in r, body
    assert body["loaded"] == [] and body["e"] == big, body["loaded"]


def test_node_error_after_the_response_is_reported_on_a_second_connection(lam):
    """An exception thrown after the handler has answered, while the client's one connection is
    held by the long-polling `next`: it is reported on a new connection and the runtime exits,
    as aws-lambda-ric's does, so the tenant's next call gets a fresh environment (a client that
    queued the report behind `next` would hang, and the next call would find the old one)."""
    code = ("let count = 0;\n"
            "exports.handler = async (e) => { count += 1; if (e.late) setTimeout(() => { throw new Error('late'); }, 100);"
            " return { count }; };\n")
    name = make(lam, "nodejs20.x", "index.handler", {"index.js": code})
    _, first, _ = invoke(lam, name, {"late": True}, tenant="late")
    assert first == {"count": 1}
    deadline = time.time() + 10
    while True:
        _, again, _ = invoke(lam, name, {}, tenant="late")
        if again == {"count": 1} or time.time() > deadline:
            break
        time.sleep(0.2)
    assert again == {"count": 1}, again


def test_node_tenants_get_their_own_environments(lam, node_fn):
    _, a1, _ = invoke(lam, node_fn, {"action": "context"}, tenant="n-a")
    _, a2, _ = invoke(lam, node_fn, {"action": "context"}, tenant="n-a")
    _, b1, _ = invoke(lam, node_fn, {"action": "context"}, tenant="n-b")
    assert a2["count"] == a1["count"] + 1 and b1["count"] == 1
    assert a1["logStreamName"] == a2["logStreamName"] != b1["logStreamName"]


# ---------------------------------------------------------------- conformance with awslambdaric

AWSLAMBDARIC = "awslambdaric==4.2.2"


@pytest.fixture(scope="module")
def awslambdaric_files(tmp_path_factory):
    """AWS's Python runtime interface client, for the host's Python, as files for a zip."""
    target = tmp_path_factory.mktemp("awslambdaric")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(target),
         "--only-binary=:all:", "--implementation", "cp", "--python-version", HOST_PYTHON,
         "--platform", "manylinux2014_x86_64", AWSLAMBDARIC],
        check=True, timeout=300,
    )
    files = {}
    for path in target.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and ".dist-info" not in str(path):
            files[str(path.relative_to(target))] = (path.read_bytes(), 0o100755 if path.suffix == ".so" else 0o100644)
    return files


def test_python_runtime_matches_awslambdaric(lam, awslambdaric_files):
    """The same function under our runtime (python3.11) and under awslambdaric as a custom
    runtime: the same responses and the same error bodies (request ids aside)."""
    ric = dict(awslambdaric_files)
    ric["bootstrap"] = (b'#!/bin/sh\nexec /usr/bin/python3 -m awslambdaric "$_HANDLER"\n', 0o100755)
    ric["lambda_function.py"] = PY_APP
    theirs = make(lam, "provided.al2023", "lambda_function.handler", ric)
    ours = make(lam, f"python{HOST_PYTHON}", "lambda_function.handler", {"lambda_function.py": PY_APP})
    events = [
        {"action": "echo", "nested": {"list": [1, 2.5, None, True], "s": "x"}},
        {"action": "unicode"},
        {"action": "none"},
        {"action": "raise", "n": 42},
        {"action": "custom"},
        {"action": "unserialisable"},
        {"action": "context"},
    ]
    for event in events:
        r1, b1, l1 = invoke(lam, ours, event, tenant="conf")
        r2, b2, l2 = invoke(lam, theirs, event, tenant="conf")
        assert r1.get("FunctionError") == r2.get("FunctionError"), (event, b1, b2)
        if event["action"] == "context":
            for key in ("function_version", "memory_limit_in_mb", "tenant_id", "cwd", "count"):
                assert b1[key] == b2[key], (key, b1, b2)
            # Theirs really is the custom runtime (no managed-runtime variables).
            assert b1["execution_env"] == f"AWS_Lambda_python{HOST_PYTHON}" and b2["execution_env"] is None
            assert re.search(r"\[INFO\]\t\S+\t\S+\tlogged info", l1) and re.search(r"\[INFO\]\t\S+\t\S+\tlogged info", l2)
            continue
        if isinstance(b1, dict) and "requestId" in b1:
            assert b1.pop("requestId") and b2.pop("requestId")
            # Frames name the same user code at the same lines.
            assert b1["stackTrace"] == b2["stackTrace"], (b1, b2)
            assert "[ERROR] " + b1["errorType"] in l1 and "[ERROR] " + b2["errorType"] in l2
        assert b1 == b2, (event, b1, b2)
    # Init errors too.
    broken = {"lambda_function.py": "import nonexistent_dependency\n"}
    ours = make(lam, f"python{HOST_PYTHON}", "lambda_function.handler", broken)
    theirs = make(lam, "provided.al2023", "lambda_function.handler", {**ric, **broken})
    _, b1, _ = invoke(lam, ours)
    _, b2, _ = invoke(lam, theirs)
    assert b1 == b2, (b1, b2)


# ---------------------------------------------------------------- conformance with aws-lambda-ric

NODE_RIC = pathlib.Path(__file__).resolve().parents[2] / ".venv" / "node" / "node_modules" / "aws-lambda-ric"


@pytest.fixture(scope="module")
def node_ric_files():
    """AWS's Node.js runtime interface client, built by `./dev test` (native code included)."""
    assert (NODE_RIC / "dist" / "rapid-client.node").is_file(), (
        f"{NODE_RIC} is not built: ./dev test builds it (npm install aws-lambda-ric into .venv/node)")
    files = {}
    for rel in ["package.json", "bin/index.mjs", "dist/index.mjs", "dist/rapid-client.node"]:
        mode = 0o100755 if rel.endswith(".node") else 0o100644
        files[f"node_modules/aws-lambda-ric/{rel}"] = ((NODE_RIC / rel).read_bytes(), mode)
    files["bootstrap"] = (
        b'#!/bin/sh\nexec /usr/bin/node /var/task/node_modules/aws-lambda-ric/bin/index.mjs "$_HANDLER"\n', 0o100755)
    return files


def user_frames(trace):
    """A Node error's trace, reduced to its first line and the frames in the function's own file."""
    return trace[:1] + [line for line in trace[1:] if "/var/task/index.js" in line]


def test_node_runtime_matches_aws_lambda_ric(lam, node_ric_files):
    """The same functions under our Node.js runtime and under aws-lambda-ric as a custom runtime:
    the same responses and error bodies (runtime-internal stack frames aside)."""
    cases = [
        ("index.handler", {"action": "echo", "nested": {"list": [1, 2.5, None, True]}}),
        ("index.handler", {"action": "raise", "n": 9}),
        ("index.handler", {"action": "reject-string"}),
        ("index.handler", {"action": "context"}),
        ("index.callback", {}),
        ("index.callbackError", {}),
        ("index.succeed", {}),
        ("index.nothing", {}),
        ("index.nested.deeper.fn", {}),
        ("index.nope", {}),
        ("missing.handler", {}),
    ]
    for handler, event in cases:
        theirs = make(lam, "provided.al2023", handler, {**node_ric_files, "index.js": NODE_APP})
        ours = make(lam, "nodejs20.x", handler, {"index.js": NODE_APP})
        r1, b1, l1 = invoke(lam, ours, event, tenant="conf")
        r2, b2, l2 = invoke(lam, theirs, event, tenant="conf")
        assert r1.get("FunctionError") == r2.get("FunctionError"), (handler, event, b1, b2)
        if handler == "index.handler" and event["action"] == "context":
            assert b1["executionEnv"] == "AWS_Lambda_nodejs20.x" and "executionEnv" not in b2
            for key in ("functionVersion", "memoryLimitInMB", "tenantId", "cwd", "count", "waits"):
                assert b1[key] == b2[key], (key, b1, b2)
            for logs in (l1, l2):
                assert re.search(r"\tINFO\thello from ", logs) and re.search(r"\tERROR\tan error line", logs), logs
            continue
        if isinstance(b1, dict) and "trace" in b1:
            assert user_frames(b1.pop("trace")) == user_frames(b2.pop("trace")), (handler, b1, b2)
            # The require stack names the runtime's own file, which differs.
            b1["errorMessage"] = b1["errorMessage"].split("\n")[0]
            b2["errorMessage"] = b2["errorMessage"].split("\n")[0]
        assert b1 == b2, (handler, event, b1, b2)


# ---------------------------------------------------------------- the CLIs

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("example,family", [("python-hello", "python3."), ("node-hello", "nodejs")])
def test_quarters_deploys_a_directory_and_detects_its_runtime(server, example, family):
    name = unique(example)
    out = server.quarters("deploy", str(EXAMPLES / example), "--name", name, "--tenancy", "per-tenant").stdout
    assert f"deployed {name} ({family}" in out, out
    counts = {}
    for tenant in ("Blue", "Blue", "Green", "Blue"):
        p = server.quarters("invoke", name, "--tenant", tenant, "--payload", '{"name": "cli"}')
        body = json.loads(p.stdout)
        assert body["message"] == "hello, cli" and body["tenant"] == tenant
        counts.setdefault(tenant, []).append(body["count"])
    assert counts == {"Blue": [1, 2, 3], "Green": [1]}


def test_aws_cli_creates_and_invokes_a_python_function(server, tmp_path):
    name = unique("cli-py")
    zip_path = tmp_path / "fn.zip"
    zip_path.write_bytes(zip_files({"lambda_function.py": (EXAMPLES / "python-hello/lambda_function.py").read_text()}))
    created = json.loads(server.cli(
        "lambda", "create-function", "--function-name", name, "--runtime", "python3.12",
        "--handler", "lambda_function.lambda_handler", "--role", ROLE, "--zip-file", f"fileb://{zip_path}",
        "--tenancy-config", '{"TenantIsolationMode":"PER_TENANT"}',
    ).stdout)
    assert created["Runtime"] == "python3.12"
    server.cli("lambda", "wait", "function-active-v2", "--function-name", name)
    out = tmp_path / "out.json"
    server.cli("lambda", "invoke", "--function-name", name, "--tenant-id", "Orange",
               "--payload", '{"name": "aws"}', str(out))
    body = json.loads(out.read_text())
    assert body["tenant"] == "Orange" and body["message"] == "hello, aws" and body["python"] == "AWS_Lambda_python3.12"
