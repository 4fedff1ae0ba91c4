"""`quarters deploy app.toml`: a declarative app file (functions, REST API routes with tenant
mapping, usage plans, API keys, custom domains) applied idempotently through the HTTP APIs,
`--dry-run` diffs, and requests through the gateway's data plane to what it made."""

import json
import pathlib
import shutil
import textwrap
import urllib.error
import urllib.request

import boto3
from botocore.config import Config

from conftest import unique

ROOT = pathlib.Path(__file__).resolve().parents[2]

FUNCTION = textwrap.dedent('''
    import json

    VERSION = {version}


    def lambda_handler(event, context):
        body = {{"tenant": context.tenant_id, "version": VERSION, "path": event["path"],
                 "color": (event.get("stageVariables") or {{}}).get("color")}}
        return {{"statusCode": 200, "body": json.dumps(body)}}
''')


def apigw(server):
    return boto3.client("apigateway", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": 0}))


def api_id(server, name):
    ids = [a["id"] for a in apigw(server).get_rest_apis(limit=500)["items"] if a["name"] == name]
    assert len(ids) == 1, ids
    return ids[0]


def call(url, headers=None, method="GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def changes(out):
    """The create and update lines of a deploy's output."""
    return [line for line in out.splitlines() if line.startswith(("+ ", "~ "))]


def write_app(tmp_path, fn, api, plan, key, version=1):
    code = tmp_path / "fn"
    code.mkdir(exist_ok=True)
    (code / "lambda_function.py").write_text(FUNCTION.format(version=version))
    app = tmp_path / "app.toml"
    app.write_text(textwrap.dedent(f'''
        [functions.{fn}]
        path = "fn"
        tenancy = "per-tenant"
        timeout = 10

        [apis.{api}]
        stage = "prod"
        variables = {{ color = "blue" }}

        [[apis.{api}.routes]]
        path = "/hello"
        method = "GET"
        function = "{fn}"
        tenant = "method.request.header.x-tenant-id"
        required = ["method.request.header.x-tenant-id"]
        api_key_required = true

        [plans.{plan}]
        apis = ["{api}"]
        rate = 50.0
        burst = 50
        quota = {{ limit = 1000, period = "DAY" }}

        [keys.{key}]
        value = "{key}-value-0123456789abcdef"
        plans = ["{plan}"]
    '''))
    return app


def test_apply_is_idempotent_and_dry_run_shows_the_diff(server, tmp_path):
    fn, api, plan, key = unique("appfn"), unique("appapi"), unique("appplan"), unique("appkey")
    app = write_app(tmp_path, fn, api, plan, key)

    first = server.quarters("deploy", str(app)).stdout
    assert f"+ create function {fn}" in first, first
    assert f"+ create route GET /hello of api {api}" in first, first
    assert f"+ create stage prod of api {api}" in first, first
    assert f"+ create plan {plan}" in first and f"+ create key {key}" in first, first
    assert "0 updated, 0 unchanged" in first, first

    # Nothing changed: the dry run and a second apply say so, and make no new deployment.
    gw = apigw(server)
    aid = api_id(server, api)
    deployments = len(gw.get_deployments(restApiId=aid)["items"])
    dry = server.quarters("deploy", str(app), "--dry-run").stdout
    assert changes(dry) == [], dry
    assert f"= unchanged route GET /hello of api {api}" in dry, dry
    assert "0 to create, 0 to update" in dry, dry
    again = server.quarters("deploy", str(app)).stdout
    assert changes(again) == [], again
    assert "0 created, 0 updated" in again and "nothing to change" in again, again
    assert len(gw.get_deployments(restApiId=aid)["items"]) == deployments

    # New code: the dry run shows exactly one update and changes nothing; the apply makes it.
    sha = server.client().get_function(FunctionName=fn)["Configuration"]["CodeSha256"]
    (tmp_path / "fn" / "lambda_function.py").write_text(FUNCTION.format(version=2))
    dry = server.quarters("deploy", str(app), "--dry-run").stdout
    assert changes(dry) == [f"~ update function {fn} (code)"], dry
    assert server.client().get_function(FunctionName=fn)["Configuration"]["CodeSha256"] == sha
    applied = server.quarters("deploy", str(app)).stdout
    assert changes(applied) == [f"~ update function {fn} (code)"], applied
    assert "0 created, 1 updated" in applied, applied
    assert server.client().get_function(FunctionName=fn)["Configuration"]["CodeSha256"] != sha
    assert len(gw.get_deployments(restApiId=aid)["items"]) == deployments

    # The data plane: the tenant comes from the header, the key is required, so is the header.
    url = f"{server.gateway}/restapis/{aid}/prod/_user_request_/hello"
    value = f"{key}-value-0123456789abcdef"
    status, body = call(url, {"x-tenant-id": "blue", "x-api-key": value})
    assert status == 200, body
    assert json.loads(body) == {"tenant": "blue", "version": 2, "path": "/hello", "color": "blue"}
    status, body = call(url, {"x-tenant-id": "green", "x-api-key": value})
    assert (status, json.loads(body)["tenant"]) == (200, "green"), body
    assert call(url, {"x-tenant-id": "blue"})[0] == 403
    status, body = call(url, {"x-api-key": value})
    assert status == 400 and "x-tenant-id" in body, body

    # A change to the API redeploys its stage; the plan is patched, not made again.
    text = app.read_text().replace('color = "blue"', 'color = "green"').replace("rate = 50.0", "rate = 20.0")
    app.write_text(text)
    out = server.quarters("deploy", str(app)).stdout
    assert changes(out) == [f"~ update stage prod of api {api} (variables)", f"~ update plan {plan} (throttle)"], out
    assert json.loads(call(url, {"x-tenant-id": "blue", "x-api-key": value})[1])["color"] == "green"
    plans = [p for p in gw.get_usage_plans()["items"] if p["name"] == plan]
    assert len(plans) == 1 and plans[0]["throttle"]["rateLimit"] == 20.0, plans


def test_invalid_files_and_server_errors(server, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[functions.f]\npath = "fn"\nmemroy = 256\n')
    p = server.quarters("deploy", str(bad), check=False)
    assert p.returncode != 0 and "memroy" in p.stderr and "line 3" in p.stderr, p.stderr

    bad.write_text('[apis.a]\n[[apis.a.routes]]\npath = "/x"\nfunction = "f"\nauthorizer = "nope"\n')
    p = server.quarters("deploy", str(bad), check=False)
    assert p.returncode != 0 and "apis.a.routes[0].authorizer" in p.stderr, p.stderr

    missing = unique("missing")
    name = unique("appapi")
    bad.write_text(f'[apis.{name}]\n[[apis.{name}.routes]]\npath = "/x"\nfunction = "{missing}"\n')
    p = server.quarters("deploy", str(bad), "--dry-run", check=False)
    assert p.returncode != 0 and f"apis.{name}.routes[0].function" in p.stderr and missing in p.stderr, p.stderr

    p = server.quarters("deploy", str(bad), "--name", "x", check=False)
    assert p.returncode != 0 and "--name does not apply to an app file" in p.stderr, p.stderr

    # An error of the server is shown with its AWS error type: a stage variable value the
    # management API refuses.
    code = tmp_path / "fn"
    code.mkdir()
    (code / "lambda_function.py").write_text(FUNCTION.format(version=1))
    fn, api = unique("appfn"), unique("appapi")
    bad.write_text(textwrap.dedent(f'''
        [functions.{fn}]
        path = "fn"
        tenancy = "per-tenant"
        [apis.{api}]
        variables = {{ color = "no spaces! allowed" }}
        [[apis.{api}.routes]]
        path = "/x"
        function = "{fn}"
        tenant = "'fixed'"
    '''))
    p = server.quarters("deploy", str(bad), check=False)
    assert p.returncode != 0, p.stdout
    assert f"cannot create stage prod of api {api}" in p.stderr and "BadRequestException" in p.stderr, p.stderr
    # What was made before the failure stays; the next apply goes on from there.
    assert f"+ create function {fn}" in p.stdout, p.stdout
    bad.write_text(bad.read_text().replace("no spaces! allowed", "fine"))
    out = server.quarters("deploy", str(bad)).stdout
    assert changes(out) == [f"+ create stage prod of api {api}"], out


def test_the_example_app(fresh_server, tmp_path):
    """examples/app/app.toml, on a server of its own (its names are plain: demo, hello...)."""
    server = fresh_server.start()
    example = tmp_path / "app"
    shutil.copytree(ROOT / "examples" / "app", example)
    app = example / "app.toml"
    dry = server.quarters("deploy", str(app), "--dry-run").stdout
    assert "+ create function hello" in dry and "+ create domain *.api.example.test" in dry, dry
    assert apigw(server).get_rest_apis()["items"] == []
    out = server.quarters("deploy", str(app)).stdout
    assert "0 updated, 0 unchanged" in out, out
    assert changes(server.quarters("deploy", str(app), "--dry-run").stdout) == []

    # Through the wildcard domain: the tenant comes from the bearer token, through the authorizer.
    host = {"Host": "shop.api.example.test"}
    key = {"x-api-key": "blue-key-0123456789abcdef"}
    status, body = call(f"{server.gateway}/hello", {**host, **key, "Authorization": "Bearer blue-secret"})
    assert status == 200, body
    got = json.loads(body)
    assert (got["tenant"], got["color"], got["greeting"], got["path"]) == ("blue", "blue", "hi", "/hello"), got
    status, body = call(f"{server.gateway}/hello", {**host, **key, "Authorization": "Bearer green-secret"})
    assert (status, json.loads(body)["tenant"]) == (200, "green"), body
    assert call(f"{server.gateway}/hello", {**host, **key, "Authorization": "Bearer wrong"})[0] == 401
    assert call(f"{server.gateway}/hello", {**host, "Authorization": "Bearer blue-secret"})[0] == 403
    # The header-mapped route, any method, any path below it.
    status, body = call(f"{server.gateway}/whoami/a/b", {**host, "x-tenant-id": "orange"}, method="POST")
    assert (status, json.loads(body)["tenant"]) == (200, "orange"), body
    assert call(f"{server.gateway}/whoami/a", host)[0] == 400
