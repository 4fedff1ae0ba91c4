"""Container-image functions (PackageType Image) through boto3 and the aws CLI, pulled from
Debian's docker-registry on loopback (anonymous, and with basic auth), with images this test
builds from a directory with umoci and pushes with skopeo."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import bcrypt
import pytest
from botocore.exceptions import ClientError

from conftest import ROLE, TARGET, Server, free_port, unique

LIBS = ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]


class Registry:
    """`docker-registry serve` on 127.0.0.1, optionally behind htpasswd basic auth."""

    def __init__(self, root, user=None, password=None):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.user, self.password = user, password
        config = [
            "version: 0.1",
            "log:", "  level: error",
            "storage:", "  filesystem:", f"    rootdirectory: {self.root / 'data'}",
            "http:", f"  addr: 127.0.0.1:{self.port}",
        ]
        if user:
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
            (self.root / "htpasswd").write_text(f"{user}:{hashed}\n")
            config += ["auth:", "  htpasswd:", "    realm: quarters-test", f"    path: {self.root / 'htpasswd'}"]
        (self.root / "config.yml").write_text("\n".join(config) + "\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.root / "config.yml")],
                                     stdout=open(self.root / "log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the registry did not start: " + (self.root / "log").read_text())

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def push(self, layout, tag, repo="fns/probe"):
        creds = ["--dest-creds", f"{self.user}:{self.password}"] if self.user else []
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *creds,
                        f"oci:{layout}:{tag}", f"docker://{self.host}/{repo}:{tag}"], check=True, timeout=120)
        return f"{self.host}/{repo}:{tag}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def build_image(work, tag, files, entrypoint, env=None, remove=()):
    """An OCI image in the layout `work/oci`: a base layer with the probe and its libraries,
    then a layer with `files` and whiteouts for `remove`."""
    layout = work / "oci"
    if not layout.exists():
        subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:{tag}"], check=True)
    for step, (add, rm) in enumerate([({"var/task/bootstrap": (TARGET / "probe").read_bytes(),
                                        "var/task/from-base.txt": b"base layer\n"}, ()),
                                       (files, remove)]):
        bundle = work / f"bundle-{tag}-{step}"
        shutil.rmtree(bundle, ignore_errors=True)
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True)
        rootfs = bundle / "rootfs"
        if step == 0:
            for lib in LIBS:
                dest = rootfs / lib.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(os.path.realpath(lib), dest)
                dest.chmod(0o755)
        for name, data in add.items():
            dest = rootfs / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            dest.chmod(0o755)
        for name in rm:
            (rootfs / name).unlink()
        subprocess.run(["umoci", "repack", "--image", f"{layout}:{tag}", str(bundle)], check=True)
        shutil.rmtree(bundle)
    args = ["umoci", "config", "--image", f"{layout}:{tag}", "--config.workingdir", "/var/task"]
    for e in entrypoint:
        args += ["--config.entrypoint", e]
    for k, v in (env or {}).items():
        args += ["--config.env", f"{k}={v}"]
    subprocess.run(args, check=True)
    return layout


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    r = Registry(tmp_path_factory.mktemp("registry"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def images(registry, tmp_path_factory):
    work = tmp_path_factory.mktemp("images")
    v1 = build_image(work, "v1", {"var/task/extra.txt": b"v1\n"}, ["/var/task/bootstrap"],
                     env={"APP_MODE": "v1", "PATH": "/var/task:/bin"}, remove=["var/task/from-base.txt"])
    v2 = build_image(work, "v2", {"var/task/extra.txt": b"v2\n"}, ["/var/task/bootstrap"], env={"APP_MODE": "v2"})
    return {"v1": registry.push(v1, "v1"), "v2": registry.push(v2, "v2")}


def call(lam, name, payload, tenant="img"):
    r = lam.invoke(FunctionName=name, TenantId=tenant, Payload=json.dumps(payload).encode())
    return r, json.loads(r["Payload"].read())


def create_image_fn(lam, uri, **kw):
    name = unique("img")
    lam.create_function(FunctionName=name, PackageType="Image", Role=ROLE, Code={"ImageUri": uri},
                        TenancyConfig={"TenantIsolationMode": "PER_TENANT"}, Timeout=10, **kw)
    return name


def test_an_image_function_runs_its_image(lam, images):
    name = create_image_fn(lam, images["v1"])
    got = lam.get_function(FunctionName=name)
    cfg = got["Configuration"]
    assert cfg["PackageType"] == "Image"
    assert "Runtime" not in cfg and "Handler" not in cfg
    assert got["Code"]["RepositoryType"] == "ECR"
    assert got["Code"]["ImageUri"] == images["v1"]
    assert got["Code"]["ResolvedImageUri"].startswith(images["v1"].rsplit(":", 1)[0] + "@sha256:")
    assert cfg["CodeSha256"] == got["Code"]["ResolvedImageUri"].rsplit(":", 1)[1]
    r, body = call(lam, name, {"action": "echo"}, tenant="Blue")
    assert "FunctionError" not in r, body
    assert body["tenantId"] == "Blue"
    _, env = call(lam, name, {"action": "env"}, tenant="Blue")
    env = env["env"] if "env" in env else env
    assert env["APP_MODE"] == "v1" and env["PATH"] == "/var/task:/bin"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    # The image's layers, in order: the second adds a file and whites one out.
    _, extra = call(lam, name, {"action": "read", "path": "/var/task/extra.txt"}, tenant="Blue")
    assert "v1" in json.dumps(extra)
    _, gone = call(lam, name, {"action": "read", "path": "/var/task/from-base.txt"}, tenant="Blue")
    assert "base layer" not in json.dumps(gone)
    # The root is the image's, not the host's.
    _, root = call(lam, name, {"action": "ls", "path": "/"}, tenant="Blue")
    entries = json.dumps(root)
    assert '"lib64"' in entries and '"var"' in entries
    assert '"home"' not in entries and '"usr"' not in entries and '"root"' not in entries
    # Tenants still get their own environments.
    _, green = call(lam, name, {"action": "echo"}, tenant="Green")
    assert green["tenantId"] == "Green" and green.get("instance") != body.get("instance")


def test_image_config_overrides_and_code_updates(lam, images):
    name = create_image_fn(lam, images["v1"], ImageConfig={"WorkingDirectory": "/lib64"})
    cfg = lam.get_function_configuration(FunctionName=name)
    assert cfg["ImageConfigResponse"]["ImageConfig"] == {"WorkingDirectory": "/lib64"}
    _, here = call(lam, name, {"action": "ls", "path": "."})
    assert "ld-linux-x86-64.so.2" in json.dumps(here)
    lam.update_function_configuration(FunctionName=name, ImageConfig={"WorkingDirectory": "/var/task"})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    _, here = call(lam, name, {"action": "ls", "path": "."})
    assert "bootstrap" in json.dumps(here)
    lam.update_function_code(FunctionName=name, ImageUri=images["v2"])
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    _, env = call(lam, name, {"action": "env"})
    env = env["env"] if "env" in env else env
    assert env["APP_MODE"] == "v2"
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=name, ZipFile=b"PK\x05\x06" + b"\0" * 18)
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"


def test_bad_image_requests(lam, images, registry):
    with pytest.raises(ClientError) as e:
        lam.create_function(FunctionName=unique("img"), PackageType="Image", Role=ROLE, Runtime="python3.12",
                            Code={"ImageUri": images["v1"]})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "PackageType is Image" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        create_image_fn(lam, f"{registry.host}/fns/nope:v9")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        create_image_fn(lam, "not an image uri")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"


def test_basic_auth_registry(tmp_path, images):
    locked = Registry(tmp_path / "locked", user="quarters", password="s3cret")
    try:
        uri = locked.push(build_image(tmp_path, "v1", {"var/task/extra.txt": b"locked\n"}, ["/var/task/bootstrap"]), "v1")
        # Without credentials the server cannot pull.
        anonymous = Server(tmp_path / "anon").start()
        try:
            with pytest.raises(ClientError) as e:
                create_image_fn(anonymous.client(), uri)
            assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
            assert "credentials" in e.value.response["Error"]["Message"] or "refused" in e.value.response["Error"]["Message"]
        finally:
            anonymous.stop()
        with_creds = Server(tmp_path / "creds", extra_args=["--registry-auth", f"{locked.host}=quarters:s3cret"]).start()
        try:
            lam = with_creds.client()
            name = create_image_fn(lam, uri)
            _, body = call(lam, name, {"action": "read", "path": "/var/task/extra.txt"})
            assert "locked" in json.dumps(body)
        finally:
            with_creds.stop()
    finally:
        locked.stop()


def test_aws_cli_creates_an_image_function(server, images, tmp_path):
    name = unique("cli-img")
    out = json.loads(server.cli("lambda", "create-function", "--function-name", name, "--package-type", "Image",
                                "--code", f"ImageUri={images['v1']}", "--role", ROLE,
                                "--tenancy-config", '{"TenantIsolationMode":"PER_TENANT"}').stdout)
    assert out["PackageType"] == "Image"
    server.cli("lambda", "wait", "function-active-v2", "--function-name", name)
    res = tmp_path / "out.json"
    server.cli("lambda", "invoke", "--function-name", name, "--tenant-id", "Orange",
               "--payload", '{"action":"echo"}', str(res))
    assert json.loads(res.read_text())["tenantId"] == "Orange"
