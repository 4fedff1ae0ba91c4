"""Drives a Quarters identity test server with the real boto3 clients.

Usage: boto3_e2e.py ENDPOINT ACCOUNT ADMIN_KEY ADMIN_SECRET
Raises on any mismatch; prints "ok" at the end.
"""

import json
import sys

import boto3
import botocore.config
from botocore.exceptions import ClientError

endpoint, account, admin_key, admin_secret = sys.argv[1:5]
config = botocore.config.Config(retries={"max_attempts": 1})


def clients(key, secret, token=None):
    s = boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token,
                      region_name="us-east-1")
    return s.client("iam", endpoint_url=endpoint, config=config), s.client("sts", endpoint_url=endpoint, config=config)


def expect_error(code, status, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
        assert got == (code, status), f"{fn.__name__}: expected {(code, status)}, got {got}: {e.response}"
        assert e.response["Error"]["Message"], e.response
        assert e.response["ResponseMetadata"]["RequestId"], e.response
        return e
    raise AssertionError(f"{fn.__name__} should have failed with {code}")


iam, sts = clients(admin_key, admin_secret)

trust = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                   "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]}],
}
policy = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                   "Resource": "arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/*"}],
}

# IAM: roles.
created = iam.create_role(RoleName="tenant-role", Path="/tenants/", AssumeRolePolicyDocument=json.dumps(trust),
                          Description="Tenant <role> & co", MaxSessionDuration=7200,
                          Tags=[{"Key": "team", "Value": "platform"}])["Role"]
assert created["Arn"] == f"arn:aws:iam::{account}:role/tenants/tenant-role", created
assert created["RoleId"].startswith("AROA"), created
# botocore URL-decodes and JSON-parses policy documents, as with AWS.
assert created["AssumeRolePolicyDocument"] == trust, created
assert created["Description"] == "Tenant <role> & co", created
assert created["CreateDate"].tzinfo is not None, created
role = iam.get_role(RoleName="tenant-role")["Role"]
assert role["RoleId"] == created["RoleId"] and role["MaxSessionDuration"] == 7200, role
assert role["Tags"] == [{"Key": "team", "Value": "platform"}], role
expect_error("EntityAlreadyExists", 409, iam.create_role, RoleName="TENANT-ROLE",
             AssumeRolePolicyDocument=json.dumps(trust))
expect_error("MalformedPolicyDocument", 400, iam.create_role, RoleName="bad", AssumeRolePolicyDocument="{}")
try:
    iam.get_role(RoleName="missing")
    raise AssertionError("GetRole of a missing role")
except iam.exceptions.NoSuchEntityException as e:
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404

for name in ["b-role", "c-role"]:
    iam.create_role(RoleName=name, Path="/tenants/", AssumeRolePolicyDocument=json.dumps(trust))
pages = list(iam.get_paginator("list_roles").paginate(PathPrefix="/tenants/", PaginationConfig={"PageSize": 2}))
names = [r["RoleName"] for p in pages for r in p["Roles"]]
assert names == ["b-role", "c-role", "tenant-role"], names
assert len(pages) == 2 and pages[0]["IsTruncated"] and not pages[1]["IsTruncated"], pages

# IAM: inline policies.
iam.put_role_policy(RoleName="tenant-role", PolicyName="tenant-data", PolicyDocument=json.dumps(policy))
got = iam.get_role_policy(RoleName="tenant-role", PolicyName="tenant-data")
assert got["PolicyDocument"] == policy and got["PolicyName"] == "tenant-data", got
assert iam.list_role_policies(RoleName="tenant-role")["PolicyNames"] == ["tenant-data"]
expect_error("DeleteConflict", 409, iam.delete_role, RoleName="tenant-role")
iam.delete_role(RoleName="c-role")

# STS.
me = sts.get_caller_identity()
assert me["Arn"] == f"arn:aws:iam::{account}:root" and me["Account"] == account, me
assumed = sts.assume_role(RoleArn=created["Arn"], RoleSessionName="blue-session", DurationSeconds=900,
                          Tags=[{"Key": "TenantId", "Value": "blue"}], TransitiveTagKeys=["TenantId"],
                          Policy=json.dumps(policy), SourceIdentity="alice")
creds = assumed["Credentials"]
assert creds["AccessKeyId"].startswith("ASIA") and len(creds["SecretAccessKey"]) == 40, creds
assert creds["Expiration"].tzinfo is not None, creds
assert assumed["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{account}:assumed-role/tenant-role/blue-session"
assert assumed["AssumedRoleUser"]["AssumedRoleId"] == created["RoleId"] + ":blue-session", assumed
assert 0 < assumed["PackedPolicySize"] <= 100, assumed
assert assumed["SourceIdentity"] == "alice", assumed
expect_error("AccessDenied", 403, sts.assume_role, RoleArn=f"arn:aws:iam::{account}:role/nope",
             RoleSessionName="s1")
expect_error("ValidationError", 400, sts.assume_role, RoleArn=created["Arn"], RoleSessionName="s1",
             DurationSeconds=7201)
expect_error("MalformedPolicyDocument", 400, sts.assume_role, RoleArn=created["Arn"], RoleSessionName="s1",
             Policy=json.dumps(trust))

# The temporary credentials sign requests with the derived secret and the session token.
t_iam, t_sts = clients(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
who = t_sts.get_caller_identity()
assert who["Arn"] == assumed["AssumedRoleUser"]["Arn"], who
assert who["UserId"] == assumed["AssumedRoleUser"]["AssumedRoleId"], who
expect_error("AccessDenied", 403, t_iam.create_role, RoleName="evil", AssumeRolePolicyDocument=json.dumps(trust))
expect_error("AccessDenied", 403, t_iam.delete_role_policy, RoleName="tenant-role", PolicyName="tenant-data")
# A tampered token, or a wrong secret, is refused.
bad_token = creds["SessionToken"][:-4] + ("AAAA" if not creds["SessionToken"].endswith("AAAA") else "BBBB")
_, b_sts = clients(creds["AccessKeyId"], creds["SecretAccessKey"], bad_token)
expect_error("InvalidClientTokenId", 403, b_sts.get_caller_identity)
_, w_sts = clients(creds["AccessKeyId"], "x" * 40, creds["SessionToken"])
expect_error("SignatureDoesNotMatch", 403, w_sts.get_caller_identity)
_, u_sts = clients("ASIAAAAAAAAAAAAAAAAA", "x" * 40, creds["SessionToken"])
expect_error("InvalidClientTokenId", 403, u_sts.get_caller_identity)

print("ok")
