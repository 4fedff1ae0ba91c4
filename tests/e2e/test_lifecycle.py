"""Server lifecycle: what survives a restart, what a stop (graceful or not) leaves behind, and
the quarters CLI against a running server."""

import base64
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import time
import urllib.request

import botocore.exceptions
import pytest

from conftest import TARGET, Server, create, unique, zip_binary

HEX32 = re.compile(r"[0-9a-f]{32}")


# ---------------------------------------------------------------- host inspection helpers


def proc_stat(pid):
    """(ppid, state, starttime) of a process, or None if it is gone."""
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[1]), rest[0], int(rest[19])


def cmdline(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root):
    """Every live process whose ancestors include `root`: {pid: (starttime, cmdline)}."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                parent[int(d)] = st
    out = {}
    for pid, (ppid, _, start) in parent.items():
        p, seen = ppid, 0
        while p and p != 1 and seen < 64:
            if p == root:
                out[pid] = (start, cmdline(pid))
                break
            p = parent.get(p, (0,))[0]
            seen += 1
    return out


def sandbox_procs(procs):
    return {
        pid: v for pid, v in procs.items() if "bwrap" in v[1] or "sandbox-init" in v[1] or v[1].endswith("/bootstrap")
    }


def alive(pid, start):
    """Whether that exact process (not a reused pid) still exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[2] == start and st[1] not in ("Z", "X")


def env_cgroups_of(pid):
    """The cgroup directories (per controller) a sandbox process lives in."""
    dirs = []
    try:
        lines = pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            if c in ("memory", "pids", "cpu"):
                d = pathlib.Path("/sys/fs/cgroup") / c / path.lstrip("/")
                if HEX32.fullmatch(d.name) and d.parent.name.startswith("quarters-"):
                    dirs.append(d)
    return dirs


def env_children(parent):
    try:
        return sorted(p.name for p in parent.iterdir() if p.is_dir() and HEX32.fullmatch(p.name))
    except FileNotFoundError:
        return []


def instance_of(data_dir):
    return hashlib.sha256(str(pathlib.Path(data_dir).resolve()).encode()).hexdigest()[:12]


def run_dir_envs(instance):
    d = pathlib.Path("/run/quarters") / instance
    try:
        return sorted(p.name for p in d.iterdir() if HEX32.fullmatch(p.name))
    except FileNotFoundError:
        return []


def snapshot(server):
    """The live sandboxes of a server: processes, env cgroup dirs, parents, run-dir env dirs."""
    procs = descendants(server.proc.pid)
    boxes = sandbox_procs(procs)
    cgroups = set()
    for pid in boxes:
        cgroups.update(env_cgroups_of(pid))
    parents = {d.parent for d in cgroups}
    return procs, boxes, cgroups, parents


