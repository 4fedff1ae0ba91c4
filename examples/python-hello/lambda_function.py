"""A Python function for Quarters: `quarters deploy examples/python-hello --name hello-py --tenancy per-tenant`.

Module state and /tmp belong to one tenant's environment: each tenant counts on its own."""

import os

COUNT = 0


def lambda_handler(event, context):
    global COUNT
    COUNT += 1
    print(f"tenant {context.tenant_id} call {COUNT}")
    return {
        "message": f"hello, {event.get('name', 'world')}",
        "tenant": context.tenant_id,
        "count": COUNT,
        "python": os.environ.get("AWS_EXECUTION_ENV"),
    }
