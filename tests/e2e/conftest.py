"""Fixtures for the end-to-end suite: a real `quarters serve`, real boto3 and aws CLI clients,
and real functions built on the `lambda_runtime` crate (functions/probe, functions/counter)."""

import io
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
import zipfile

import boto3
import pytest
from botocore.config import Config

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("QUARTERS_TARGET_DIR", ROOT / "target" / "release"))
QUARTERS = TARGET / "quarters"
ROLE = "arn:aws:iam::000000000000:role/quarters-test"
CREDS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
# Every server of the suite is started with these admin keys; the CLI and the aws CLI read them
# from the environment.
os.environ.update(CREDS)
ADMIN_ARGS = ["--admin-access-key-id", CREDS["AWS_ACCESS_KEY_ID"],
              "--admin-secret-access-key", CREDS["AWS_SECRET_ACCESS_KEY"]]
# The ports of Quarters' AWS endpoints (not the gateway's data plane): urllib requests to them
# are signed with SigV4 as an AWS SDK would.
API_PORTS = set()


class _SignForQuarters(urllib.request.BaseHandler):
    """Signs plain urllib requests to a Quarters endpoint (the suite's raw HTTP calls to
    /quarters/v1, /metrics...) with the admin keys, as botocore signs its own."""

    handler_order = 999  # after urllib has set Host and Content-Type

    def http_request(self, req):
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        url = urllib.parse.urlsplit(req.full_url)
        if url.port not in API_PORTS or req.has_header("Authorization") or req.has_header("X-no-sign"):
            return req
        headers = dict(req.header_items())
        service = "logs" if headers.get("X-amz-target", "").startswith("Logs_") else "lambda"
        aws = AWSRequest(method=req.get_method(), url=req.full_url, data=req.data or b"", headers=headers)
        SigV4Auth(Credentials(CREDS["AWS_ACCESS_KEY_ID"], CREDS["AWS_SECRET_ACCESS_KEY"]), service,
                  CREDS["AWS_DEFAULT_REGION"]).add_auth(aws)
        for k in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if k in aws.headers:
                req.add_unredirected_header(k, aws.headers[k])
        return req


urllib.request.install_opener(urllib.request.build_opener(_SignForQuarters()))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aws_cli_path():
    local = pathlib.Path(sys.executable).parent / "aws"
    return str(local) if local.exists() else (shutil.which("aws") or "aws")


class Server:
    """One `quarters serve` process with its own data directory and port."""

    def __init__(self, data_dir, extra_args=(), env=None):
        self.data_dir = pathlib.Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.gateway_port = free_port()
        API_PORTS.add(self.port)
        self.extra_args = list(extra_args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.log_path = self.data_dir / "server.log"

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self):
        """The API gateway's data plane."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def start(self, timeout=30):
        assert QUARTERS.exists(), f"build first: {QUARTERS} is missing (cargo build --release --workspace)"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(QUARTERS), "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir),
             "--gateway-listen", f"127.0.0.1:{self.gateway_port}", *self.auth_args(), *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/2015-03-31/functions", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log()}")

    def auth_args(self):
        """The suite's admin keys, unless the test chose its own or turned authentication off."""
        chosen = any(a in self.extra_args for a in ("--no-auth", "--admin-access-key-id"))
        return [] if chosen else ADMIN_ARGS

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def client(self, read_timeout=120):
        return boto3.client(
            "lambda",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=read_timeout, connect_timeout=10),
        )

    def cli(self, *args, check=True, timeout=120):
        """Run the real aws CLI (v1) against this server."""
        env = dict(os.environ, **CREDS)
        p = subprocess.run(
            [aws_cli_path(), "--endpoint-url", self.endpoint, "--region", "us-east-1", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def quarters(self, *args, check=True, timeout=120):
        """Run the quarters CLI against this server."""
        p = subprocess.run(
            [str(QUARTERS), *args],
            capture_output=True,
            text=True,
            env=dict(os.environ, QUARTERS_ENDPOINT=self.endpoint),
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"quarters {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p


def zip_binary(path, name="bootstrap", extra=None):
    """A function zip holding one executable as `bootstrap` (plus optional extra entries)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(name)
        info.external_attr = (0o100755 << 16)
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, pathlib.Path(path).read_bytes())
        for n, data in (extra or {}).items():
            z.writestr(n, data)
    return buf.getvalue()


@pytest.fixture(scope="session")
def probe_zip():
    return zip_binary(TARGET / "probe")


@pytest.fixture(scope="session")
def counter_zip():
    return zip_binary(TARGET / "counter")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A server shared by the tests that do not restart or stop it."""
    s = Server(tmp_path_factory.mktemp("shared"), extra_args=["--idle-timeout", "60"]).start()
    yield s
    s.stop()


@pytest.fixture
def fresh_server(tmp_path):
    """A server of the test's own (for restart and shutdown tests)."""
    s = Server(tmp_path / "data")
    yield s
    # A clean stop, so its sandboxes' mounts and loop devices go with it (a SIGKILL leaves them
    # to the next start of this data directory, which never comes).
    if s.proc and s.proc.poll() is None:
        try:
            s.stop(signal.SIGTERM, timeout=30)
        except subprocess.TimeoutExpired:
            s.stop(signal.SIGKILL)


@pytest.fixture
def lam(server):
    return server.client()


def unique(prefix="fn"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create(client, zip_bytes, name=None, tenant=True, **kw):
    """Create a provided.al2023 function and return its name."""
    name = name or unique()
    args = dict(
        FunctionName=name,
        Runtime="provided.al2023",
        Role=ROLE,
        Handler="bootstrap",
        Code={"ZipFile": zip_bytes},
        Timeout=kw.pop("Timeout", 10),
    )
    if tenant:
        args["TenancyConfig"] = {"TenantIsolationMode": "PER_TENANT"}
    args.update(kw)
    client.create_function(**args)
    return name
