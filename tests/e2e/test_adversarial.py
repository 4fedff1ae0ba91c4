"""The adversarial isolation suite: a function that tries to escape its environment, and
neighbours that must not notice. Every attempt must fail inside the sandbox."""

import json
import statistics
import threading
import time

import pytest

from conftest import create


def call(lam, name, tenant, payload):
    r = lam.invoke(FunctionName=name, TenantId=tenant, Payload=json.dumps(payload))
    body = json.loads(r["Payload"].read())
    return r, body


@pytest.fixture(scope="module")
def attacker(server, probe_zip):
    lam = server.client()
    return create(lam, probe_zip, MemorySize=128, Timeout=20)


ESCAPES = [
    "mount_tmpfs",
    "umount_proc",
    "unshare_user",
    "unshare_net",
    "ptrace_parent",
    "ptrace_pid1",
    "mknod",
    "init_module",
    "bpf",
    "keyctl",
    "chroot",
    "setuid0",
    "reboot",
    "write_root",
    "write_task",
    "cgroup_escape",
]


@pytest.mark.parametrize("what", ESCAPES)
def test_escape_attempt_fails(server, attacker, what):
    r, body = call(server.client(), attacker, "mallory", {"action": "attempt", "what": what})
    assert "FunctionError" not in r, body
    assert body["result"].startswith("error"), f"{what} succeeded inside the sandbox: {body['result']}"