def wait_until(pred, timeout, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def sha_b64(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def call(lam, name, tenant, payload, **kw):
    args = dict(FunctionName=name, Payload=json.dumps(payload), **kw)
    if tenant is not None:
        args["TenantId"] = tenant
    r = lam.invoke(**args)
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    return r, body


def start_sandboxes(server, probe_zip, tenants):
    lam = server.client()
    name = create(lam, probe_zip)
    for t in tenants:
        _, body = call(lam, name, t, {"action": "echo"})
        assert body["tenantId"] == t
    return lam, name


# ---------------------------------------------------------------- restart


def test_restart_keeps_functions_versions_aliases_and_settings(fresh_server, probe_zip):
    s = fresh_server.start()
    lam = s.client()
    name = create(lam, probe_zip, Environment={"Variables": {"COLOR": "blue"}})
    plain = create(lam, probe_zip, tenant=False)
    v1 = lam.publish_version(FunctionName=name)
    assert v1["Version"] == "1"
    new_zip = zip_binary(TARGET / "probe", extra={"later.txt": "v2"})
    lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"COLOR": "green"}}, MemorySize=256)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1", Description="stable")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    before = lam.get_function(FunctionName=name)["Configuration"]
    before_v1 = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    call(lam, name, "acme", {"action": "echo"})

    assert s.stop(signal.SIGTERM) == 0
    s.start()
    lam = s.client()

    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert {name, plain} <= names
    got = lam.get_function(FunctionName=name)
    cfg = got["Configuration"]
    for key in ("CodeSha256", "CodeSize", "RevisionId", "MemorySize", "Timeout", "Environment", "TenancyConfig", "LastModified"):
        assert cfg[key] == before[key], key
    assert cfg["CodeSha256"] == sha_b64(new_zip)
    assert cfg["Environment"] == {"Variables": {"COLOR": "green"}}
    assert cfg["State"] == "Active"
    assert got["Concurrency"] == {"ReservedConcurrentExecutions": 3}
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 3
    assert "TenancyConfig" not in lam.get_function_configuration(FunctionName=plain)
    with urllib.request.urlopen(got["Code"]["Location"], timeout=30) as r:
        assert r.read() == new_zip

    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1"]
    v1_after = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    for key in ("CodeSha256", "RevisionId", "MemorySize", "Environment"):
        assert v1_after[key] == before_v1[key], key
    alias = lam.get_alias(FunctionName=name, Name="prod")
    assert (alias["FunctionVersion"], alias["Description"]) == ("1", "stable")

    # The code and environment really are there: invoke $LATEST, the version and the alias.
    _, body = call(lam, name, "acme", {"action": "env"})
    assert body["env"]["COLOR"] == "green"
    assert body["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    _, body = call(lam, name, "acme", {"action": "ls", "path": "/var/task"})
    assert body["entries"] == ["bootstrap", "later.txt"]
    r, body = call(lam, name, "acme", {"action": "env"}, Qualifier="prod")
    assert r["ExecutedVersion"] == "1"
    assert body["env"]["COLOR"] == "blue"
    _, body = call(lam, name, "acme", {"action": "ls", "path": "/var/task"}, Qualifier="1")
    assert body["entries"] == ["bootstrap"]
    _, body = call(lam, plain, None, {"action": "echo"})
    assert body["tenantId"] is None
    # Tenancy still enforced after the restart.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    # Reserved concurrency still enforced after the restart.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert s.stop(signal.SIGTERM) == 0
    s.start()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s.client().invoke(FunctionName=name, TenantId="acme", Payload=b"{}")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


# ---------------------------------------------------------------- stopping


def test_sigterm_ends_every_environment_and_leaves_nothing(fresh_server, probe_zip):
    s = fresh_server.start()
    start_sandboxes(s, probe_zip, ["red", "green", "blue"])
    procs, boxes, cgroups, parents = snapshot(s)
    instance = instance_of(s.data_dir)
    envs = run_dir_envs(instance)
    # Preconditions: the inspection really sees the three live sandboxes.
    assert len([p for p, v in boxes.items() if "bwrap" in v[1]]) >= 3, procs
    env_ids = {d.name for d in cgroups}
    assert len(env_ids) == 3, cgroups
    assert {p.name for p in parents} == {f"quarters-{instance}"}
    assert set(envs) == env_ids, (envs, env_ids)

    assert s.stop(signal.SIGTERM, timeout=30) == 0

    survivors = [(pid, v[1]) for pid, v in procs.items() if alive(pid, v[0])]
    assert not survivors, f"processes outlived the server: {survivors}"
    left = [d for d in cgroups if d.exists()]
    assert not left, f"env cgroups left behind: {left}"
    for parent in parents:
        assert env_children(parent) == [], parent
    assert run_dir_envs(instance) == []


def test_restart_after_sigkill_removes_leftovers(fresh_server, probe_zip):
    s = fresh_server.start()
    lam, name = start_sandboxes(s, probe_zip, ["one", "two"])
    procs, boxes, cgroups, parents = snapshot(s)
    assert len({d.name for d in cgroups}) == 2, cgroups
    s.stop(signal.SIGKILL)
    assert s.proc.returncode == -signal.SIGKILL
    # Nobody cleaned up after a SIGKILL: the env cgroups are still there for the next server.
    assert [d for d in cgroups if d.exists()], "precondition: SIGKILL should leave env cgroups"

    again = Server(s.data_dir)
    try:
        again.start()

        def clean():
            return not any(alive(pid, v[0]) for pid, v in procs.items()) and not any(d.exists() for d in cgroups)

        assert wait_until(clean, 5), (
            [(pid, v[1]) for pid, v in procs.items() if alive(pid, v[0])],
            [d for d in cgroups if d.exists()],
        )
        for parent in parents:
            assert env_children(parent) == [], parent
        old_ids = {d.name for d in cgroups}
        assert not old_ids & set(run_dir_envs(instance_of(s.data_dir)))

        lam = again.client()
        _, body = call(lam, name, "one", {"action": "echo", "after": "kill"})
        assert body["payload"]["after"] == "kill"
        _, _, new_cgroups, _ = snapshot(again)
        assert new_cgroups and not ({d.name for d in new_cgroups} & old_ids)
    finally:
        again.stop(signal.SIGTERM)


# ---------------------------------------------------------------- the quarters CLI


def test_quarters_cli(server, tmp_path):
    fn_dir = tmp_path / "fn"
    fn_dir.mkdir()
    shutil.copy(TARGET / "probe", fn_dir / "bootstrap")
    os.chmod(fn_dir / "bootstrap", 0o755)
    (fn_dir / "config.txt").write_text("shipped")
    name = unique("cli")

    out = server.quarters("deploy", str(fn_dir), "--name", name, "--tenancy", "per-tenant").stdout
    assert f"deployed {name}" in out
    lam = server.client()
    cfg = lam.get_function_configuration(FunctionName=name)
    assert cfg["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    assert cfg["CodeSha256"] in out

    inv = server.quarters("invoke", name, "--tenant", "tenant-a", "--payload", '{"action":"echo"}')
    a = json.loads(inv.stdout)
    assert a["tenantId"] == "tenant-a"
    assert a["payload"] == {"action": "echo"}
    b = json.loads(server.quarters("invoke", name, "--tenant", "tenant-b", "--payload", '{"action":"echo"}').stdout)
    assert b["tenantId"] == "tenant-b"
    shipped = json.loads(
        server.quarters("invoke", name, "--tenant", "tenant-a", "--payload", '{"action":"read","path":"/var/task/config.txt"}').stdout
    )
    assert shipped["content"] == "shipped"
    assert shipped["instance"] == a["instance"]  # same tenant, same warm environment
    # Without a tenant the PER_TENANT function refuses, and the CLI says so with its exit code.
    assert server.quarters("invoke", name, "--payload", "{}", check=False).returncode != 0

    listing = server.quarters("list").stdout
    row = [line for line in listing.splitlines() if line.split() and line.split()[0] == name]
    assert row and "PER_TENANT" in row[0] and "provided.al2023" in row[0], listing

    envs = server.quarters("envs", name).stdout
    assert 'tenant "tenant-a": 1 environment(s)' in envs, envs
    assert 'tenant "tenant-b": 1 environment(s)' in envs, envs

    off = server.quarters("offboard", "--tenant", "tenant-a", "--function", name).stdout
    assert "destroyed 1 environment(s) of tenant tenant-a" in off, off
    envs = server.quarters("envs", name).stdout
    assert "tenant-a" not in envs, envs
    assert 'tenant "tenant-b": 1 environment(s)' in envs, envs
    again = server.quarters("offboard", "--tenant", "tenant-a", "--function", name).stdout
    assert "destroyed 0 environment(s)" in again

    def tenant_logs():
        return server.quarters("logs", name, "--tenant", "tenant-a").stdout

    wait_until(lambda: "REPORT RequestId: " + shipped["requestId"] in tenant_logs(), 5)
    logs = tenant_logs()
    for rid in (a["requestId"], shipped["requestId"]):
        assert f"START RequestId: {rid}" in logs, logs
        assert f"REPORT RequestId: {rid}" in logs, logs
    assert b["requestId"] not in logs
    assert "tenant-b" not in logs
    for line in logs.splitlines():
        assert "[tenant-a]" in line, line
    b_logs = server.quarters("logs", name, "--tenant", "tenant-b").stdout
    assert f"START RequestId: {b['requestId']}" in b_logs
    assert a["requestId"] not in b_logs


# ---------------------------------------------------------------- memory budget


def environments_doc(server, name):
    with urllib.request.urlopen(f"{server.endpoint}/quarters/v1/environments?function={name}", timeout=10) as r:
        return json.loads(r.read())


def test_memory_budget_bounds_live_environments_and_evicts_the_least_recently_used(fresh_server, probe_zip):
    """With --memory-budget-mb 384 and 128 MB functions, at most three environments live: each
    new tenant evicts the least recently used idle one; with all three busy, a fourth gets 429."""
    fresh_server.extra_args = ["--memory-budget-mb", "384"]
    s = fresh_server.start()
    lam = s.client()
    name = create(lam, probe_zip, MemorySize=128)
    instances = {}
    for i in range(6):
        t = f"tenant {i}/.."
        _, body = call(lam, name, t, {"action": "echo"})
        instances[t] = body["instance"]
        doc = environments_doc(s, name)
        assert len(doc["Environments"]) <= 3, doc
        assert doc["MemoryBudgetMB"] == 384 and doc["MemoryCommittedMB"] <= 384, doc
    live = {e["Tenant"] for e in environments_doc(s, name)["Environments"]}
    assert live == {"tenant 3/..", "tenant 4/..", "tenant 5/.."}, live
    # The newest tenants are still warm (same instance); the first was evicted (a new one).
    _, body = call(lam, name, "tenant 5/..", {"action": "echo"})
    assert body["instance"] == instances["tenant 5/.."]
    _, body = call(lam, name, "tenant 0/..", {"action": "echo"})
    assert body["instance"] != instances["tenant 0/.."]

    # Three busy environments hold the whole budget: a new tenant is refused with AWS's 429.
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(call, s.client(), name, f"busy {i}", {"action": "sleep", "ms": 3000}) for i in range(3)]
        ok = wait_until(lambda: sum(e["State"] == "busy" for e in environments_doc(s, name)["Environments"]) == 3, 20)
        assert ok, (environments_doc(s, name), [b.exception() if b.done() else None for b in busy])
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lam.invoke(FunctionName=name, TenantId="one too many", Payload=b"{}")
        err = e.value.response
        assert err["Error"]["Code"] == "TooManyRequestsException", err
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert "memory budget" in err["Error"]["Message"], err
        for b in busy:
            b.result(timeout=30)
    call(lam, name, "one too many", {"action": "echo"})
