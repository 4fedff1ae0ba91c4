"""Parses Quarters' IAM/STS XML with botocore's own awsQuery parser and the real service models.

Usage: botocore_parse.py MANIFEST.json
MANIFEST is a list of {"service", "operation", "status", "file"}. Prints a JSON list of the parsed
results (timestamps as ISO 8601, with their time zone), in the same order.
"""

import datetime
import json
import sys

import botocore.session
from botocore.parsers import QueryParser


def plain(value):
    if isinstance(value, datetime.datetime):
        assert value.tzinfo is not None, "timestamps must carry a time zone"
        return value.isoformat()
    raise TypeError(repr(value))


def main():
    with open(sys.argv[1]) as f:
        manifest = json.load(f)
    session = botocore.session.get_session()
    parser = QueryParser()
    out = []
    for case in manifest:
        model = session.get_service_model(case["service"])
        op = model.operation_model(case["operation"])
        with open(case["file"], "rb") as f:
            body = f.read()
        parsed = parser.parse({"body": body, "headers": {}, "status_code": case["status"]}, op.output_shape)
        out.append(parsed)
    json.dump(out, sys.stdout, default=plain)


if __name__ == "__main__":
    main()