@pytest.mark.parametrize(
    "path",
    ["/etc/shadow", "/etc/passwd", "/root/.bashrc", "/proc/1/root/etc/shadow", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
)
def test_host_files_are_not_readable(server, attacker, path):
    _, body = call(server.client(), attacker, "mallory", {"action": "attempt", "what": "open_path", "path": path})
    assert body["result"].startswith("error"), f"read {path}: {body['result']}"


def test_hardening_is_in_place(server, attacker):
    _, body = call(server.client(), attacker, "mallory", {"action": "id"})
    status = dict(line.split(":\t", 1) for line in body["status"].splitlines() if ":\t" in line)
    assert status["CapEff"].strip() == "0000000000000000"
    assert status["CapBnd"].strip() == "0000000000000000"
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    assert status["Uid"].split()[0] != "0"
    _, body = call(server.client(), attacker, "mallory", {"action": "ls", "path": "/dev"})
    assert set(body["entries"]) <= {"null", "zero", "full", "random", "urandom", "tty", "shm", "pts", "ptmx", "fd", "stdin", "stdout", "stderr", "core", "console", "mqueue"}
    assert not any(e.startswith(("sd", "vd", "nvme", "kvm", "mem", "kmsg")) for e in body["entries"])


def test_other_environments_are_invisible(server, attacker):
    lam = server.client()
    call(lam, attacker, "victim", {"action": "write_tmp", "name": "victim-secret", "data": "s3cr3t"})
    _, ps = call(lam, attacker, "mallory", {"action": "ps"})
    cmdlines = [p["cmdline"] for p in ps["processes"]]
    assert len(cmdlines) <= 4, cmdlines  # bwrap's pid 1, our init, the runtime
    # No host path (the data or run directories) shows in any command line.
    for c in cmdlines:
        assert str(server.data_dir) not in c and "/run/quarters" not in c and "--setenv" not in c, c
    _, ls = call(lam, attacker, "mallory", {"action": "ls", "path": "/proc"})
    pids = [e for e in ls["entries"] if e.isdigit()]
    for pid in pids:
        _, tmp = call(lam, attacker, "mallory", {"action": "ls", "path": f"/proc/{pid}/root/tmp"})
        assert "victim-secret" not in json.dumps(tmp["entries"])
    _, mine = call(lam, attacker, "mallory", {"action": "list_tmp"})
    assert "victim-secret" not in mine["tmp"]


def test_no_network_to_the_platform_or_other_environments(server, attacker):
    lam = server.client()
    for addr in [f"127.0.0.1:{server.port}", "10.0.2.2:80", "169.254.169.254:80"]:
        _, body = call(lam, attacker, "mallory", {"action": "connect", "addr": addr})
        assert body["connect"] != "connected", addr
    # Its own Runtime API port is the only thing listening, and it leads to itself.
    _, body = call(lam, attacker, "mallory", {"action": "connect", "addr": "127.0.0.1:9001"})
    assert body["connect"] == "connected"


def test_memory_exhaustion_kills_only_that_environment(server, attacker):
    lam = server.client()
    _, before = call(lam, attacker, "neighbour-mem", {"action": "echo"})
    r, body = call(lam, attacker, "mallory", {"action": "alloc", "mb": 400})
    assert r.get("FunctionError") == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: signal: killed" in body["errorMessage"]
    r, again = call(lam, attacker, "mallory", {"action": "echo"})
    assert "FunctionError" not in r
    _, after = call(lam, attacker, "neighbour-mem", {"action": "echo"})
    assert after["instance"] == before["instance"], "the neighbour's environment survived"


def test_fork_bomb_stays_inside(server, probe_zip):
    lam = server.client()
    # Enough memory for a thousand processes, so the pids limit is what stops the bomb.
    attacker = create(lam, probe_zip, MemorySize=2048, Timeout=60)
    _, before = call(lam, attacker, "neighbour-pids", {"action": "echo"})
    r, body = call(lam, attacker, "mallory", {"action": "forkbomb"})
    assert "FunctionError" not in r, body
    assert body["error"], "the pids limit stopped the bomb"
    assert body["started"] < 1024
    _, after = call(lam, attacker, "neighbour-pids", {"action": "echo"})
    assert after["instance"] == before["instance"]


def test_tmp_is_limited_to_ephemeral_storage(server, probe_zip):
    lam = server.client()
    # 128 MB of memory and 512 MB of /tmp: filling /tmp must give ENOSPC, not an OOM kill.
    name = create(lam, probe_zip, MemorySize=128, EphemeralStorage={"Size": 512}, Timeout=60)
    r, body = call(lam, name, "filler", {"action": "fill_tmp"})
    assert "FunctionError" not in r, body
    assert "No space left on device" in (body["error"] or "")
    assert 500 * 2**20 <= body["written"] <= 512 * 2**20
    _, other = call(lam, name, "other", {"action": "list_tmp"})
    assert other["tmp"] == []


def test_killing_everything_inside_affects_only_that_environment(server, attacker):
    lam = server.client()
    _, before = call(lam, attacker, "neighbour-kill", {"action": "echo"})
    r, body = call(lam, attacker, "mallory", {"action": "attempt", "what": "kill_all"})
    # kill(-1) can only reach the attacker's own processes: its runtime dies with it.
    if r.get("FunctionError"):
        assert body["errorType"] == "Runtime.ExitError"
    # The dying environment may already have taken the next event before its sandbox is gone
    # (the runtime outlives the signal by a moment): that one call fails, as the attacker's own;
    # the one after it must run in a fresh environment.
    r, body = call(lam, attacker, "mallory", {"action": "echo"})
    if r.get("FunctionError"):
        assert body["errorType"] == "Runtime.ExitError", body
        r, _ = call(lam, attacker, "mallory", {"action": "echo"})
    assert "FunctionError" not in r
    _, after = call(lam, attacker, "neighbour-kill", {"action": "echo"})
    assert after["instance"] == before["instance"]


def test_cpu_burner_does_not_starve_a_neighbour(server, attacker):
    """A tenant burning CPU must not raise a neighbour's p99 by more than 2x. Our machines are
    shared and noisy, so the comparison is made up to three times (baseline and loaded measured
    back to back each time) and passes if one round holds."""
    lam = server.client()

    def latencies(n):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            call(lam, attacker, "neighbour-cpu", {"action": "echo"})
            out.append(time.perf_counter() - t)
        return sorted(out)

    def p99(xs):
        return xs[int(len(xs) * 0.99) - 1]

    latencies(20)
    rounds = []
    for _ in range(3):
        base = latencies(150)
        stop = threading.Event()

        def burn():
            burner = server.client()
            while not stop.is_set():
                call(burner, attacker, "mallory-cpu", {"action": "spin", "ms": 1000})

        t = threading.Thread(target=burn)
        t.start()
        try:
            time.sleep(0.5)
            loaded = latencies(150)
        finally:
            stop.set()
            t.join()
        rounds.append((p99(base), p99(loaded), statistics.median(base), statistics.median(loaded)))
        if p99(loaded) <= 2 * p99(base) + 0.002:
            return
    raise AssertionError(
        "neighbour p99 under a CPU burner exceeded 2x its baseline in every round: "
        + "; ".join(f"p99 {b * 1e3:.2f} -> {l * 1e3:.2f} ms (median {mb * 1e3:.2f} -> {ml * 1e3:.2f})" for b, l, mb, ml in rounds)
    )
