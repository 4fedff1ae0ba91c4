"""Layers through boto3 and the aws CLI: publish, get, list, delete, and functions that use them
(unpacked in order under /opt, /opt/python and /opt/nodejs/node_modules on the module paths,
/opt/bootstrap as a custom runtime)."""

import json

import pytest
from botocore.exceptions import ClientError

from conftest import ROLE, TARGET, unique
from test_runtimes import invoke, make, zip_files


def publish(lam, name, files, **kw):
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": zip_files(files)}, **kw)


def test_publish_get_list_delete(lam):
    name = unique("layer")
    v1 = publish(lam, name, {"python/greeting.py": "WORD = 'one'\n"}, Description="first",
                 CompatibleRuntimes=["python3.12"], LicenseInfo="MIT")
    assert v1["Version"] == 1
    assert v1["LayerArn"].endswith(f":layer:{name}")
    assert v1["LayerVersionArn"] == v1["LayerArn"] + ":1"
    assert v1["Content"]["CodeSize"] > 0 and v1["Content"]["CodeSha256"]
    assert v1["CompatibleRuntimes"] == ["python3.12"] and v1["LicenseInfo"] == "MIT"
    v2 = publish(lam, name, {"python/greeting.py": "WORD = 'two'\n"})
    assert v2["Version"] == 2
    got = lam.get_layer_version(LayerName=name, VersionNumber=1)
    assert got["Description"] == "first" and got["Content"]["CodeSha256"] == v1["Content"]["CodeSha256"]
    by_arn = lam.get_layer_version_by_arn(Arn=v2["LayerVersionArn"])
    assert by_arn["Version"] == 2
    listed = lam.list_layer_versions(LayerName=name)["LayerVersions"]
    assert [x["Version"] for x in listed] == [2, 1]
    only_312 = lam.list_layer_versions(LayerName=name, CompatibleRuntime="python3.12")["LayerVersions"]
    assert [x["Version"] for x in only_312] == [1]
    layers = {x["LayerName"]: x for x in lam.list_layers()["Layers"]}
    assert layers[name]["LatestMatchingVersion"]["Version"] == 2
    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    lam.delete_layer_version(LayerName=name, VersionNumber=2)  # idempotent, as on Lambda
    with pytest.raises(ClientError) as e:
        lam.get_layer_version(LayerName=name, VersionNumber=2)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # Numbers are never reused.
    assert publish(lam, name, {"python/greeting.py": "WORD = 'three'\n"})["Version"] == 3


def test_python_function_uses_layers_in_order(lam):
    base = publish(lam, unique("base"), {
        "python/greeting.py": "WORD = 'from base'\n",
        "python/only_base.py": "X = 'base only'\n",
    })
    top = publish(lam, unique("top"), {"python/greeting.py": "WORD = 'from top'\n"})
    code = ("import greeting, only_base\n"
            "def handler(e, c):\n    return [greeting.WORD, only_base.X]\n")
    name = make(lam, "python3.12", "lambda_function.handler", {"lambda_function.py": code},
                Layers=[base["LayerVersionArn"], top["LayerVersionArn"]])
    cfg = lam.get_function(FunctionName=name)["Configuration"]
    assert [x["Arn"] for x in cfg["Layers"]] == [base["LayerVersionArn"], top["LayerVersionArn"]]
    assert all(x["CodeSize"] > 0 for x in cfg["Layers"])
    r, body, _ = invoke(lam, name, tenant="layers")
    assert "FunctionError" not in r, body
    assert body == ["from top", "base only"]
    # Reversed order: the base layer's file wins.
    lam.update_function_configuration(FunctionName=name, Layers=[top["LayerVersionArn"], base["LayerVersionArn"]])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke(lam, name, tenant="layers")[1] == ["from base", "base only"]
    # A deleted layer version keeps working for functions that use it.
    lam.delete_layer_version(LayerName=base["LayerArn"].rsplit(":", 1)[1], VersionNumber=1)
    assert invoke(lam, name, tenant="a new tenant")[1] == ["from base", "base only"]
    # Removing every layer.
    lam.update_function_configuration(FunctionName=name, Layers=[])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    r, body, _ = invoke(lam, name, tenant="layers")
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "Layers" not in lam.get_function(FunctionName=name)["Configuration"]


