"""Drives quarters-s3 with real boto3. Run by tests/boto3.rs, which starts the server and
sets S3_ENDPOINT. Keys: AKIDTEST/secret (allowed everything; session token "bad-token" is
refused), AKIDOTHER/secret2 (denied everything under private/ of every bucket, and listing
with a prefix under private/), anonymous (allowed only GetObject under anon/)."""

import hashlib
import io
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
import urllib3
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

EP = os.environ["S3_ENDPOINT"]
MiB = 1024 * 1024
BUCKET = "test-bucket"

CFG = Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1})


def client(ak, sk, token=None, config=CFG):
    return boto3.client(
        "s3",
        endpoint_url=EP,
        region_name="us-east-1",
        aws_access_key_id=ak,
        aws_secret_access_key=sk,
        aws_session_token=token,
        config=config,
    )


s3 = client("AKIDTEST", "secret")
other = client("AKIDOTHER", "secret2")
anon = boto3.client(
    "s3", endpoint_url=EP, region_name="us-east-1", config=CFG.merge(Config(signature_version=UNSIGNED))
)


def md5(b):
    return hashlib.md5(b).hexdigest()


def error_of(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{fn.__name__}({a}, {kw}) succeeded, expected an error")


def expect(code, status, fn, *a, **kw):
    got = error_of(fn, *a, **kw)
    assert got == (code, status), f"{fn.__name__} {kw}: got {got}, want {(code, status)}"


def fetch(url, method="GET", data=None):
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def step(name):
    print(f"-- {name}", flush=True)


# ---------------------------------------------------------------- buckets
step("buckets")
s3.create_bucket(Bucket=BUCKET)
expect("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket=BUCKET)
expect("BucketAlreadyExists", 409, other.create_bucket, Bucket=BUCKET)
expect("InvalidBucketName", 400, s3.create_bucket, Bucket="ab")
expect("InvalidBucketName", 400, s3.create_bucket, Bucket="Upper-Case")
s3.head_bucket(Bucket=BUCKET)
expect("404", 404, s3.head_bucket, Bucket="missing-bucket")
assert BUCKET in [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert BUCKET not in [b["Name"] for b in other.list_buckets()["Buckets"]]

# ---------------------------------------------------------------- objects
step("put/get/head")
body = b"hello, quarters"
r = s3.put_object(Bucket=BUCKET, Key="dir/hello.txt", Body=body, ContentType="text/plain", Metadata={"color": "blue"})
etag = f'"{md5(body)}"'
assert r["ETag"] == etag, r["ETag"]
g = s3.get_object(Bucket=BUCKET, Key="dir/hello.txt")
assert g["Body"].read() == body
assert g["ETag"] == etag and g["ContentType"] == "text/plain" and g["Metadata"] == {"color": "blue"}, g
assert g["ContentLength"] == len(body)
h = s3.head_object(Bucket=BUCKET, Key="dir/hello.txt")
assert h["ContentLength"] == len(body) and h["ETag"] == etag and h["Metadata"] == {"color": "blue"}
assert h["LastModified"].year >= 2024

step("ranges")
g = s3.get_object(Bucket=BUCKET, Key="dir/hello.txt", Range="bytes=0-4")
assert g["ResponseMetadata"]["HTTPStatusCode"] == 206
assert g["Body"].read() == b"hello" and g["ContentRange"] == "bytes 0-4/15", g["ContentRange"]
g = s3.get_object(Bucket=BUCKET, Key="dir/hello.txt", Range="bytes=-8")
assert g["Body"].read() == b"quarters" and g["ContentRange"] == "bytes 7-14/15"
g = s3.get_object(Bucket=BUCKET, Key="dir/hello.txt", Range="bytes=7-")
assert g["Body"].read() == b"quarters"
expect("InvalidRange", 416, s3.get_object, Bucket=BUCKET, Key="dir/hello.txt", Range="bytes=100-200")

step("conditionals")
expect("304", 304, s3.get_object, Bucket=BUCKET, Key="dir/hello.txt", IfNoneMatch=etag)
expect("PreconditionFailed", 412, s3.get_object, Bucket=BUCKET, Key="dir/hello.txt", IfMatch='"0000"')
assert s3.get_object(Bucket=BUCKET, Key="dir/hello.txt", IfMatch=etag)["Body"].read() == body
expect("PreconditionFailed", 412, s3.put_object, Bucket=BUCKET, Key="dir/hello.txt", Body=b"x", IfNoneMatch="*")
s3.put_object(Bucket=BUCKET, Key="dir/created-once.txt", Body=b"x", IfNoneMatch="*")

step("missing")
expect("NoSuchKey", 404, s3.get_object, Bucket=BUCKET, Key="nope")
expect("404", 404, s3.head_object, Bucket=BUCKET, Key="nope")
expect("NoSuchBucket", 404, s3.get_object, Bucket="missing-bucket", Key="x")
expect("NoSuchBucket", 404, s3.put_object, Bucket="missing-bucket", Key="x", Body=b"x")

step("untrusted keys")
weird = [
    "../../../../etc/passwd",
    "dots/./../x",
    "a b+c%d&e=f?g#h",
    "unicode/ünïcødé/日本語/😀",
    "trailing/",
    "k" * 1024,
]
for i, k in enumerate(weird):
    s3.put_object(Bucket=BUCKET, Key=k, Body=f"v{i}".encode())
for i, k in enumerate(weird):
    assert s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() == f"v{i}".encode(), k
expect("KeyTooLongError", 400, s3.put_object, Bucket=BUCKET, Key="k" * 1025, Body=b"x")

step("entity too large")
expect("EntityTooLarge", 400, s3.put_object, Bucket=BUCKET, Key="too-big", Body=b"\0" * (11 * MiB + 1))

# ---------------------------------------------------------------- authorisation
step("access denied")
s3.put_object(Bucket=BUCKET, Key="private/secret.txt", Body=b"top secret")
s3.put_object(Bucket=BUCKET, Key="public/readme.txt", Body=b"hi")
s3.put_object(Bucket=BUCKET, Key="anon/ok.txt", Body=b"for everyone")
expect("AccessDenied", 403, other.get_object, Bucket=BUCKET, Key="private/secret.txt")
expect("AccessDenied", 403, other.put_object, Bucket=BUCKET, Key="private/new.txt", Body=b"x")
expect("AccessDenied", 403, other.delete_object, Bucket=BUCKET, Key="private/secret.txt")
expect("AccessDenied", 403, other.list_objects_v2, Bucket=BUCKET, Prefix="private/")
assert other.get_object(Bucket=BUCKET, Key="public/readme.txt")["Body"].read() == b"hi"
assert [o["Key"] for o in other.list_objects_v2(Bucket=BUCKET, Prefix="public/")["Contents"]] == ["public/readme.txt"]
expect("AccessDenied", 403, anon.get_object, Bucket=BUCKET, Key="public/readme.txt")
expect("AccessDenied", 403, anon.list_objects_v2, Bucket=BUCKET)
assert anon.get_object(Bucket=BUCKET, Key="anon/ok.txt")["Body"].read() == b"for everyone"
expect("SignatureDoesNotMatch", 403, client("AKIDTEST", "wrong").get_object, Bucket=BUCKET, Key="anon/ok.txt")
expect("InvalidAccessKeyId", 403, client("AKIDNOPE", "x").get_object, Bucket=BUCKET, Key="anon/ok.txt")

step("session tokens")
good = client("AKIDTEST", "secret", token="good-token")
bad = client("AKIDTEST", "secret", token="bad-token")
assert good.get_object(Bucket=BUCKET, Key="dir/hello.txt")["Body"].read() == body
expect("AccessDenied", 403, bad.get_object, Bucket=BUCKET, Key="dir/hello.txt")

# ---------------------------------------------------------------- presigned URLs
step("presigned")
url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "dir/hello.txt"}, ExpiresIn=60)
assert fetch(url) == (200, body), fetch(url)
status, resp = fetch(url.replace("hello.txt", "hellO.txt"))
assert status == 403 and b"SignatureDoesNotMatch" in resp, (status, resp)
status, resp = fetch(other.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "private/secret.txt"}))
assert status == 403 and b"AccessDenied" in resp, (status, resp)
url = good.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "dir/hello.txt"})
assert "X-Amz-Security-Token=good-token" in url
assert fetch(url) == (200, body)
status, resp = fetch(bad.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "dir/hello.txt"}))
assert status == 403 and b"AccessDenied" in resp, (status, resp)
put_url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "presigned/put.txt"}, ExpiresIn=60)
assert fetch(put_url, method="PUT", data=b"uploaded via url")[0] == 200
assert s3.get_object(Bucket=BUCKET, Key="presigned/put.txt")["Body"].read() == b"uploaded via url"
step("presigned POST (browser form upload)")
post = s3.generate_presigned_post(BUCKET, "post/upload.txt", ExpiresIn=60)
fields = dict(post["fields"])
fields["file"] = ("upload.txt", b"posted!")
r = urllib3.request("POST", post["url"], fields=fields)
assert r.status in (200, 204), (r.status, r.data)
assert s3.get_object(Bucket=BUCKET, Key="post/upload.txt")["Body"].read() == b"posted!"
post = other.generate_presigned_post(BUCKET, "private/posted.txt", ExpiresIn=60)
fields = dict(post["fields"])
fields["file"] = ("x.txt", b"nope")
r = urllib3.request("POST", post["url"], fields=fields)
assert r.status == 403 and b"AccessDenied" in r.data, (r.status, r.data)
assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="private/posted")

