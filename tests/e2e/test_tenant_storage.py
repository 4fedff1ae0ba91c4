"""The talk's storage demo, end to end, with boto3 inside a Python function and the AWS SDK for
Rust inside a native one (functions-sdk/storage): a shared bucket every tenant's function reads
with the execution role, and per-tenant prefixes that a tenant's credentials reach only for that
tenant, both through Quarters' per-tenant credentials and through the authorizer flow (a TOKEN
authorizer validates the JWT, calls AssumeRole with the tenant tag and passes the credentials on
through the gateway)."""

import json
import pathlib
import subprocess

import boto3
import pytest
from botocore.config import Config

from conftest import ROOT, unique, zip_binary
from test_gateway import Api, jwt
from test_runtimes import make
from test_tenant_credentials import boto3_layer

TENANTS = ("BlueTenant", "GreenTenant", "YellowTenant")

FUNCTION = '''
import json, os
import boto3
from botocore.config import Config
from botocore.credentials import ContainerProvider
from botocore.exceptions import ClientError

CFG = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0})

def read_all(s3, prefix_bucket):
    out = {}
    for t in ("BlueTenant", "GreenTenant", "YellowTenant"):
        try:
            out[t] = s3.get_object(Bucket=prefix_bucket, Key=f"{t}/secret.txt")["Body"].read().decode()
        except ClientError as e:
            out[t] = e.response["Error"]["Code"]
    return out

def handler(event, context):
    shared = boto3.client("s3", config=CFG).get_object(Bucket=os.environ["SHARED"], Key="readme.txt")
    out = {"shared": shared["Body"].read().decode(), "tenant": context.tenant_id}
    az = (event.get("requestContext") or {}).get("authorizer")
    if az:   # the authorizer flow: credentials from the authorizer's context
        kw = dict(aws_access_key_id=az["accessKeyId"], aws_secret_access_key=az["secretAccessKey"],
                  aws_session_token=az["sessionToken"])
    else:    # Quarters' per-tenant credentials
        c = ContainerProvider().load()
        kw = dict(aws_access_key_id=c.access_key, aws_secret_access_key=c.secret_key, aws_session_token=c.token)
    out["data"] = read_all(boto3.client("s3", config=CFG, **kw), os.environ["TENANT_DATA"])
    if az:
        return {"statusCode": 200, "body": json.dumps(out)}
    return out
'''

AUTHORIZER = '''
import base64, hashlib, hmac, json, os
import boto3

def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def handler(event, context):
    token = event["authorizationToken"].removeprefix("Bearer ")
    try:
        h, p, sig = token.split(".")
        good = hmac.new(b"demo-secret", f"{h}.{p}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(good, b64d(sig)):
            raise ValueError
        tenant = json.loads(b64d(p))["tenantId"]
    except Exception:
        raise Exception("Unauthorized")
    creds = boto3.client("sts").assume_role(RoleArn=os.environ["TENANT_ROLE"], RoleSessionName="authorizer",
                                            Tags=[{"Key": "TenantId", "Value": tenant}])["Credentials"]
    arn = event["methodArn"].split("/")[0] + "/*"
    return {"principalId": tenant,
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": arn}]},
            "context": {"tenantId": tenant, "accessKeyId": creds["AccessKeyId"],
                        "secretAccessKey": creds["SecretAccessKey"], "sessionToken": creds["SessionToken"]}}
'''


SDK_FUNCTION = ROOT / "functions-sdk" / "storage"
SDK_TARGET = ROOT / "target" / "functions-sdk"