def test_a_later_layers_source_is_never_shadowed_by_an_earlier_layers_bytecode(lam):
    """Layers are compiled at publish; in the merged /opt a later layer's module replaces an
    earlier one's, and a .pyc of the earlier one must not stand in for it. Here the later file
    does not compile (so it has no .pyc of its own) and has the earlier one's size, and both were
    unpacked within the same second: a timestamp-checked .pyc would pass for it."""
    base = publish(lam, unique("pyc-base"), {"python/shadow.py": "WORD = 'one'\n"})
    top = publish(lam, unique("pyc-top"), {"python/shadow.py": "WORD  = 'two\n"})
    assert len("WORD = 'one'\n") == len("WORD  = 'two\n")
    code = "def handler(e, c):\n    import shadow\n    return shadow.WORD\n"
    name = make(lam, "python3.12", "lambda_function.handler", {"lambda_function.py": code},
                Layers=[base["LayerVersionArn"], top["LayerVersionArn"]])
    r, body, _ = invoke(lam, name, tenant="pyc")
    assert r.get("FunctionError") == "Unhandled", body
    assert body["errorType"] == "SyntaxError" and "shadow.py" in json.dumps(body), body
    # The earlier layer alone still runs from its own bytecode.
    only = make(lam, "python3.12", "lambda_function.handler", {"lambda_function.py": code},
                Layers=[base["LayerVersionArn"]])
    assert invoke(lam, only, tenant="pyc")[1] == "one"


def test_node_function_finds_modules_in_a_layer(lam):
    dep = publish(lam, unique("node-dep"), {
        "nodejs/node_modules/shout/index.js": "module.exports = (s) => s.toUpperCase() + '!';\n",
    })
    name = make(lam, "nodejs20.x", "index.handler",
                {"index.js": "const shout = require('shout');\nexports.handler = async (e) => shout(e.word);\n"},
                Layers=[dep["LayerVersionArn"]])
    r, body, _ = invoke(lam, name, {"word": "layer"})
    assert "FunctionError" not in r, body
    assert body == "LAYER!"


def test_custom_runtime_from_a_layer(lam):
    """/opt/bootstrap is the second place a custom runtime is looked for."""
    runtime = publish(lam, unique("runtime"), {"bootstrap": ((TARGET / "probe").read_bytes(), 0o100755)})
    name = make(lam, "provided.al2023", "bootstrap", {"README": "code without a bootstrap\n"},
                Layers=[runtime["LayerVersionArn"]])
    r, body, _ = invoke(lam, name, {"action": "echo"}, tenant="opt")
    assert "FunctionError" not in r, body
    assert body["tenantId"] == "opt"


def test_bad_layer_references(lam):
    ok = publish(lam, unique("ok"), {"python/x.py": ""})
    arn = ok["LayerVersionArn"]
    missing = arn.rsplit(":", 1)[0] + ":99"
    code = {"lambda_function.py": "def handler(e, c): return 1\n"}
    with pytest.raises(ClientError) as e:
        make(lam, "python3.12", "lambda_function.handler", code, Layers=[missing])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "does not exist" in e.value.response["Error"]["Message"]
    others = [publish(lam, unique("many"), {"python/y.py": ""})["LayerVersionArn"] for _ in range(5)]
    with pytest.raises(ClientError) as e:
        make(lam, "python3.12", "lambda_function.handler", code, Layers=[arn, *others])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "more than 5 layers" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        lam.publish_layer_version(LayerName="bad name", Content={"ZipFile": zip_files({"a": "b"})})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as e:
        lam.publish_layer_version(LayerName=unique("badzip"), Content={"ZipFile": b"not a zip"})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"


def test_layers_through_the_aws_cli(server, tmp_path):
    name = unique("cli-layer")
    z = tmp_path / "layer.zip"
    z.write_bytes(zip_files({"python/cli_layer.py": "VALUE = 42\n"}))
    out = json.loads(server.cli("lambda", "publish-layer-version", "--layer-name", name,
                                "--zip-file", f"fileb://{z}", "--compatible-runtimes", "python3.12").stdout)
    assert out["Version"] == 1
    listed = json.loads(server.cli("lambda", "list-layer-versions", "--layer-name", name).stdout)
    assert [x["Version"] for x in listed["LayerVersions"]] == [1]
    f = tmp_path / "fn.zip"
    f.write_bytes(zip_files({"lambda_function.py": "import cli_layer\ndef handler(e, c): return cli_layer.VALUE\n"}))
    fn = unique("cli-layer-fn")
    server.cli("lambda", "create-function", "--function-name", fn, "--runtime", "python3.12",
               "--handler", "lambda_function.handler", "--role", ROLE, "--zip-file", f"fileb://{f}",
               "--layers", out["LayerVersionArn"])
    res = tmp_path / "out.json"
    server.cli("lambda", "invoke", "--function-name", fn, str(res))
    assert json.loads(res.read_text()) == 42
    server.cli("lambda", "delete-layer-version", "--layer-name", name, "--version-number", "1")
    p = server.cli("lambda", "get-layer-version", "--layer-name", name, "--version-number", "1", check=False)
    assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr
