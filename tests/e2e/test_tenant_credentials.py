"""Credentials inside environments, through boto3 running in a Python function (shipped as a layer
built from the suite's own boto3): the execution role's credentials in the environment, reaching
Quarters' APIs through the environment's relay (AWS_ENDPOINT_URL), and, beyond Lambda, the tenant
role's credentials tagged with the environment's tenant from the container-credentials endpoint."""

import io
import json
import pathlib
import sys
import zipfile

import boto3
import pytest
from botocore.config import Config

from conftest import unique
from test_runtimes import make

ACCOUNT = "000000000000"

FUNCTION = '''
import json, os
import boto3
from botocore.credentials import ContainerProvider

def handler(event, context):
    out = {"endpoint": os.environ.get("AWS_ENDPOINT_URL")}
    out["execution"] = boto3.client("sts").get_caller_identity()["Arn"]
    creds = ContainerProvider().load()
    tenant = boto3.client("sts", aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                          aws_session_token=creds.token)
    out["tenant"] = tenant.get_caller_identity()["Arn"]
    try:
        boto3.client("lambda", aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                     aws_session_token=creds.token).list_functions()
        out["lambda"] = "allowed"
    except Exception as e:
        out["lambda"] = type(e).__name__ + ": " + str(e)[:80]
    return out
'''


def boto3_layer():
    """boto3 and its dependencies from this interpreter's site-packages, under python/."""
    import boto3 as b, botocore, dateutil, jmespath, s3transfer, urllib3, six
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for mod in (b, botocore, dateutil, jmespath, s3transfer, urllib3):
            root = pathlib.Path(mod.__file__).parent
            for f in root.rglob("*"):
                if f.is_file() and "__pycache__" not in f.parts:
                    z.write(f, "python/" + str(f.relative_to(root.parent)))
        z.write(six.__file__, "python/six.py")
    return buf.getvalue()


def client(server, service):
    return boto3.client(service, endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": 0}))


def role(iam, name, actions):
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                      "Action": ["sts:AssumeRole", "sts:TagSession"]}]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    return arn


@pytest.fixture(scope="module")
def layer_arn(server):
    lam = server.client()
    return lam.publish_layer_version(LayerName=unique("boto3"), Content={"ZipFile": boto3_layer()},
                                     CompatibleRuntimes=["python3.12"])["LayerVersionArn"]


def test_execution_and_tenant_credentials_inside_environments(server, layer_arn):
    iam, lam = client(server, "iam"), server.client()
    exec_role = role(iam, unique("exec"), ["sts:GetCallerIdentity"])
    tenant_role = role(iam, unique("tenant"), ["sts:GetCallerIdentity"])
    name = make(lam, "python3.12", "app.handler", {"app.py": FUNCTION}, Role=exec_role, Layers=[layer_arn],
                Timeout=30, MemorySize=256, Environment={"Variables": {"QUARTERS_TENANT_ROLE_ARN": tenant_role}})
    seen = {}
    for tenant in ("BlueTenant", "Green Tenant/..", "BlueTenant"):
        r = lam.invoke(FunctionName=name, TenantId=tenant, Payload=b"{}")
        out = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, out
        assert out["endpoint"] == "http://127.0.0.1:9002"
        exec_name = exec_role.split("/")[-1]
        assert out["execution"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{exec_name}/{name}", out
        tenant_name = tenant_role.split("/")[-1]
        assert out["tenant"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{tenant_name}/tenant-"), out
        # Role sessions cannot manage Quarters.
        assert out["lambda"].startswith("ClientError") and "AccessDenied" in out["lambda"], out
        seen.setdefault(tenant, set()).add(out["tenant"])
    # One session per tenant, and different tenants get different ones.
    assert len(seen["BlueTenant"]) == 1 and seen["BlueTenant"] != seen["Green Tenant/.."]
