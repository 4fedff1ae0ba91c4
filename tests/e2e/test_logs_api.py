"""The CloudWatch Logs-compatible API on the Lambda endpoint, through the real `aws logs` CLI and
boto3: log groups and streams, events, filter patterns (terms and JSON, by tenant), retention."""

import json
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import CREDS
from test_runtimes import invoke, make

APP = '''
import logging
logging.getLogger().setLevel(logging.INFO)
def handler(event, context):
    logging.info("order placed by %s", context.tenant_id)
    print("plain line from", context.tenant_id)
    return context.tenant_id
'''


def logs_client(server):
    return boto3.client("logs", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"max_attempts": 0}))


def wait_for(fn, timeout=10):
    deadline = time.time() + timeout
    while True:
        out = fn()
        if out or time.time() > deadline:
            return out
        time.sleep(0.1)


@pytest.fixture(scope="module")
def tenant_fn(server):
    lam = server.client()
    text = make(lam, "python3.12", "lambda_function.handler", {"lambda_function.py": APP})
    js = make(lam, "python3.12", "lambda_function.handler", {"lambda_function.py": APP},
              LoggingConfig={"LogFormat": "JSON"})
    for name in (text, js):
        for tenant in ("BlueTenant", "GreenTenant", "BlueTenant"):
            invoke(lam, name, tenant=tenant)
    return {"text": text, "json": js}


def test_groups_and_streams(server, tenant_fn):
    logs = logs_client(server)
    group = f"/aws/lambda/{tenant_fn['text']}"
    groups = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group]
    assert groups[0]["arn"].endswith(f":log-group:{group}:*")
    streams = wait_for(lambda: logs.describe_log_streams(logGroupName=group)["logStreams"])
    # One stream per environment: two tenants, two environments.
    assert len(streams) == 2
    assert all("[$LATEST]" in s["logStreamName"] for s in streams)
    newest = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", descending=True, limit=1)
    assert len(newest["logStreams"]) == 1 and "nextToken" in newest
    with pytest.raises(ClientError) as e:
        logs.describe_log_streams(logGroupName="/aws/lambda/no-such-function")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_get_log_events_of_one_stream(server, tenant_fn):
    logs = logs_client(server)
    group = f"/aws/lambda/{tenant_fn['text']}"
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    by_tenant = {}
    for s in streams:
        events = logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"], startFromHead=True)["events"]
        text = "\n".join(e["message"] for e in events)
        assert "INIT_START" in text and "START RequestId" in text and "REPORT RequestId" in text
        tenant = "BlueTenant" if "plain line from BlueTenant" in text else "GreenTenant"
        # A stream belongs to one tenant: the other never appears in it.
        other = "GreenTenant" if tenant == "BlueTenant" else "BlueTenant"
        assert other not in text
        by_tenant[tenant] = events
    assert sum("order placed" in e["message"] for e in by_tenant["BlueTenant"]) == 2
    # Paging forward from the head, two at a time, yields the same events in order.
    s = streams[0]["logStreamName"]
    all_events = logs.get_log_events(logGroupName=group, logStreamName=s, startFromHead=True)["events"]
    paged, token = [], None
    for _ in range(50):
        kw = {"nextToken": token} if token else {"startFromHead": True}
        page = logs.get_log_events(logGroupName=group, logStreamName=s, limit=2, **kw)
        if not page["events"]:
            break
        paged += page["events"]
        token = page["nextForwardToken"]
    assert [e["message"] for e in paged] == [e["message"] for e in all_events]


def test_filter_by_tenant_json_pattern(server, tenant_fn):
    logs = logs_client(server)
    group = f"/aws/lambda/{tenant_fn['json']}"
    blue = wait_for(lambda: logs.filter_log_events(
        logGroupName=group, filterPattern='{ $.tenantId = "BlueTenant" }')["events"])
    assert blue
    for e in blue:
        rec = json.loads(e["message"])
        assert rec["tenantId"] == "BlueTenant"
    assert sum(json.loads(e["message"]).get("message") == "order placed by BlueTenant" for e in blue) == 2
    green = logs.filter_log_events(logGroupName=group, filterPattern='{ $.tenantId = "GreenTenant" }')["events"]
    assert green and all(json.loads(e["message"])["tenantId"] == "GreenTenant" for e in green)
    # Platform records carry it under record.tenantId.
    platform = logs.filter_log_events(logGroupName=group,
                                      filterPattern='{ $.record.tenantId = "BlueTenant" && $.type = "platform.start" }')
    assert len(platform["events"]) == 2
    with pytest.raises(ClientError) as e:
        logs.filter_log_events(logGroupName=group, filterPattern="{ $.tenantId = }")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"


