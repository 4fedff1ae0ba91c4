"""A per-tenant function behind the API gateway: it says which tenant it serves, and counts the
invocations its execution environment has served (each tenant has environments of its own)."""

import json
import os

invocations = 0


def lambda_handler(event, context):
    global invocations
    invocations += 1
    body = {
        "tenant": context.tenant_id,
        "path": event.get("path"),
        "color": (event.get("stageVariables") or {}).get("color"),
        "greeting": os.environ.get("GREETING", "hello"),
        "invocations_in_this_environment": invocations,
    }
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
