"""SigV4 on the one endpoint: every AWS-compatible API needs a valid signature by a known key;
admin keys are given at start or made once and kept; `--no-auth` turns the check off."""

import json
import subprocess
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import QUARTERS, Server


def client(server, service, key="test", secret="test"):
    return boto3.client(service, endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 0}))


def unsigned(url, method="GET", headers=None, data=None):
    req = urllib.request.Request(url, method=method, headers={"X-No-Sign": "1", **(headers or {})}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def code_of(fn):
    with pytest.raises(ClientError) as e:
        fn()
    return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_every_api_needs_a_valid_signature(server):
    # Signed with the admin keys: fine, through every service.
    assert "Functions" in client(server, "lambda").list_functions()
    assert "logGroups" in client(server, "logs").describe_log_groups()
    assert "items" in client(server, "apigateway").get_rest_apis()
    # A wrong secret, an unknown key.
    assert code_of(lambda: client(server, "lambda", secret="wrong").list_functions()) == ("InvalidSignatureException", 403)
    assert code_of(lambda: client(server, "logs", secret="wrong").describe_log_groups())[1] in (400, 403)
    assert code_of(lambda: client(server, "apigateway", key="AKIANOBODY").get_rest_apis()) == (
        "UnrecognizedClientException", 403)
    # No signature at all, on each kind of path.
    for path in ("/2015-03-31/functions", "/quarters/v1/environments", "/restapis"):
        status, headers, body = unsigned(server.endpoint + path)
        assert status == 403 and headers["x-amzn-errortype"] == "MissingAuthenticationTokenException", path
        assert json.loads(body)["message"] == "Missing Authentication Token"
    status, _, _ = unsigned(server.endpoint + "/", method="POST", data=b"{}",
                            headers={"X-Amz-Target": "Logs_20140328.DescribeLogGroups",
                                     "Content-Type": "application/x-amz-json-1.1"})
    assert status == 403
    # Prometheus scrapes /metrics without signing.
    assert unsigned(server.endpoint + "/metrics")[0] == 200
    # A presigned request works like a signed one; an expired one does not.
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method="GET", url=server.endpoint + "/2015-03-31/functions")
    SigV4QueryAuth(Credentials("test", "test"), "lambda", "us-east-1", expires=60).add_auth(req)
    assert unsigned(req.url)[0] == 200


def test_the_cli_signs_with_the_environment_keys(server):
    ok = subprocess.run([str(QUARTERS), "list"], capture_output=True, text=True,
                        env={"PATH": "/usr/bin:/bin", "QUARTERS_ENDPOINT": server.endpoint,
                             "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([str(QUARTERS), "list"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "QUARTERS_ENDPOINT": server.endpoint,
                              "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "nope"})
    assert bad.returncode != 0 and "403" in bad.stderr, bad.stderr


def test_admin_keys_are_made_once_and_kept(tmp_path):
    s = Server(tmp_path / "data")  # for its port and data dir; started by hand, with no keys given
    proc = subprocess.Popen([str(QUARTERS), "serve", "--listen", f"127.0.0.1:{s.port}", "--data-dir", str(s.data_dir),
                             "--gateway-listen", "off"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while len(lines) < 50:
            line = proc.stdout.readline()
            lines.append(line)
            if "AWS_SECRET_ACCESS_KEY=" in line:
                break
        text = "".join(lines)
        key = text.split("AWS_ACCESS_KEY_ID=")[1].split()[0]
        secret = text.split("AWS_SECRET_ACCESS_KEY=")[1].split()[0]
        stored = (s.data_dir / "admin-credentials").read_text().split()
        assert stored == [key, secret] and key.startswith("AKIA") and len(secret) == 40
        assert oct((s.data_dir / "admin-credentials").stat().st_mode & 0o777) == "0o600"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # The next start keeps them and does not show them again.
    proc = subprocess.Popen([str(QUARTERS), "serve", "--listen", f"127.0.0.1:{s.port}", "--data-dir", str(s.data_dir),
                             "--gateway-listen", "off"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import time
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if client(s, "lambda", key=key, secret=secret).list_functions() is not None:
                    break
            except Exception:
                time.sleep(0.1)
        assert "Functions" in client(s, "lambda", key=key, secret=secret).list_functions()
        assert code_of(lambda: client(s, "lambda").list_functions())[1] == 403
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "AWS_SECRET_ACCESS_KEY=" not in out


def test_no_auth_is_a_development_switch(tmp_path):
    s = Server(tmp_path / "data", extra_args=["--no-auth"]).start()
    try:
        status, _, body = unsigned(s.endpoint + "/2015-03-31/functions")
        assert status == 200 and "Functions" in json.loads(body)
        assert "authentication is OFF" in s.log()
    finally:
        s.stop()
