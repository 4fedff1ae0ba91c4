"""IAM roles and STS on the one endpoint, through real boto3 and the aws CLI: roles with trust and
inline policies, AssumeRole with session tags (the trust policy must allow sts:TagSession),
temporary credentials that sign like any others, and what a role session may not do."""

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import unique

ACCOUNT = "000000000000"


def client(server, service, creds=None):
    kw = dict(aws_access_key_id="test", aws_secret_access_key="test")
    if creds:
        kw = dict(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                  aws_session_token=creds["SessionToken"])
    return boto3.client(service, endpoint_url=server.endpoint, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 0}), **kw)


def trust(tag_session=True):
    actions = ["sts:AssumeRole"] + (["sts:TagSession"] if tag_session else [])
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": actions}]})


TENANT_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/*"},
    {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]})


def code(fn):
    with pytest.raises(ClientError) as e:
        fn()
    return e.value.response["Error"]["Code"]


def test_roles_and_inline_policies(server):
    iam = client(server, "iam")
    name = unique("role")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust(), Path="/tenants/")["Role"]
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/tenants/{name}" and role["RoleId"].startswith("AROA")
    got = iam.get_role(RoleName=name)["Role"]
    assert got["AssumeRolePolicyDocument"]["Statement"][0]["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    assert code(lambda: iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust())) == "EntityAlreadyExists"
    assert code(lambda: iam.create_role(RoleName=unique("bad"), AssumeRolePolicyDocument="{not json")) == \
        "MalformedPolicyDocument"
    iam.put_role_policy(RoleName=name, PolicyName="tenant-data", PolicyDocument=TENANT_POLICY)
    doc = iam.get_role_policy(RoleName=name, PolicyName="tenant-data")["PolicyDocument"]
    assert doc["Statement"][0]["Resource"].endswith("${aws:PrincipalTag/TenantId}/*")
    assert iam.list_role_policies(RoleName=name)["PolicyNames"] == ["tenant-data"]
    assert name in [r["RoleName"] for r in iam.list_roles(PathPrefix="/tenants/")["Roles"]]
    assert code(lambda: iam.delete_role(RoleName=name)) == "DeleteConflict"
    iam.delete_role_policy(RoleName=name, PolicyName="tenant-data")
    iam.delete_role(RoleName=name)
    assert code(lambda: iam.get_role(RoleName=name)) == "NoSuchEntity"


def test_assume_role_with_tenant_tags(server):
    iam, sts = client(server, "iam"), client(server, "sts")
    name = unique("tenant")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust())["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=TENANT_POLICY)
    assert sts.get_caller_identity()["Account"] == ACCOUNT
    out = sts.assume_role(RoleArn=arn, RoleSessionName="blue-session", DurationSeconds=900,
                          Tags=[{"Key": "TenantId", "Value": "BlueTenant"}])
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SessionToken"]
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/blue-session"
    # The temporary credentials sign requests like any others.
    me = client(server, "sts", creds).get_caller_identity()
    assert me["Arn"] == out["AssumedRoleUser"]["Arn"]
    # A role session cannot manage functions, logs or APIs, nor create roles it is not allowed to.
    assert code(lambda: client(server, "lambda", creds).list_functions()) == "AccessDeniedException"
    assert code(lambda: client(server, "apigateway", creds).get_rest_apis()) == "AccessDeniedException"
    assert code(lambda: client(server, "iam", creds).create_role(
        RoleName=unique("escalate"), AssumeRolePolicyDocument=trust())) == "AccessDenied"
    # A forged token, a wrong secret.
    forged = dict(creds, SessionToken=creds["SessionToken"][:-4] + "AAAA")
    assert code(lambda: client(server, "sts", forged).get_caller_identity()) in (
        "InvalidClientTokenId", "UnrecognizedClientException")
    wrong = dict(creds, SecretAccessKey="x" * 40)
    assert code(lambda: client(server, "sts", wrong).get_caller_identity()) in (
        "InvalidSignatureException", "SignatureDoesNotMatch")


def test_session_tags_need_tag_session_in_the_trust_policy(server):
    iam, sts = client(server, "iam"), client(server, "sts")
    name = unique("notags")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust(tag_session=False))["Role"]["Arn"]
    assert code(lambda: sts.assume_role(RoleArn=arn, RoleSessionName="s1",
                                        Tags=[{"Key": "TenantId", "Value": "x"}])) == "AccessDenied"
    assert sts.assume_role(RoleArn=arn, RoleSessionName="s1")["Credentials"]["AccessKeyId"].startswith("ASIA")
    assert code(lambda: sts.assume_role(RoleArn=arn, RoleSessionName="s1", DurationSeconds=7200)) == "ValidationError"


def test_the_aws_cli_drives_iam_and_sts(server):
    name = unique("cli")
    out = json.loads(server.cli("iam", "create-role", "--role-name", name,
                                "--assume-role-policy-document", trust()).stdout)
    assert out["Role"]["RoleName"] == name
    me = json.loads(server.cli("sts", "get-caller-identity").stdout)
    assert me["Account"] == ACCOUNT
    creds = json.loads(server.cli("sts", "assume-role", "--role-arn", out["Role"]["Arn"],
                                  "--role-session-name", "cli", "--tags", "Key=TenantId,Value=Green").stdout)
    assert creds["Credentials"]["AccessKeyId"].startswith("ASIA")