def rust_storage_zip():
    """The native storage function, built on the AWS SDK for Rust. It is not in the workspace (the
    SDK is large): `./dev test` builds it before the suite; cargo makes this a no-op then."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", str(SDK_FUNCTION / "Cargo.toml"),
                    "--target-dir", str(SDK_TARGET)], check=True, timeout=1800)
    return zip_binary(SDK_TARGET / "release" / "storage")


def admin(server, service):
    cfg = Config(retries={"max_attempts": 0}, s3={"addressing_style": "path"})
    return boto3.client(service, endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test", config=cfg)


def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture(scope="module")
def storage(server):
    s3, iam, lam = admin(server, "s3"), admin(server, "iam"), server.client()
    shared, data = unique("shared"), unique("tenant-data")
    for b in (shared, data):
        s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=shared, Key="readme.txt", Body=b"for every tenant")
    for t in TENANTS:
        s3.put_object(Bucket=data, Key=f"{t}/secret.txt", Body=f"{t}'s data".encode())
    exec_name, tenant_name = unique("exec"), unique("tenant-role")
    exec_arn = f"arn:aws:iam::000000000000:role/{exec_name}"
    lambda_trust = policy({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"})
    iam.create_role(RoleName=exec_name, AssumeRolePolicyDocument=lambda_trust)
    tenant_trust = policy({"Effect": "Allow", "Principal": {"AWS": exec_arn},
                           "Action": ["sts:AssumeRole", "sts:TagSession"]})
    tenant_arn = iam.create_role(RoleName=tenant_name, AssumeRolePolicyDocument=tenant_trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName=exec_name, PolicyName="shared", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{shared}/*"},
        {"Effect": "Allow", "Action": ["sts:AssumeRole", "sts:TagSession"], "Resource": tenant_arn}))
    iam.put_role_policy(RoleName=tenant_name, PolicyName="own-prefix", PolicyDocument=policy(
        {"Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{data}/${{aws:PrincipalTag/TenantId}}/*"}))
    layer = lam.publish_layer_version(LayerName=unique("boto3"), Content={"ZipFile": boto3_layer()})["LayerVersionArn"]
    env = {"SHARED": shared, "TENANT_DATA": data, "TENANT_ROLE": tenant_arn, "QUARTERS_TENANT_ROLE_ARN": tenant_arn}
    fn = make(lam, "python3.12", "app.handler", {"app.py": FUNCTION}, Role=exec_arn, Layers=[layer], Timeout=30,
              MemorySize=256, Environment={"Variables": env})
    rs = unique("storage-rs")
    lam.create_function(FunctionName=rs, Runtime="provided.al2023", Role=exec_arn, Handler="bootstrap",
                        Code={"ZipFile": rust_storage_zip()}, Timeout=30, MemorySize=256,
                        TenancyConfig={"TenantIsolationMode": "PER_TENANT"}, Environment={"Variables": env})
    az = make(lam, "python3.12", "az.handler", {"az.py": AUTHORIZER}, tenant=False, Role=exec_arn, Layers=[layer],
              Timeout=30, MemorySize=256, Environment={"Variables": env})
    return {"python": fn, "rust": rs, "authorizer": az, "shared": shared, "data": data}


def expected(tenant):
    return {t: (f"{t}'s data" if t == tenant else "AccessDenied") for t in TENANTS}


SDKS = pytest.mark.parametrize("sdk", ["python", "rust"], ids=["boto3", "aws-sdk-rust"])


@SDKS
def test_per_tenant_credentials_reach_only_their_tenants_data(server, storage, sdk):
    lam = server.client()
    for tenant in TENANTS:
        r = lam.invoke(FunctionName=storage[sdk], TenantId=tenant, Payload=b"{}")
        out = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, out
        assert out["shared"] == "for every tenant" and out["tenant"] == tenant
        assert out["data"] == expected(tenant), out
        assert out.get("sdk") == ("aws-sdk-rust" if sdk == "rust" else None), out


@SDKS
def test_the_authorizer_flow_passes_tenant_credentials_on(server, storage, sdk):
    api = Api(server)
    az = api.authorizer(storage["authorizer"])
    api.route("/data", storage[sdk], tenant="context.authorizer.tenantId", auth=az)
    api.deploy()
    from test_gateway import call
    for tenant in ("BlueTenant", "GreenTenant"):
        status, _, body = call(api.url("/data"), headers={"Authorization": f"Bearer {jwt({'tenantId': tenant})}"})
        assert status == 200, body
        out = json.loads(body)
        assert out["tenant"] == tenant and out["shared"] == "for every tenant"
        assert out.get("sdk") == ("aws-sdk-rust" if sdk == "rust" else None), out
        assert out["data"] == expected(tenant), out
    assert call(api.url("/data"))[0] == 401


def test_s3_api_on_the_endpoint(server):
    """The S3-compatible store through boto3 on the one endpoint (routed by the SigV4 scope)."""
    import urllib.request
    s3 = admin(server, "s3")
    b = unique("bucket")
    s3.create_bucket(Bucket=b)
    assert b in [x["Name"] for x in s3.list_buckets()["Buckets"]]
    s3.put_object(Bucket=b, Key="a/one.txt", Body=b"0123456789", ContentType="text/plain", Metadata={"k": "v"})
    s3.put_object(Bucket=b, Key="a/two.txt", Body=b"x")
    s3.put_object(Bucket=b, Key="top.txt", Body=b"y")
    got = s3.get_object(Bucket=b, Key="a/one.txt", Range="bytes=2-5")
    assert got["Body"].read() == b"2345" and got["ResponseMetadata"]["HTTPStatusCode"] == 206
    head = s3.head_object(Bucket=b, Key="a/one.txt")
    assert head["ContentLength"] == 10 and head["Metadata"] == {"k": "v"}
    listed = s3.list_objects_v2(Bucket=b, Delimiter="/")
    assert [c["Prefix"] for c in listed["CommonPrefixes"]] == ["a/"] and [o["Key"] for o in listed["Contents"]] == ["top.txt"]
    s3.copy_object(Bucket=b, Key="copy.txt", CopySource={"Bucket": b, "Key": "a/one.txt"})
    assert s3.get_object(Bucket=b, Key="copy.txt")["Body"].read() == b"0123456789"
    url = s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "top.txt"}, ExpiresIn=60)
    req = urllib.request.Request(url, headers={"X-No-Sign": "1"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.read() == b"y"
    out = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in ("a/one.txt", "a/two.txt", "top.txt", "copy.txt")]})
    assert len(out["Deleted"]) == 4
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=b, Key="top.txt")
    s3.delete_bucket(Bucket=b)
