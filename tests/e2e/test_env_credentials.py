"""The relay from inside an execution environment to Quarters' own AWS API, end to end.

Each environment has, besides its Runtime API at 127.0.0.1:9001, a second listener the platform
made inside its network namespace at 127.0.0.1:9002, relayed byte for byte to the server's own
API; `AWS_ENDPOINT_URL` points there. Nothing else is reachable, and each environment's
127.0.0.1:9002 is its own. (The credentials in environments are tested in crates/invoke with a
fake credential source; the server has no source yet.)"""

import json

import pytest

from conftest import Server
from test_runtimes import make

APP = r'''
import json, os, socket, urllib.error, urllib.request

HELD = []


def connect(addr, timeout=2):
    host, port = addr.rsplit(":", 1)
    s = socket.socket(socket.AF_INET6 if host.startswith("[") else socket.AF_INET)
    s.settimeout(timeout)
    try:
        s.connect((host.strip("[]"), int(port)))
        return s, "connected"
    except OSError as e:
        s.close()
        return None, f"{type(e).__name__}: {e}"


def sockets():
    """This network namespace's TCP sockets: (local port, remote port, state)."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            out.append((int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3]))
    return out


def handler(event, context):
    a = event["action"]
    if a == "env":
        return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    if a == "get":
        req = urllib.request.Request(event["url"], headers=event.get("headers", {}))
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return {"status": r.status, "type": r.headers.get("content-type", ""),
                        "body": r.read().decode(errors="replace")[:20000]}
        except urllib.error.HTTPError as e:
            return {"status": e.code, "body": e.read().decode(errors="replace")[:2000]}
        except Exception as e:
            return {"status": None, "error": f"{type(e).__name__}: {e}"}
    if a == "connect":
        s, how = connect(event["addr"])
        if s:
            s.close()
        return {"connect": how}
    if a == "hold":
        # Keep a connection through this environment's relay open across invocations.
        s, how = connect("127.0.0.1:9002")
        if not s:
            return {"error": how}
        HELD.append(s)
        return {"port": s.getsockname()[1]}
    if a == "sockets":
        return {"sockets": sockets()}
    raise ValueError(a)
'''

LISTEN = "0A"
ESTABLISHED = "01"


def call(lam, name, tenant, event):
    r = lam.invoke(FunctionName=name, TenantId=tenant, Payload=json.dumps(event).encode())
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    return body


@pytest.fixture(scope="module")
def fn(server):
    return make(server.client(), "python3.12", "app.handler", {"app.py": APP})


def test_endpoint_url_points_at_the_relay(server, fn):
    env = call(server.client(), fn, "blue", {"action": "env"})
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9002"


def test_the_relay_reaches_the_platforms_api(server, fn):
    lam = server.client()
    got = call(lam, fn, "blue", {"action": "get", "url": "http://127.0.0.1:9002/metrics"})
    assert got["status"] == 200, got
    assert got["type"].startswith("text/plain"), got
    assert "# TYPE " in got["body"], got["body"][:500]
    # The same through AWS_ENDPOINT_URL, as an SDK would use it.
    env = call(lam, fn, "blue", {"action": "env"})
    got = call(lam, fn, "blue", {"action": "get", "url": env["AWS_ENDPOINT_URL"] + "/metrics"})
    assert got["status"] == 200, got
    # The relay grants nothing: the API still wants a signature.
    got = call(lam, fn, "blue", {"action": "get", "url": "http://127.0.0.1:9002/2015-03-31/functions"})
    assert got["status"] == 403, got


def test_nothing_else_is_reachable(server, fn):
    lam = server.client()
    for addr in [f"127.0.0.1:{server.port}", f"127.0.0.1:{server.gateway_port}", "127.0.0.1:9003",
                 "127.0.0.1:9000", "127.0.0.2:9002", "10.0.2.2:80", "169.254.169.254:80", "[::1]:9002",
                 "1.1.1.1:443"]:
        got = call(lam, fn, "blue", {"action": "connect", "addr": addr})
        assert got["connect"] != "connected", addr
    for addr in ["127.0.0.1:9001", "127.0.0.1:9002"]:
        assert call(lam, fn, "blue", {"action": "connect", "addr": addr})["connect"] == "connected", addr
    # Only the platform's two listeners exist in the environment's namespace.
    socks = call(lam, fn, "blue", {"action": "sockets"})["sockets"]
    assert {local for local, _, state in socks if state == LISTEN} == {9001, 9002}, socks


def test_each_environment_has_its_own_relay(server, fn):
    lam = server.client()
    # Green holds a connection open through its relay.
    held = call(lam, fn, "green", {"action": "hold"})
    assert "port" in held, held
    port = held["port"]
    green = call(lam, fn, "green", {"action": "sockets"})["sockets"]
    assert [port, 9002, ESTABLISHED] in green, green
    # Blue's namespace has no trace of it: its 127.0.0.1:9002 is another socket altogether.
    blue = call(lam, fn, "blue", {"action": "sockets"})["sockets"]
    assert not any(port in (local, remote) and remote == 9002 for local, remote, _ in blue), blue
    assert call(lam, fn, "blue", {"action": "connect", "addr": "127.0.0.1:9002"})["connect"] == "connected"
    # ...and it still leads to the platform's API, not to green.
    got = call(lam, fn, "blue", {"action": "get", "url": "http://127.0.0.1:9002/metrics"})
    assert got["status"] == 200, got
    envs = {e for e in (call(lam, fn, t, {"action": "env"})["AWS_LAMBDA_LOG_STREAM_NAME"] for t in ("blue", "green"))}
    assert len(envs) == 2, "two environments"


def test_no_relay_when_authentication_is_off(tmp_path):
    s = Server(tmp_path / "data", extra_args=["--no-auth"]).start()
    try:
        lam = s.client()
        name = make(lam, "python3.12", "app.handler", {"app.py": APP})
        env = call(lam, name, "blue", {"action": "env"})
        assert "AWS_ENDPOINT_URL" not in env, env
        assert call(lam, name, "blue", {"action": "connect", "addr": "127.0.0.1:9002"})["connect"] != "connected"
    finally:
        s.stop()