def test_filter_terms_through_the_aws_cli(server, tenant_fn):
    group = f"/aws/lambda/{tenant_fn['text']}"
    out = json.loads(server.cli("logs", "filter-log-events", "--log-group-name", group,
                                "--filter-pattern", '"plain line" GreenTenant').stdout)
    assert len(out["events"]) == 1 and "GreenTenant" in out["events"][0]["message"]
    out = json.loads(server.cli("logs", "filter-log-events", "--log-group-name", group,
                                "--filter-pattern", "?REPORT ?INIT_START").stdout)
    messages = [e["message"] for e in out["events"]]
    assert sum(m.startswith("REPORT") for m in messages) == 3
    assert sum(m.startswith("INIT_START") for m in messages) == 2
    groups = json.loads(server.cli("logs", "describe-log-groups", "--log-group-name-prefix", group).stdout)
    assert groups["logGroups"][0]["logGroupName"] == group


def test_retention_policy(server, tenant_fn):
    logs = logs_client(server)
    group = f"/aws/lambda/{tenant_fn['text']}"
    logs.put_retention_policy(logGroupName=group, retentionInDays=7)
    g = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert g["retentionInDays"] == 7
    with pytest.raises(ClientError) as e:
        logs.put_retention_policy(logGroupName=group, retentionInDays=8)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    logs.delete_retention_policy(logGroupName=group)
    assert "retentionInDays" not in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    # Recent events stay.
    assert logs.filter_log_events(logGroupName=group, filterPattern="REPORT")["events"]


def run_query(server, group, query, timeout=20):
    now = int(time.time())
    started = json.loads(server.cli("logs", "start-query", "--log-group-name", group,
                                    "--start-time", str(now - 3600), "--end-time", str(now + 60),
                                    "--query-string", query).stdout)
    deadline = time.time() + timeout
    while True:
        out = json.loads(server.cli("logs", "get-query-results", "--query-id", started["queryId"]).stdout)
        if out["status"] in ("Complete", "Failed", "Cancelled") or time.time() > deadline:
            return out
        time.sleep(0.1)


def rows_of(out):
    return [{c["field"]: c["value"] for c in row} for row in out["results"]]


def test_insights_tenant_queries_of_the_reference(server, tenant_fn):
    """The two tenant queries of the reference (§5.4), through `aws logs start-query`."""
    group = f"/aws/lambda/{tenant_fn['json']}"
    wait_for(lambda: logs_client(server).filter_log_events(logGroupName=group, filterPattern="REPORT")["events"]
             or logs_client(server).filter_log_events(logGroupName=group, filterPattern="platform.report")["events"])
    out = run_query(server, group, "fields @logStream, @message\n"
                    "| filter tenantId=='BlueTenant' or record.tenantId=='BlueTenant'\n"
                    "| stats count() as logCount by @logStream\n| sort @timestamp desc")
    assert out["status"] == "Complete", out
    rows = rows_of(out)
    # BlueTenant's two invocations ran in one environment: one stream.
    assert len(rows) == 1 and int(rows[0]["logCount"]) >= 6
    streams = logs_client(server).describe_log_streams(logGroupName=group)["logStreams"]
    assert rows[0]["@logStream"] in {s["logStreamName"] for s in streams}
    out = run_query(server, group, "fields @message\n"
                    "| filter tenantId=='BlueTenant' or record.tenantId=='BlueTenant'\n| limit 1000")
    rows = rows_of(out)
    assert rows and out["statistics"]["recordsMatched"] == len(rows)
    for r in rows:
        rec = json.loads(r["@message"])
        assert rec.get("tenantId", rec.get("record", {}).get("tenantId")) == "BlueTenant"
    green = rows_of(run_query(server, group, "filter tenantId=='GreenTenant' | fields @message"))
    assert green and all("BlueTenant" not in r["@message"] for r in green)