expired = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "dir/hello.txt"}, ExpiresIn=1)
time.sleep(2.5)
status, resp = fetch(expired)
assert status == 403 and b"AccessDenied" in resp, (status, resp)

# ---------------------------------------------------------------- multipart
step("multipart")
p1, p2 = os.urandom(5 * MiB), os.urandom(5 * MiB)
key = "big/object.bin"
mpu = s3.create_multipart_upload(Bucket=BUCKET, Key=key, ContentType="application/x-test", Metadata={"kind": "big"})
uid = mpu["UploadId"]
r1 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=p1)
r2 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2, Body=p2)
assert r1["ETag"] == f'"{md5(p1)}"'
parts = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)["Parts"]
assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 * MiB), (2, 5 * MiB)], parts
done = s3.complete_multipart_upload(
    Bucket=BUCKET,
    Key=key,
    UploadId=uid,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r1["ETag"]}, {"PartNumber": 2, "ETag": r2["ETag"]}]},
)
want = hashlib.md5(hashlib.md5(p1).digest() + hashlib.md5(p2).digest()).hexdigest() + "-2"
assert done["ETag"] == f'"{want}"', (done["ETag"], want)
g = s3.get_object(Bucket=BUCKET, Key=key)
assert g["Body"].read() == p1 + p2
assert g["ETag"] == f'"{want}"' and g["ContentType"] == "application/x-test" and g["Metadata"] == {"kind": "big"}
assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == 10 * MiB
g = s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")
assert g["Body"].read() == p1[-10:] + p2[:10]
g = s3.get_object(Bucket=BUCKET, Key=key, PartNumber=2)
assert g["Body"].read() == p2 and g["PartsCount"] == 2, g.get("PartsCount")
expect("NoSuchUpload", 404, s3.list_parts, Bucket=BUCKET, Key=key, UploadId=uid)

