"""Durable asynchronous invocations: stored before the 202, retried as Lambda does, delivered
to an on-failure destination, and kept across a crash."""

import json
import signal
import time
import urllib.request
import uuid

import botocore.exceptions
import pytest

from conftest import Server, create


def wait_for(predicate, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def logs(server, name, limit=500):
    return server.quarters("logs", name, "--limit", str(limit)).stdout


@pytest.fixture
def fast_server(tmp_path):
    s = Server(tmp_path / "data", extra_args=["--async-retry-delay", "0.2"]).start()
    yield s
    s.stop()


def test_failed_event_is_retried_then_sent_to_the_failure_destination(fast_server, probe_zip):
    lam = fast_server.client()
    source = create(lam, probe_zip, tenant=True)
    dest = create(lam, probe_zip, tenant=True)
    dest_arn = lam.get_function(FunctionName=dest)["Configuration"]["FunctionArn"]
    lam.put_function_event_invoke_config(
        FunctionName=source, MaximumRetryAttempts=2, DestinationConfig={"OnFailure": {"Destination": dest_arn}}
    )
    marker = uuid.uuid4().hex
    r = lam.invoke(
        FunctionName=source,
        InvocationType="Event",
        TenantId="blue",
        Payload=json.dumps({"action": "error", "message": marker}),
    )
    assert r["StatusCode"] == 202
    request_id = r["ResponseMetadata"]["RequestId"]

    record_line = wait_for(
        lambda: next((l for l in logs(fast_server, dest).splitlines() if marker in l and "event:" in l), None),
        what="the failure record at the destination",
    )
    record = json.loads(record_line.split("event: ", 1)[1])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestPayload"]["message"] == marker
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert marker in json.dumps(record["responsePayload"])
    # The destination ran for the same tenant.
    assert "[blue]" in [l.split()[1] for l in logs(fast_server, dest).splitlines() if marker in l][0]
    # The source ran three times: the first attempt and two retries.
    starts = [l for l in logs(fast_server, source).splitlines() if f"START RequestId: {request_id}" in l]
    assert len(starts) == 3, starts


def test_no_retries_when_configured(fast_server, probe_zip):
    lam = fast_server.client()
    name = create(lam, probe_zip, tenant=False)
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"action":"error"}')
    request_id = r["ResponseMetadata"]["RequestId"]
    wait_for(lambda: f"REPORT RequestId: {request_id}" in logs(fast_server, name), what="the attempt")
    time.sleep(1.0)
    starts = [l for l in logs(fast_server, name).splitlines() if f"START RequestId: {request_id}" in l]
    assert len(starts) == 1
    stats = json.loads(urllib.request.urlopen(f"{fast_server.endpoint}/quarters/v1/async").read())
    assert stats["Total"]["dropped"] >= 1


def test_queued_event_survives_a_crash(tmp_path, probe_zip):
    s = Server(tmp_path / "data").start()
    try:
        lam = s.client()
        name = create(lam, probe_zip, tenant=True)
        # Throttle everything so the event stays queued.
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
        marker = uuid.uuid4().hex
        r = lam.invoke(
            FunctionName=name, InvocationType="Event", TenantId="durable", Payload=json.dumps({"action": "print", "lines": [marker]})
        )
        assert r["StatusCode"] == 202
        stats = json.loads(urllib.request.urlopen(f"{s.endpoint}/quarters/v1/async").read())
        assert stats["Total"]["queued"] + stats["Total"]["in_flight"] >= 1
        s.stop(signal.SIGKILL)
        s.start()
        lam = s.client()
        lam.delete_function_concurrency(FunctionName=name)
        wait_for(lambda: marker in logs(s, name), timeout=30, what="the event to run after the restart")
    finally:
        s.stop()


def test_event_invoke_config_api(server, probe_zip):
    lam = server.client()
    name = create(lam, probe_zip)
    dest = create(lam, probe_zip)
    arn = lam.get_function(FunctionName=dest)["Configuration"]["FunctionArn"]
    put = lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=120, DestinationConfig={"OnFailure": {"Destination": arn}}
    )
    assert put["MaximumRetryAttempts"] == 1 and put["MaximumEventAgeInSeconds"] == 120
    assert put["DestinationConfig"]["OnFailure"]["Destination"] == arn
    assert put["FunctionArn"].endswith(f"function:{name}:$LATEST")
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert got["MaximumRetryAttempts"] == 1
    upd = lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert upd["MaximumRetryAttempts"] == 0 and upd["MaximumEventAgeInSeconds"] == 120
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert len(listed) == 1
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=99999)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    lam.delete_function_event_invoke_config(FunctionName=name)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lam.get_function_event_invoke_config(FunctionName=name)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