def test_insights_stats_and_errors(server, tenant_fn):
    group = f"/aws/lambda/{tenant_fn['text']}"
    out = run_query(server, group, 'filter @message like /^REPORT/ '
                    '| parse @message "Duration: * ms" as d | stats count() as n, max(d) as slowest')
    rows = rows_of(out)
    assert int(rows[0]["n"]) == 3 and float(rows[0]["slowest"]) > 0
    p = server.cli("logs", "start-query", "--log-group-name", group, "--start-time", "0", "--end-time", "1",
                   "--query-string", "filter (", check=False)
    assert p.returncode != 0 and "MalformedQueryException" in p.stderr


def test_live_tail_filters_by_tenant(server, tenant_fn):
    """`quarters logs tail` follows new records of one tenant only, as they are written."""
    import subprocess
    from conftest import QUARTERS
    lam = server.client()
    name = tenant_fn["text"]
    proc = subprocess.Popen([str(QUARTERS), "logs", "tail", name, "--tenant", "BlueTenant", "--filter", "plain line"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(__import__("os").environ, QUARTERS_ENDPOINT=server.endpoint))
    try:
        time.sleep(1.0)  # subscribed
        for tenant in ("GreenTenant", "BlueTenant", "GreenTenant", "BlueTenant"):
            invoke(lam, name, tenant=tenant)
        time.sleep(1.0)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = [l for l in out.splitlines() if l.strip()]
    assert len(lines) == 2, out
    assert all("[BlueTenant]" in l and "plain line from BlueTenant" in l for l in lines)


def test_quarters_logs_query_prints_a_table(server, tenant_fn):
    out = server.quarters("logs", "query", tenant_fn["json"],
                          "filter tenantId=='GreenTenant' | stats count() as n by tenantId").stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["tenantId", "n"]
    assert row.split()[0] == "GreenTenant" and int(row.split()[1]) >= 2


def test_level_is_stored_and_filterable(server, tenant_fn):
    """Every record is stored with its level: INFO from the logging module (text and JSON
    formats), PLATFORM for START/END/REPORT; `quarters logs --level` selects by it."""
    import urllib.request
    for kind in ("text", "json"):
        url = f"{server.endpoint}/quarters/v1/logs?function={tenant_fn[kind]}&limit=1000"
        recs = json.load(urllib.request.urlopen(url))["Records"]
        by_level = {}
        for r in recs:
            by_level.setdefault(r["level"], []).append(r["message"])
        assert any("order placed by" in m for m in by_level.get("INFO", [])), by_level.keys()
        assert any("REPORT RequestId" in m or "platform.report" in m for m in by_level["PLATFORM"])
        # Plain print output has no level.
        if kind == "text":
            assert any("plain line from" in m for m in by_level.get(None, []))
    out = server.quarters("logs", tenant_fn["text"], "--level", "info", "--tenant", "GreenTenant").stdout
    lines = [l for l in out.splitlines() if l.strip()]
    assert lines and all("order placed by GreenTenant" in l for l in lines), out


def test_retention_by_size(server):
    """A log group kept to a size loses its oldest records first, through `quarters logs
    retention --max-bytes`; what remains is the newest and fits."""
    lam = server.client()
    name = make(lam, "python3.12", "lambda_function.handler", {"lambda_function.py": APP})
    for i in range(6):
        invoke(lam, name, tenant=f"T{i}")
    logs = logs_client(server)
    group = f"/aws/lambda/{name}"

    def stored():
        return logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["storedBytes"]
    wait_for(lambda: stored() > 2000)
    time.sleep(1.0)  # the writer's last batch is in
    before = stored()
    out = server.quarters("logs", "retention", name, "--max-bytes", "1000").stdout
    assert "old records deleted" in out
    after = stored()
    assert 0 < after <= 1000 < before
    # The newest tenant's records are the ones kept.
    events = logs.filter_log_events(logGroupName=group)["events"]
    assert any("plain line from T5" in e["message"] for e in events)
    assert not any("plain line from T0" in e["message"] for e in events)
    # New records keep the group near its limit on the next enforcement.
    server.quarters("logs", "retention", name, "--max-bytes", "none")
    invoke(lam, name, tenant="T6")
    wait_for(lambda: stored() > after)
    assert stored() > after