step("multipart abort / too small / bad part")
uid = s3.create_multipart_upload(Bucket=BUCKET, Key="big/aborted")["UploadId"]
s3.upload_part(Bucket=BUCKET, Key="big/aborted", UploadId=uid, PartNumber=1, Body=b"x" * 1000)
s3.abort_multipart_upload(Bucket=BUCKET, Key="big/aborted", UploadId=uid)
expect("NoSuchUpload", 404, s3.list_parts, Bucket=BUCKET, Key="big/aborted", UploadId=uid)
expect("NoSuchUpload", 404, s3.upload_part, Bucket=BUCKET, Key="big/aborted", UploadId=uid, PartNumber=1, Body=b"x")
uid = s3.create_multipart_upload(Bucket=BUCKET, Key="big/small")["UploadId"]
a = s3.upload_part(Bucket=BUCKET, Key="big/small", UploadId=uid, PartNumber=1, Body=b"a" * MiB)["ETag"]
b = s3.upload_part(Bucket=BUCKET, Key="big/small", UploadId=uid, PartNumber=2, Body=b"b")["ETag"]
parts = [{"PartNumber": 1, "ETag": a}, {"PartNumber": 2, "ETag": b}]
expect("EntityTooSmall", 400, s3.complete_multipart_upload, Bucket=BUCKET, Key="big/small", UploadId=uid, MultipartUpload={"Parts": parts})
bad_parts = [{"PartNumber": 1, "ETag": b}]
expect("InvalidPart", 400, s3.complete_multipart_upload, Bucket=BUCKET, Key="big/small", UploadId=uid, MultipartUpload={"Parts": bad_parts})
s3.abort_multipart_upload(Bucket=BUCKET, Key="big/small", UploadId=uid)
expect("AccessDenied", 403, other.create_multipart_upload, Bucket=BUCKET, Key="private/mpu")

step("managed transfer (s3transfer, concurrent parts, ranged download)")
data = os.urandom(12 * MiB + 123)
tc = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
s3.upload_fileobj(io.BytesIO(data), BUCKET, "big/managed.bin", Config=tc)
out = io.BytesIO()
s3.download_fileobj(BUCKET, "big/managed.bin", out, Config=tc)
assert out.getvalue() == data
assert s3.head_object(Bucket=BUCKET, Key="big/managed.bin")["ETag"].endswith('-3"')

# ---------------------------------------------------------------- copy
step("copy")
r = s3.copy_object(Bucket=BUCKET, Key="copy/hello.txt", CopySource={"Bucket": BUCKET, "Key": "dir/hello.txt"})
assert r["CopyObjectResult"]["ETag"] == etag
g = s3.get_object(Bucket=BUCKET, Key="copy/hello.txt")
assert g["Body"].read() == body and g["Metadata"] == {"color": "blue"} and g["ContentType"] == "text/plain"
s3.copy_object(
    Bucket=BUCKET,
    Key="copy/hello.txt",
    CopySource={"Bucket": BUCKET, "Key": "copy/hello.txt"},
    MetadataDirective="REPLACE",
    Metadata={"color": "red"},
    ContentType="text/x-red",
)
h = s3.head_object(Bucket=BUCKET, Key="copy/hello.txt")
assert h["Metadata"] == {"color": "red"} and h["ContentType"] == "text/x-red", h
expect("InvalidRequest", 400, s3.copy_object, Bucket=BUCKET, Key="copy/hello.txt", CopySource={"Bucket": BUCKET, "Key": "copy/hello.txt"})
r = s3.copy_object(Bucket=BUCKET, Key="copy/unicode", CopySource={"Bucket": BUCKET, "Key": "unicode/ünïcødé/日本語/😀"})
assert s3.get_object(Bucket=BUCKET, Key="copy/unicode")["Body"].read() == b"v3"
r = s3.copy_object(Bucket=BUCKET, Key="copy/big.bin", CopySource={"Bucket": BUCKET, "Key": "big/object.bin"})
assert r["CopyObjectResult"]["ETag"] == f'"{md5(p1 + p2)}"'
expect("AccessDenied", 403, other.copy_object, Bucket=BUCKET, Key="public/stolen", CopySource={"Bucket": BUCKET, "Key": "private/secret.txt"})
expect("NoSuchKey", 404, s3.copy_object, Bucket=BUCKET, Key="copy/x", CopySource={"Bucket": BUCKET, "Key": "nope"})
expect(
    "PreconditionFailed",
    412,
    s3.copy_object,
    Bucket=BUCKET,
    Key="copy/x",
    CopySource={"Bucket": BUCKET, "Key": "dir/hello.txt"},
    CopySourceIfMatch='"0000"',
)

# ---------------------------------------------------------------- listing
step("list")
LB = "list-bucket"
s3.create_bucket(Bucket=LB)
keys = ["a/1", "a/2", "b", "c/x/1", "c/y", "d", "sp ace/ü+x&y"]
for k in keys:
    s3.put_object(Bucket=LB, Key=k, Body=b"x")
r = s3.list_objects_v2(Bucket=LB, Delimiter="/")
assert [o["Key"] for o in r["Contents"]] == ["b", "d"], r
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c/", "sp ace/"], r
assert r["KeyCount"] == 5 and not r["IsTruncated"]
r = s3.list_objects_v2(Bucket=LB, Prefix="c/", Delimiter="/")
assert [o["Key"] for o in r["Contents"]] == ["c/y"] and [p["Prefix"] for p in r["CommonPrefixes"]] == ["c/x/"], r
r = s3.list_objects_v2(Bucket=LB, Prefix="sp ace/")
assert [o["Key"] for o in r["Contents"]] == ["sp ace/ü+x&y"], r
assert r["Contents"][0]["ETag"] == f'"{md5(b"x")}"' and r["Contents"][0]["Size"] == 1
r = s3.list_objects_v2(Bucket=LB, StartAfter="b")
assert [o["Key"] for o in r["Contents"]] == ["c/x/1", "c/y", "d", "sp ace/ü+x&y"], r
r = s3.list_objects_v2(Bucket=LB, MaxKeys=2)
assert r["IsTruncated"] and r["KeyCount"] == 2 and "NextContinuationToken" in r
r2 = s3.list_objects_v2(Bucket=LB, MaxKeys=2, ContinuationToken=r["NextContinuationToken"])
assert [o["Key"] for o in r2["Contents"]] == ["b", "c/x/1"], r2
seen, pages = [], 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=LB, PaginationConfig={"PageSize": 2}):
    pages += 1
    seen += [o["Key"] for o in page.get("Contents", [])]
assert seen == sorted(keys) and pages == 4, (seen, pages)
seen = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=LB, Delimiter="/", PaginationConfig={"PageSize": 1}):
    seen += [o["Key"] for o in page.get("Contents", [])] + [p["Prefix"] for p in page.get("CommonPrefixes", [])]
assert seen == ["a/", "b", "c/", "d", "sp ace/"], seen
r = s3.list_objects(Bucket=LB, Delimiter="/", MaxKeys=2)
assert r["IsTruncated"] and [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/"] and r["NextMarker"] == "b", r
expect("NoSuchBucket", 404, s3.list_objects_v2, Bucket="missing-bucket")

# ---------------------------------------------------------------- delete
step("delete objects")
r = other.delete_objects(
    Bucket=BUCKET,
    Delete={"Objects": [{"Key": "private/secret.txt"}, {"Key": "public/readme.txt"}, {"Key": "does-not-exist"}]},
)
assert sorted(d["Key"] for d in r["Deleted"]) == ["does-not-exist", "public/readme.txt"], r
assert [(e["Key"], e["Code"]) for e in r["Errors"]] == [("private/secret.txt", "AccessDenied")], r
s3.head_object(Bucket=BUCKET, Key="private/secret.txt")
expect("404", 404, s3.head_object, Bucket=BUCKET, Key="public/readme.txt")
s3.delete_object(Bucket=BUCKET, Key="dir/hello.txt")
s3.delete_object(Bucket=BUCKET, Key="dir/hello.txt")  # idempotent
expect("NoSuchKey", 404, s3.get_object, Bucket=BUCKET, Key="dir/hello.txt")

step("delete bucket")
expect("BucketNotEmpty", 409, s3.delete_bucket, Bucket=LB)
r = s3.delete_objects(Bucket=LB, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
assert not r.get("Errors") and not r.get("Deleted"), r
s3.delete_bucket(Bucket=LB)
expect("404", 404, s3.head_bucket, Bucket=LB)
expect("NoSuchBucket", 404, s3.delete_bucket, Bucket=LB)

print("ALL OK", flush=True)
sys.exit(0)
