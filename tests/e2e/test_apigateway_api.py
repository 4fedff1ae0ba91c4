"""The API Gateway REST (v1) management API on the one `--listen` endpoint, through real boto3
(`apigateway` client) and the real `aws apigateway` CLI: every object's create, get, list, update
and delete, the exact error codes and HTTP statuses of the model, and persistence over a restart."""

import datetime
import json
import signal

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import Server, unique

ACCOUNT = "000000000000"


def lambda_uri(name):
    return (f"arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}/invocations")


def apigw(server):
    return boto3.client("apigateway", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": 0}))


@pytest.fixture
def gw(server):
    return apigw(server)


def status(r):
    return r["ResponseMetadata"]["HTTPStatusCode"]


def fails(code, http, fn, **kw):
    """Call `fn(**kw)`; it must fail with this error code and HTTP status. Returns the message."""
    with pytest.raises(ClientError) as e:
        fn(**kw)
    err = e.value.response
    assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == (code, http), err
    return err["Error"].get("Message", "")


def not_found(fn, **kw):
    return fails("NotFoundException", 404, fn, **kw)


def bad_request(fn, **kw):
    return fails("BadRequestException", 400, fn, **kw)


def conflict(fn, **kw):
    return fails("ConflictException", 409, fn, **kw)


def body(r):
    """A response without its metadata, for comparisons."""
    return {k: v for k, v in r.items() if k != "ResponseMetadata"}


def new_api(gw, **kw):
    r = gw.create_rest_api(name=unique("api"), **kw)
    assert status(r) == 201
    return r["id"], r["rootResourceId"]


def deployable_api(gw, path_part="items"):
    """An API with GET /<path_part> integrated with a Lambda function: (api id, resource id)."""
    api, root = new_api(gw)
    rid = gw.create_resource(restApiId=api, parentId=root, pathPart=path_part)["id"]
    gw.put_method(restApiId=api, resourceId=rid, httpMethod="GET", authorizationType="NONE")
    gw.put_integration(restApiId=api, resourceId=rid, httpMethod="GET", type="AWS_PROXY",
                       integrationHttpMethod="POST", uri=lambda_uri("items"))
    return api, rid


# ---------------------------------------------------------------- REST APIs


def test_rest_api_create_get_list_update_delete(gw):
    name = unique("api")
    r = gw.create_rest_api(name=name, description="orders", apiKeySource="AUTHORIZER",
                           binaryMediaTypes=["image/png"], tags={"team": "blue"})
    assert status(r) == 201
    api = r["id"]
    assert len(api) == 10 and api.isalnum()
    assert r["name"] == name and r["description"] == "orders"
    assert r["apiKeySource"] == "AUTHORIZER"
    assert r["binaryMediaTypes"] == ["image/png"]
    assert r["tags"] == {"team": "blue"}
    assert isinstance(r["createdDate"], datetime.datetime)
    assert r["endpointConfiguration"] == {"types": ["EDGE"]}
    assert r["disableExecuteApiEndpoint"] is False

    got = gw.get_rest_api(restApiId=api)
    assert status(got) == 200
    assert body(got) == body(r)
    # The root resource is there from the start.
    res = gw.get_resources(restApiId=api)["items"]
    assert [(x["id"], x["path"]) for x in res] == [(r["rootResourceId"], "/")]
    assert "parentId" not in res[0] and "pathPart" not in res[0]

    listed = {a["id"]: a for a in gw.get_rest_apis()["items"]}
    assert listed[api]["name"] == name and listed[api]["rootResourceId"] == r["rootResourceId"]

    up = gw.update_rest_api(restApiId=api, patchOperations=[
        {"op": "replace", "path": "/name", "value": name + "-2"},
        {"op": "replace", "path": "/description", "value": "renamed"},
        {"op": "replace", "path": "/apiKeySource", "value": "HEADER"},
    ])
    assert status(up) == 200
    assert (up["name"], up["description"], up["apiKeySource"]) == (name + "-2", "renamed", "HEADER")
    assert up["rootResourceId"] == r["rootResourceId"] and up["id"] == api
    assert gw.get_rest_api(restApiId=api)["name"] == name + "-2"
    bad_request(gw.update_rest_api, restApiId=api,
                patchOperations=[{"op": "replace", "path": "/apiKeySource", "value": "COOKIE"}])
    bad_request(gw.update_rest_api, restApiId=api,
                patchOperations=[{"op": "replace", "path": "/rootResourceId", "value": "x"}])
    assert gw.get_rest_api(restApiId=api)["apiKeySource"] == "HEADER"

    d = gw.delete_rest_api(restApiId=api)
    assert status(d) == 202
    not_found(gw.get_rest_api, restApiId=api)
    not_found(gw.get_resources, restApiId=api)
    not_found(gw.delete_rest_api, restApiId=api)
    not_found(gw.update_rest_api, restApiId=api, patchOperations=[])
    assert api not in {a["id"] for a in gw.get_rest_apis()["items"]}


def test_rest_api_defaults_and_bad_input(gw):
    r = gw.create_rest_api(name=unique("api"))
    assert r["apiKeySource"] == "HEADER"
    assert "description" not in r
    bad_request(gw.create_rest_api, name=unique("api"), apiKeySource="COOKIE")
    bad_request(gw.create_rest_api, name="")
    not_found(gw.get_rest_api, restApiId="nosuchapi0")
    gw.delete_rest_api(restApiId=r["id"])


def test_rest_apis_through_the_aws_cli(server, gw):
    name = unique("cli")
    p = server.cli("apigateway", "create-rest-api", "--name", name, "--api-key-source", "AUTHORIZER",
                   "--output", "json")
    api = json.loads(p.stdout)
    assert api["name"] == name and api["apiKeySource"] == "AUTHORIZER"
    listed = json.loads(server.cli("apigateway", "get-rest-apis", "--output", "json").stdout)["items"]
    assert api["id"] in {a["id"] for a in listed}

    p = server.cli("apigateway", "create-resource", "--rest-api-id", api["id"], "--parent-id",
                   api["rootResourceId"], "--path-part", "{proxy+}", "--output", "json")
    res = json.loads(p.stdout)
    assert (res["path"], res["pathPart"], res["parentId"]) == ("/{proxy+}", "{proxy+}", api["rootResourceId"])
    p = server.cli("apigateway", "put-method", "--rest-api-id", api["id"], "--resource-id", res["id"],
                   "--http-method", "ANY", "--authorization-type", "NONE", "--api-key-required",
                   "--request-parameters", "method.request.path.proxy=true", "--output", "json")
    m = json.loads(p.stdout)
    assert m == {"httpMethod": "ANY", "authorizationType": "NONE", "apiKeyRequired": True,
                 "requestParameters": {"method.request.path.proxy": True}}
    items = json.loads(server.cli("apigateway", "get-resources", "--rest-api-id", api["id"],
                                  "--output", "json").stdout)["items"]
    by_path = {i["path"]: i for i in items}
    assert set(by_path) == {"/", "/{proxy+}"}
    assert by_path["/{proxy+}"]["resourceMethods"]["ANY"]["apiKeyRequired"] is True
    # boto3 sees what the CLI made.
    assert gw.get_method(restApiId=api["id"], resourceId=res["id"], httpMethod="ANY")["apiKeyRequired"] is True

    # Errors come out of the CLI as the same codes.
    p = server.cli("apigateway", "get-rest-api", "--rest-api-id", "nosuchapi0", check=False)
    assert p.returncode != 0 and "NotFoundException" in p.stderr
    p = server.cli("apigateway", "create-resource", "--rest-api-id", api["id"], "--parent-id",
                   res["id"], "--path-part", "below", check=False)
    assert p.returncode != 0 and "BadRequestException" in p.stderr
    server.cli("apigateway", "delete-rest-api", "--rest-api-id", api["id"])
    not_found(gw.get_rest_api, restApiId=api["id"])


# ---------------------------------------------------------------- resources


def test_resources_literal_param_greedy_nested_and_subtree_delete(gw):
    api, root = new_api(gw)
    orders = gw.create_resource(restApiId=api, parentId=root, pathPart="orders")
    assert status(orders) == 201
    assert (orders["path"], orders["pathPart"], orders["parentId"]) == ("/orders", "orders", root)
    assert "resourceMethods" not in orders
    item = gw.create_resource(restApiId=api, parentId=orders["id"], pathPart="{orderId}")
    assert item["path"] == "/orders/{orderId}"
    lines = gw.create_resource(restApiId=api, parentId=item["id"], pathPart="lines")
    assert lines["path"] == "/orders/{orderId}/lines"
    line = gw.create_resource(restApiId=api, parentId=lines["id"], pathPart="{line_no}")
    assert line["path"] == "/orders/{orderId}/lines/{line_no}"
    # A literal sibling of a variable is fine; so is a greedy variable at the root.
    search = gw.create_resource(restApiId=api, parentId=orders["id"], pathPart="search")
    proxy = gw.create_resource(restApiId=api, parentId=root, pathPart="{proxy+}")
    assert proxy["path"] == "/{proxy+}"
    odd = gw.create_resource(restApiId=api, parentId=root, pathPart="v1.0_beta-x")
    assert odd["path"] == "/v1.0_beta-x"

    got = gw.get_resource(restApiId=api, resourceId=line["id"])
    assert status(got) == 200 and body(got) == body(line)
    paths = [r["path"] for r in gw.get_resources(restApiId=api)["items"]]
    assert sorted(paths) == sorted(["/", "/orders", "/orders/{orderId}", "/orders/{orderId}/lines",
                                    "/orders/{orderId}/lines/{line_no}", "/orders/search", "/{proxy+}",
                                    "/v1.0_beta-x"])

    # Conflicts: the same part again, or a second variable under one parent.
    conflict(gw.create_resource, restApiId=api, parentId=root, pathPart="orders")
    conflict(gw.create_resource, restApiId=api, parentId=orders["id"], pathPart="{id}")
    conflict(gw.create_resource, restApiId=api, parentId=root, pathPart="{other+}")
    conflict(gw.create_resource, restApiId=api, parentId=root, pathPart="{param}")
    # Bad path parts.
    for part in ["a/b", "{", "{}", "{a", "a}", "sp ace", "{a+}x", "{a-+b}", "ü", "{+}"]:
        bad_request(gw.create_resource, restApiId=api, parentId=root, pathPart=part)
    bad_request(gw.create_resource, restApiId=api, parentId=root, pathPart="")
    # Nothing goes below a greedy variable.
    bad_request(gw.create_resource, restApiId=api, parentId=proxy["id"], pathPart="below")
    # Unknown parent, resource, API.
    not_found(gw.create_resource, restApiId=api, parentId="nosuchres0", pathPart="x")
    not_found(gw.get_resource, restApiId=api, resourceId="nosuchres0")
    not_found(gw.create_resource, restApiId="nosuchapi0", parentId=root, pathPart="x")
    not_found(gw.get_resource, restApiId="nosuchapi0", resourceId=root)

    # The root cannot go; deleting a resource deletes what is below it.
    bad_request(gw.delete_resource, restApiId=api, resourceId=root)
    d = gw.delete_resource(restApiId=api, resourceId=item["id"])
    assert status(d) == 202
    for rid in (item["id"], lines["id"], line["id"]):
        not_found(gw.get_resource, restApiId=api, resourceId=rid)
    not_found(gw.delete_resource, restApiId=api, resourceId=item["id"])
    paths = sorted(r["path"] for r in gw.get_resources(restApiId=api)["items"])
    assert paths == ["/", "/orders", "/orders/search", "/v1.0_beta-x", "/{proxy+}"]
    # The freed name can be used again.
    again = gw.create_resource(restApiId=api, parentId=orders["id"], pathPart="{id}")
    assert again["path"] == "/orders/{id}"
    assert gw.get_resource(restApiId=api, resourceId=search["id"])["path"] == "/orders/search"
    gw.delete_rest_api(restApiId=api)


# ---------------------------------------------------------------- methods


def test_methods_put_get_update_delete(gw):
    api, root = new_api(gw)
    rid = gw.create_resource(restApiId=api, parentId=root, pathPart="{id}")["id"]
    val = gw.create_request_validator(restApiId=api, name="params", validateRequestParameters=True)["id"]
    az = gw.create_authorizer(restApiId=api, name="tok", type="TOKEN", authorizerUri=lambda_uri("auth"),
                              identitySource="method.request.header.Authorization")["id"]

    m = gw.put_method(restApiId=api, resourceId=rid, httpMethod="get", authorizationType="NONE",
                      apiKeyRequired=True, requestValidatorId=val, operationName="GetThing",
                      requestParameters={"method.request.header.x-tenant-id": True,
                                         "method.request.querystring.page": False,
                                         "method.request.path.id": True})
    assert status(m) == 201
    want = {"httpMethod": "GET", "authorizationType": "NONE", "apiKeyRequired": True,
            "requestValidatorId": val, "operationName": "GetThing",
            "requestParameters": {"method.request.header.x-tenant-id": True,
                                  "method.request.querystring.page": False,
                                  "method.request.path.id": True}}
    assert body(m) == want
    got = gw.get_method(restApiId=api, resourceId=rid, httpMethod="GET")
    assert status(got) == 200 and body(got) == want
    assert gw.get_resource(restApiId=api, resourceId=rid)["resourceMethods"]["GET"]["apiKeyRequired"] is True

    c = gw.put_method(restApiId=api, resourceId=rid, httpMethod="POST", authorizationType="CUSTOM",
                      authorizerId=az)
    assert (c["authorizationType"], c["authorizerId"], c["apiKeyRequired"]) == ("CUSTOM", az, False)
    assert set(gw.get_resource(restApiId=api, resourceId=rid)["resourceMethods"]) == {"GET", "POST"}

    # Bad input.
    bad_request(gw.put_method, restApiId=api, resourceId=rid, httpMethod="PUT", authorizationType="CUSTOM")
    bad_request(gw.put_method, restApiId=api, resourceId=rid, httpMethod="PUT", authorizationType="CUSTOM",
                authorizerId="nosuchauth")
    bad_request(gw.put_method, restApiId=api, resourceId=rid, httpMethod="PUT", authorizationType="NONE",
                requestValidatorId="nosuchval0")
    bad_request(gw.put_method, restApiId=api, resourceId=rid, httpMethod="PUT", authorizationType="MAGIC")
    bad_request(gw.put_method, restApiId=api, resourceId=rid, httpMethod="FETCH", authorizationType="NONE")
    bad_request(gw.put_method, restApiId=api, resourceId=rid, httpMethod="PUT", authorizationType="NONE",
                requestParameters={"method.request.cookie.x": True})
    not_found(gw.put_method, restApiId=api, resourceId="nosuchres0", httpMethod="PUT", authorizationType="NONE")
    not_found(gw.get_method, restApiId=api, resourceId=rid, httpMethod="PUT")

    up = gw.update_method(restApiId=api, resourceId=rid, httpMethod="GET", patchOperations=[
        {"op": "replace", "path": "/apiKeyRequired", "value": "false"},
        {"op": "add", "path": "/requestParameters/method.request.header.x-extra", "value": "true"},
        {"op": "remove", "path": "/requestParameters/method.request.querystring.page"},
        {"op": "replace", "path": "/authorizationType", "value": "CUSTOM"},
        {"op": "replace", "path": "/authorizerId", "value": az},
    ])
    assert status(up) == 200
    assert up["apiKeyRequired"] is False
    assert up["requestParameters"] == {"method.request.header.x-tenant-id": True,
                                       "method.request.path.id": True,
                                       "method.request.header.x-extra": True}
    assert (up["authorizationType"], up["authorizerId"]) == ("CUSTOM", az)
    assert body(gw.get_method(restApiId=api, resourceId=rid, httpMethod="GET")) == body(up)
    # An update must leave a valid method: a real authorizer, validator and type.
    for ops in (
        [{"op": "replace", "path": "/authorizerId", "value": "nosuchauth"}],
        [{"op": "replace", "path": "/requestValidatorId", "value": "nosuchval0"}],
        [{"op": "replace", "path": "/authorizationType", "value": "MAGIC"}],
        [{"op": "replace", "path": "/httpMethod", "value": "POST"}],
    ):
        bad_request(gw.update_method, restApiId=api, resourceId=rid, httpMethod="GET", patchOperations=ops)
    back = gw.update_method(restApiId=api, resourceId=rid, httpMethod="GET", patchOperations=[
        {"op": "replace", "path": "/authorizationType", "value": "NONE"},
        {"op": "remove", "path": "/authorizerId"},
    ])
    assert back["authorizationType"] == "NONE" and "authorizerId" not in back
    not_found(gw.update_method, restApiId=api, resourceId=rid, httpMethod="PATCH", patchOperations=[])

    d = gw.delete_method(restApiId=api, resourceId=rid, httpMethod="GET")
    assert status(d) == 204
    not_found(gw.get_method, restApiId=api, resourceId=rid, httpMethod="GET")
    not_found(gw.delete_method, restApiId=api, resourceId=rid, httpMethod="GET")
    assert set(gw.get_resource(restApiId=api, resourceId=rid)["resourceMethods"]) == {"POST"}
    gw.delete_method(restApiId=api, resourceId=rid, httpMethod="POST")
    assert "resourceMethods" not in gw.get_resource(restApiId=api, resourceId=rid)
    gw.delete_rest_api(restApiId=api)


# ---------------------------------------------------------------- integrations


TENANT_SOURCES = [
    "method.request.header.x-tenant-id",
    "context.authorizer.tenantId",
    "method.request.body.$.tenant",
    "context.domainPrefix",
    "stageVariables.x",
    "'literal'",
]


def test_integrations_lambda_uris_and_tenant_mappings(gw):
    api, root = new_api(gw)
    rid = gw.create_resource(restApiId=api, parentId=root, pathPart="things")["id"]
    gw.put_method(restApiId=api, resourceId=rid, httpMethod="POST", authorizationType="NONE")
    not_found(gw.get_integration, restApiId=api, resourceId=rid, httpMethod="POST")
    uri = lambda_uri("things")

    r = gw.put_integration(restApiId=api, resourceId=rid, httpMethod="POST", type="AWS_PROXY",
                           integrationHttpMethod="POST", uri=uri)
    assert status(r) == 201
    assert (r["type"], r["httpMethod"], r["uri"]) == ("AWS_PROXY", "POST", uri)
    assert r["timeoutInMillis"] == 29000 and r["passthroughBehavior"] == "WHEN_NO_MATCH"
    got = gw.get_integration(restApiId=api, resourceId=rid, httpMethod="POST")
    assert status(got) == 200 and body(got) == body(r)
    assert gw.get_method(restApiId=api, resourceId=rid, httpMethod="POST")["methodIntegration"]["uri"] == uri

    # Each supported source of the tenant id, mapped to X-Amz-Tenant-Id.
    for src in TENANT_SOURCES:
        params = {"integration.request.header.X-Amz-Tenant-Id": src}
        r = gw.put_integration(restApiId=api, resourceId=rid, httpMethod="POST", type="AWS_PROXY",
                               integrationHttpMethod="POST", uri=uri, requestParameters=params)
        assert r["requestParameters"] == params
        assert gw.get_integration(restApiId=api, resourceId=rid, httpMethod="POST")["requestParameters"] == params

    # AWS (non-proxy) with templates and a timeout.
    r = gw.put_integration(restApiId=api, resourceId=rid, httpMethod="POST", type="AWS",
                           integrationHttpMethod="POST", uri=uri, timeoutInMillis=5000,
                           requestTemplates={"application/json": '{"t": "$input.params(\'x\')"}'},
                           requestParameters={"integration.request.header.X-Amz-Tenant-Id": "'acme'"})
    assert (r["type"], r["timeoutInMillis"]) == ("AWS", 5000)
    assert r["requestTemplates"] == {"application/json": '{"t": "$input.params(\'x\')"}'}
    got = gw.get_integration(restApiId=api, resourceId=rid, httpMethod="POST")
    assert body(got) == body(r)

    # Refused: unsupported expressions, targets, URIs, types and timeouts. The stored one stays.
    for expr in ["method.request.nonsense.x", "context.identity.sourceIp", "method.request.body.",
                 "method.request.header.", "stageVariables.", "'unterminated", "$request.header.x"]:
        bad_request(gw.put_integration, restApiId=api, resourceId=rid, httpMethod="POST", type="AWS_PROXY",
                    integrationHttpMethod="POST", uri=uri,
                    requestParameters={"integration.request.header.X-Amz-Tenant-Id": expr})
    bad_request(gw.put_integration, restApiId=api, resourceId=rid, httpMethod="POST", type="AWS_PROXY",
                integrationHttpMethod="POST", uri=uri,
                requestParameters={"integration.response.header.X": "'a'"})
    for bad_uri in ["http://example.test/x", "arn:aws:apigateway:us-east-1:s3:path/bucket",
                    "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions//invocations"]:
        bad_request(gw.put_integration, restApiId=api, resourceId=rid, httpMethod="POST", type="AWS_PROXY",
                    integrationHttpMethod="POST", uri=bad_uri)
    bad_request(gw.put_integration, restApiId=api, resourceId=rid, httpMethod="POST", type="HTTP_PROXY",
                integrationHttpMethod="GET", uri="http://example.test/")
    bad_request(gw.put_integration, restApiId=api, resourceId=rid, httpMethod="POST", type="AWS_PROXY",
                integrationHttpMethod="POST", uri=uri, timeoutInMillis=10)
    assert gw.get_integration(restApiId=api, resourceId=rid, httpMethod="POST")["type"] == "AWS"
    # No method, no integration.
    not_found(gw.put_integration, restApiId=api, resourceId=rid, httpMethod="GET", type="AWS_PROXY",
              integrationHttpMethod="POST", uri=uri)

    d = gw.delete_integration(restApiId=api, resourceId=rid, httpMethod="POST")
    assert status(d) == 204
    not_found(gw.get_integration, restApiId=api, resourceId=rid, httpMethod="POST")
    not_found(gw.delete_integration, restApiId=api, resourceId=rid, httpMethod="POST")
    assert "methodIntegration" not in gw.get_method(restApiId=api, resourceId=rid, httpMethod="POST")
    gw.delete_rest_api(restApiId=api)


def test_method_and_integration_responses(gw):
    api, rid = deployable_api(gw)
    r = gw.put_method_response(restApiId=api, resourceId=rid, httpMethod="GET", statusCode="200",
                               responseParameters={"method.response.header.X-Req": False},
                               responseModels={"application/json": "Empty"})
    assert status(r) == 201
    assert body(r) == {"statusCode": "200", "responseParameters": {"method.response.header.X-Req": False},
                       "responseModels": {"application/json": "Empty"}}
    assert body(gw.get_method_response(restApiId=api, resourceId=rid, httpMethod="GET", statusCode="200")) \
        == body(r)
    r = gw.put_integration_response(restApiId=api, resourceId=rid, httpMethod="GET", statusCode="200",
                                    selectionPattern="", responseTemplates={"application/json": ""})
    assert status(r) == 201
    assert (r["statusCode"], r["responseTemplates"]) == ("200", {"application/json": ""})
    got = gw.get_integration_response(restApiId=api, resourceId=rid, httpMethod="GET", statusCode="200")
    assert body(got) == body(r)
    m = gw.get_method(restApiId=api, resourceId=rid, httpMethod="GET")
    assert set(m["methodResponses"]) == {"200"}
    assert set(m["methodIntegration"]["integrationResponses"]) == {"200"}
    not_found(gw.get_method_response, restApiId=api, resourceId=rid, httpMethod="GET", statusCode="404")
    not_found(gw.get_integration_response, restApiId=api, resourceId=rid, httpMethod="GET", statusCode="404")
    bad_request(gw.put_method_response, restApiId=api, resourceId=rid, httpMethod="GET", statusCode="20x")
    not_found(gw.put_method_response, restApiId=api, resourceId=rid, httpMethod="POST", statusCode="200")
    gw.delete_integration(restApiId=api, resourceId=rid, httpMethod="GET")
    not_found(gw.put_integration_response, restApiId=api, resourceId=rid, httpMethod="GET", statusCode="200")
    gw.delete_rest_api(restApiId=api)


# ---------------------------------------------------------------- authorizers and validators


def test_authorizers_token_request_jwt(gw):
    api, root = new_api(gw)
    tok = gw.create_authorizer(restApiId=api, name="tok", type="TOKEN", authorizerUri=lambda_uri("auth"),
                               identitySource="method.request.header.Authorization",
                               identityValidationExpression="^Bearer .+$", authorizerResultTtlInSeconds=60)
    assert status(tok) == 201
    assert (tok["type"], tok["authorizerUri"], tok["authorizerResultTtlInSeconds"]) == ("TOKEN", lambda_uri("auth"), 60)
    assert tok["identityValidationExpression"] == "^Bearer .+$"
    req = gw.create_authorizer(restApiId=api, name="req", type="REQUEST", authorizerUri=lambda_uri("auth"),
                               identitySource="method.request.header.x-tenant-id, method.request.querystring.t",
                               authorizerResultTtlInSeconds=0)
    assert (req["type"], req["authorizerResultTtlInSeconds"]) == ("REQUEST", 0)
    jwt = gw.create_authorizer(restApiId=api, name="jwt", type="JWT",
                               providerARNs=["issuer=https://issuer.test", "secret=s3cret", "tenantClaim=tenantId"])
    assert (jwt["type"], jwt["identitySource"]) == ("JWT", "method.request.header.Authorization")
    assert jwt["providerARNs"] == ["issuer=https://issuer.test", "secret=s3cret", "tenantClaim=tenantId"]
    assert jwt["authorizerResultTtlInSeconds"] == 300

    got = gw.get_authorizer(restApiId=api, authorizerId=jwt["id"])
    assert status(got) == 200 and body(got) == body(jwt)
    listed = gw.get_authorizers(restApiId=api)["items"]
    assert [a["id"] for a in listed] == [tok["id"], req["id"], jwt["id"]]

    # Bad authorizers.
    bad_request(gw.create_authorizer, restApiId=api, name="x", type="TOKEN", authorizerUri="http://auth.test/")
    bad_request(gw.create_authorizer, restApiId=api, name="x", type="TOKEN")
    bad_request(gw.create_authorizer, restApiId=api, name="x", type="TOKEN", authorizerUri=lambda_uri("a"),
                authorizerResultTtlInSeconds=3601)
    bad_request(gw.create_authorizer, restApiId=api, name="x", type="TOKEN", authorizerUri=lambda_uri("a"),
                identitySource="header.Authorization")
    bad_request(gw.create_authorizer, restApiId=api, name="x", type="REQUEST", authorizerUri=lambda_uri("a"),
                identitySource="method.request.header.a, nonsense")
    bad_request(gw.create_authorizer, restApiId=api, name="x", type="JWT", providerARNs=["issuer"])
    bad_request(gw.create_authorizer, restApiId=api, name="x", type="JWT", providerARNs=["colour=blue"])
    bad_request(gw.create_authorizer, restApiId=api, name="x", type="MAGIC", authorizerUri=lambda_uri("a"))
    not_found(gw.create_authorizer, restApiId="nosuchapi0", name="x", type="TOKEN", authorizerUri=lambda_uri("a"))
    assert len(gw.get_authorizers(restApiId=api)["items"]) == 3

    up = gw.update_authorizer(restApiId=api, authorizerId=tok["id"], patchOperations=[
        {"op": "replace", "path": "/name", "value": "token2"},
        {"op": "replace", "path": "/authorizerResultTtlInSeconds", "value": "0"},
        {"op": "replace", "path": "/identitySource", "value": "method.request.header.X-Token"},
    ])
    assert status(up) == 200
    assert (up["name"], up["authorizerResultTtlInSeconds"], up["identitySource"]) == \
        ("token2", 0, "method.request.header.X-Token")
    assert body(gw.get_authorizer(restApiId=api, authorizerId=tok["id"])) == body(up)
    # providerARNs is a list: add and remove members.
    up = gw.update_authorizer(restApiId=api, authorizerId=jwt["id"], patchOperations=[
        {"op": "add", "path": "/providerARNs", "value": "audience=orders"},
        {"op": "remove", "path": "/providerARNs", "value": "tenantClaim=tenantId"},
    ])
    assert up["providerARNs"] == ["issuer=https://issuer.test", "secret=s3cret", "audience=orders"]
    assert gw.get_authorizer(restApiId=api, authorizerId=jwt["id"])["providerARNs"] == up["providerARNs"]
    # An update must leave a working authorizer.
    for a, ops in (
        (jwt["id"], [{"op": "add", "path": "/providerARNs", "value": "colour=blue"}]),
        (tok["id"], [{"op": "replace", "path": "/authorizerUri", "value": "http://auth.test/"}]),
        (tok["id"], [{"op": "replace", "path": "/identitySource", "value": "nonsense"}]),
        (tok["id"], [{"op": "replace", "path": "/authorizerResultTtlInSeconds", "value": "7200"}]),
        (tok["id"], [{"op": "replace", "path": "/type", "value": "REQUEST"}]),
    ):
        bad_request(gw.update_authorizer, restApiId=api, authorizerId=a, patchOperations=ops)
    assert gw.get_authorizer(restApiId=api, authorizerId=jwt["id"])["providerARNs"] == up["providerARNs"]
    assert gw.get_authorizer(restApiId=api, authorizerId=tok["id"])["authorizerResultTtlInSeconds"] == 0

    # An authorizer a method uses cannot be deleted.
    rid = gw.create_resource(restApiId=api, parentId=root, pathPart="secure")["id"]
    gw.put_method(restApiId=api, resourceId=rid, httpMethod="GET", authorizationType="CUSTOM",
                  authorizerId=req["id"])
    msg = conflict(gw.delete_authorizer, restApiId=api, authorizerId=req["id"])
    assert "GET" in msg and "/secure" in msg
    gw.delete_method(restApiId=api, resourceId=rid, httpMethod="GET")

    for a in (tok, req, jwt):
        d = gw.delete_authorizer(restApiId=api, authorizerId=a["id"])
        assert status(d) == 202
        not_found(gw.get_authorizer, restApiId=api, authorizerId=a["id"])
    not_found(gw.delete_authorizer, restApiId=api, authorizerId=tok["id"])
    not_found(gw.update_authorizer, restApiId=api, authorizerId=tok["id"], patchOperations=[])
    assert gw.get_authorizers(restApiId=api)["items"] == []
    gw.delete_rest_api(restApiId=api)


def test_request_validators(gw):
    api, _ = new_api(gw)
    v = gw.create_request_validator(restApiId=api, name="both", validateRequestBody=True,
                                    validateRequestParameters=True)
    assert status(v) == 201
    assert body(v) == {"id": v["id"], "name": "both", "validateRequestBody": True, "validateRequestParameters": True}
    p = gw.create_request_validator(restApiId=api, name="params", validateRequestParameters=True)
    assert (p["validateRequestBody"], p["validateRequestParameters"]) == (False, True)
    assert body(gw.get_request_validator(restApiId=api, requestValidatorId=v["id"])) == body(v)
    assert [x["id"] for x in gw.get_request_validators(restApiId=api)["items"]] == [v["id"], p["id"]]
    d = gw.delete_request_validator(restApiId=api, requestValidatorId=v["id"])
    assert status(d) == 202
    not_found(gw.get_request_validator, restApiId=api, requestValidatorId=v["id"])
    not_found(gw.delete_request_validator, restApiId=api, requestValidatorId=v["id"])
    assert [x["id"] for x in gw.get_request_validators(restApiId=api)["items"]] == [p["id"]]
    not_found(gw.get_request_validators, restApiId="nosuchapi0")
    gw.delete_rest_api(restApiId=api)


# ---------------------------------------------------------------- deployments and stages


def test_deployments(gw):
    api, root = new_api(gw)
    msg = bad_request(gw.create_deployment, restApiId=api, stageName="prod")
    assert "doesn't contain any methods" in msg
    rid = gw.create_resource(restApiId=api, parentId=root, pathPart="x")["id"]
    gw.put_method(restApiId=api, resourceId=rid, httpMethod="GET", authorizationType="NONE", apiKeyRequired=True)
    bad_request(gw.create_deployment, restApiId=api, stageName="prod")  # no integration yet
    gw.put_integration(restApiId=api, resourceId=rid, httpMethod="GET", type="AWS_PROXY",
                       integrationHttpMethod="POST", uri=lambda_uri("x"))
    # A bad stage name or variable refuses the whole deployment: nothing is left behind.
    bad_request(gw.create_deployment, restApiId=api, stageName="bad stage!")
    bad_request(gw.create_deployment, restApiId=api, stageName="prod", variables={"x": "no\"quotes"})
    assert gw.get_deployments(restApiId=api)["items"] == []
    not_found(gw.get_stage, restApiId=api, stageName="prod")

    d1 = gw.create_deployment(restApiId=api, stageName="prod", description="first",
                              stageDescription="production", variables={"x": "1", "fn": "items"})
    assert status(d1) == 201
    assert d1["description"] == "first" and isinstance(d1["createdDate"], datetime.datetime)
    assert d1["apiSummary"] == {"/x": {"GET": {"authorizationType": "NONE", "apiKeyRequired": True}}}
    st = gw.get_stage(restApiId=api, stageName="prod")
    assert (st["deploymentId"], st["variables"], st["description"]) == \
        (d1["id"], {"x": "1", "fn": "items"}, "production")
    got = gw.get_deployment(restApiId=api, deploymentId=d1["id"])
    assert status(got) == 200 and body(got) == body(d1)
    assert [d["id"] for d in gw.get_deployments(restApiId=api)["items"]] == [d1["id"]]

    # Deploying again to the same stage moves it (and replaces its variables).
    d2 = gw.create_deployment(restApiId=api, stageName="prod", variables={"x": "2"})
    st = gw.get_stage(restApiId=api, stageName="prod")
    assert (st["deploymentId"], st["variables"]) == (d2["id"], {"x": "2"})
    # A deployment without a stage.
    d3 = gw.create_deployment(restApiId=api)
    assert [d["id"] for d in gw.get_deployments(restApiId=api)["items"]] == [d1["id"], d2["id"], d3["id"]]

    # Refused while a stage uses it.
    msg = bad_request(gw.delete_deployment, restApiId=api, deploymentId=d2["id"])
    assert "stages" in msg.lower()
    r = gw.delete_deployment(restApiId=api, deploymentId=d1["id"])
    assert status(r) == 202
    not_found(gw.get_deployment, restApiId=api, deploymentId=d1["id"])
    not_found(gw.delete_deployment, restApiId=api, deploymentId=d1["id"])
    gw.update_stage(restApiId=api, stageName="prod",
                    patchOperations=[{"op": "replace", "path": "/deploymentId", "value": d3["id"]}])
    gw.delete_deployment(restApiId=api, deploymentId=d2["id"])
    assert [d["id"] for d in gw.get_deployments(restApiId=api)["items"]] == [d3["id"]]
    not_found(gw.get_deployments, restApiId="nosuchapi0")
    gw.delete_rest_api(restApiId=api)


def test_stages(gw):
    api, _ = deployable_api(gw)
    dep = gw.create_deployment(restApiId=api)["id"]
    s = gw.create_stage(restApiId=api, stageName="dev", deploymentId=dep, description="development",
                        variables={"x": "1", "y": "two"}, tags={"env": "dev"})
    assert status(s) == 201
    assert (s["stageName"], s["deploymentId"], s["description"]) == ("dev", dep, "development")
    assert s["variables"] == {"x": "1", "y": "two"} and s["tags"] == {"env": "dev"}
    assert isinstance(s["createdDate"], datetime.datetime)
    got = gw.get_stage(restApiId=api, stageName="dev")
    assert status(got) == 200 and body(got) == body(s)
    gw.create_stage(restApiId=api, stageName="test", deploymentId=dep)
    assert [x["stageName"] for x in gw.get_stages(restApiId=api)["item"]] == ["dev", "test"]

    conflict(gw.create_stage, restApiId=api, stageName="dev", deploymentId=dep)
    bad_request(gw.create_stage, restApiId=api, stageName="has space", deploymentId=dep)
    bad_request(gw.create_stage, restApiId=api, stageName="v", deploymentId=dep, variables={"a-b": "x"})
    not_found(gw.create_stage, restApiId=api, stageName="nodep", deploymentId="nosuchdep0")

    up = gw.update_stage(restApiId=api, stageName="dev", patchOperations=[
        {"op": "replace", "path": "/variables/x", "value": "42"},
        {"op": "remove", "path": "/variables/y"},
        {"op": "add", "path": "/variables/z", "value": "https://example.test/a?b=c"},
        {"op": "replace", "path": "/description", "value": "changed"},
    ])
    assert status(up) == 200
    assert up["variables"] == {"x": "42", "z": "https://example.test/a?b=c"}
    assert up["description"] == "changed"
    assert body(gw.get_stage(restApiId=api, stageName="dev")) == body(up)
    bad_request(gw.update_stage, restApiId=api, stageName="dev",
                patchOperations=[{"op": "replace", "path": "/variables/x", "value": "<script>"}])
    bad_request(gw.update_stage, restApiId=api, stageName="dev",
                patchOperations=[{"op": "replace", "path": "/stageName", "value": "other"}])
    assert gw.get_stage(restApiId=api, stageName="dev")["variables"]["x"] == "42"

    r = gw.flush_stage_authorizers_cache(restApiId=api, stageName="dev")
    assert status(r) == 202
    not_found(gw.flush_stage_authorizers_cache, restApiId=api, stageName="nosuchstage")

    d = gw.delete_stage(restApiId=api, stageName="dev")
    assert status(d) == 202
    not_found(gw.get_stage, restApiId=api, stageName="dev")
    not_found(gw.delete_stage, restApiId=api, stageName="dev")
    not_found(gw.update_stage, restApiId=api, stageName="dev", patchOperations=[])
    assert [x["stageName"] for x in gw.get_stages(restApiId=api)["item"]] == ["test"]
    gw.delete_rest_api(restApiId=api)


# ---------------------------------------------------------------- usage plans, keys, usage


def test_usage_plans(gw):
    api, _ = deployable_api(gw)
    gw.create_deployment(restApiId=api, stageName="prod")
    gw.create_deployment(restApiId=api, stageName="beta")
    name = unique("plan")
    p = gw.create_usage_plan(name=name, description="gold tier",
                             throttle={"rateLimit": 10.5, "burstLimit": 20},
                             quota={"limit": 1000, "period": "DAY", "offset": 0},
                             apiStages=[{"apiId": api, "stage": "prod"}])
    assert status(p) == 201
    pid = p["id"]
    assert (p["name"], p["description"]) == (name, "gold tier")
    assert p["throttle"] == {"rateLimit": 10.5, "burstLimit": 20}
    assert p["quota"] == {"limit": 1000, "period": "DAY", "offset": 0}
    assert p["apiStages"] == [{"apiId": api, "stage": "prod"}]
    got = gw.get_usage_plan(usagePlanId=pid)
    assert status(got) == 200 and body(got) == body(p)
    assert pid in {x["id"] for x in gw.get_usage_plans()["items"]}

    bad_request(gw.create_usage_plan, name=unique("plan"), apiStages=[{"apiId": api, "stage": "nosuchstage"}])
    bad_request(gw.create_usage_plan, name=unique("plan"), quota={"limit": 5, "period": "YEAR"})
    bad_request(gw.create_usage_plan, name=unique("plan"), throttle={"rateLimit": -1.0, "burstLimit": 1})

    up = gw.update_usage_plan(usagePlanId=pid, patchOperations=[
        {"op": "replace", "path": "/name", "value": name + "-2"},
        {"op": "replace", "path": "/throttle/rateLimit", "value": "5"},
        {"op": "replace", "path": "/throttle/burstLimit", "value": "7"},
        {"op": "replace", "path": "/quota/limit", "value": "50"},
        {"op": "replace", "path": "/quota/period", "value": "WEEK"},
        {"op": "add", "path": "/apiStages", "value": f"{api}:beta"},
        {"op": "replace", "path": f"/apiStages/{api}:prod/throttle/~1items/GET/rateLimit", "value": "1"},
    ])
    assert status(up) == 200
    assert up["name"] == name + "-2"
    assert up["throttle"] == {"rateLimit": 5.0, "burstLimit": 7}
    assert up["quota"] == {"limit": 50, "period": "WEEK", "offset": 0}
    stages = {(s["apiId"], s["stage"]): s for s in up["apiStages"]}
    assert set(stages) == {(api, "prod"), (api, "beta")}
    assert stages[(api, "prod")]["throttle"] == {"/items/GET": {"rateLimit": 1.0}}
    assert body(gw.get_usage_plan(usagePlanId=pid)) == body(up)
    up = gw.update_usage_plan(usagePlanId=pid, patchOperations=[
        {"op": "remove", "path": "/apiStages", "value": f"{api}:beta"}])
    assert [(s["apiId"], s["stage"]) for s in up["apiStages"]] == [(api, "prod")]
    bad_request(gw.update_usage_plan, usagePlanId=pid, patchOperations=[
        {"op": "add", "path": "/apiStages", "value": f"{api}:nosuchstage"}])
    bad_request(gw.update_usage_plan, usagePlanId=pid, patchOperations=[
        {"op": "replace", "path": "/quota/period", "value": "YEAR"}])
    bad_request(gw.update_usage_plan, usagePlanId=pid, patchOperations=[
        {"op": "replace", "path": "/id", "value": "x"}])
    assert gw.get_usage_plan(usagePlanId=pid)["quota"]["period"] == "WEEK"

    d = gw.delete_usage_plan(usagePlanId=pid)
    assert status(d) == 202
    not_found(gw.get_usage_plan, usagePlanId=pid)
    not_found(gw.delete_usage_plan, usagePlanId=pid)
    not_found(gw.update_usage_plan, usagePlanId=pid, patchOperations=[])
    assert pid not in {x["id"] for x in gw.get_usage_plans()["items"]}
    gw.delete_rest_api(restApiId=api)


def test_api_keys(gw):
    name = unique("key")
    gen = gw.create_api_key(name=name, description="generated", enabled=True, customerId="acme",
                            tags={"t": "1"})
    assert status(gen) == 201
    kid = gen["id"]
    assert len(gen["value"]) >= 20 and gen["value"].isalnum()
    assert (gen["name"], gen["enabled"], gen["customerId"], gen["description"]) == (name, True, "acme", "generated")
    assert gen["stageKeys"] == [] and isinstance(gen["createdDate"], datetime.datetime)
    value = "v" * 10 + unique("given")
    given = gw.create_api_key(name=name + "-given", value=value)
    assert given["value"] == value and given["enabled"] is False

    got = gw.get_api_key(apiKey=kid)
    assert status(got) == 200 and "value" not in got and got["name"] == name
    assert gw.get_api_key(apiKey=kid, includeValue=True)["value"] == gen["value"]
    assert gw.get_api_key(apiKey=given["id"], includeValue=True)["value"] == value
    listed = {k["id"]: k for k in gw.get_api_keys()["items"]}
    assert {kid, given["id"]} <= set(listed) and "value" not in listed[kid]
    listed = {k["id"]: k for k in gw.get_api_keys(includeValues=True)["items"]}
    assert listed[kid]["value"] == gen["value"] and listed[given["id"]]["value"] == value
    assert {k["id"] for k in gw.get_api_keys(nameQuery=name)["items"]} == {kid, given["id"]}
    assert [k["id"] for k in gw.get_api_keys(nameQuery=name + "-g")["items"]] == [given["id"]]

    conflict(gw.create_api_key, name=unique("key"), value=value)
    bad_request(gw.create_api_key, name=unique("key"), value="short")

    up = gw.update_api_key(apiKey=kid, patchOperations=[
        {"op": "replace", "path": "/enabled", "value": "false"},
        {"op": "replace", "path": "/name", "value": name + "-x"},
        {"op": "replace", "path": "/description", "value": "changed"},
    ])
    assert status(up) == 200
    assert (up["enabled"], up["name"], up["description"]) == (False, name + "-x", "changed")
    assert "value" not in up
    got = gw.get_api_key(apiKey=kid, includeValue=True)
    assert (got["enabled"], got["name"], got["value"]) == (False, name + "-x", gen["value"])
    bad_request(gw.update_api_key, apiKey=kid, patchOperations=[{"op": "replace", "path": "/value", "value": "x" * 30}])

    for k in (kid, given["id"]):
        d = gw.delete_api_key(apiKey=k)
        assert status(d) == 202
        not_found(gw.get_api_key, apiKey=k)
    not_found(gw.delete_api_key, apiKey=kid)
    not_found(gw.update_api_key, apiKey=kid, patchOperations=[])
    assert not {kid, given["id"]} & {k["id"] for k in gw.get_api_keys()["items"]}


def test_usage_plan_keys_and_usage(gw):
    api, _ = deployable_api(gw)
    gw.create_deployment(restApiId=api, stageName="prod")
    gw.create_deployment(restApiId=api, stageName="beta")
    plan = gw.create_usage_plan(name=unique("plan"), quota={"limit": 100, "period": "DAY"},
                                apiStages=[{"apiId": api, "stage": "prod"}])["id"]
    other = gw.create_usage_plan(name=unique("plan"), apiStages=[{"apiId": api, "stage": "prod"}])["id"]
    beta = gw.create_usage_plan(name=unique("plan"), apiStages=[{"apiId": api, "stage": "beta"}])["id"]
    key = gw.create_api_key(name=unique("key"), enabled=True)
    kid = key["id"]

    pk = gw.create_usage_plan_key(usagePlanId=plan, keyId=kid, keyType="API_KEY")
    assert status(pk) == 201
    assert body(pk) == {"id": kid, "type": "API_KEY", "value": key["value"], "name": key["name"]}
    got = gw.get_usage_plan_key(usagePlanId=plan, keyId=kid)
    assert status(got) == 200 and body(got) == body(pk)
    assert [body(k) for k in gw.get_usage_plan_keys(usagePlanId=plan)["items"]] == [body(pk)]
    assert [p["id"] for p in gw.get_usage_plans(keyId=kid)["items"]] == [plan]

    conflict(gw.create_usage_plan_key, usagePlanId=plan, keyId=kid, keyType="API_KEY")
    # One key, two plans on the same stage: which plan's limits would apply?
    conflict(gw.create_usage_plan_key, usagePlanId=other, keyId=kid, keyType="API_KEY")
    assert gw.get_usage_plan_keys(usagePlanId=other)["items"] == []
    # Another stage is fine.
    gw.create_usage_plan_key(usagePlanId=beta, keyId=kid, keyType="API_KEY")
    assert sorted(p["id"] for p in gw.get_usage_plans(keyId=kid)["items"]) == sorted([plan, beta])
    not_found(gw.create_usage_plan_key, usagePlanId=plan, keyId="nosuchkey0", keyType="API_KEY")
    bad_request(gw.create_usage_plan_key, usagePlanId=plan, keyId=kid, keyType="COOKIE")
    not_found(gw.create_usage_plan_key, usagePlanId="nosuchplan", keyId=kid, keyType="API_KEY")
    not_found(gw.get_usage_plan_keys, usagePlanId="nosuchplan")

    # Usage: one entry per key and day, [used, remaining], zero so far.
    u = gw.get_usage(usagePlanId=plan, startDate="2026-01-30", endDate="2026-02-01")
    assert status(u) == 200
    assert (u["usagePlanId"], u["startDate"], u["endDate"]) == (plan, "2026-01-30", "2026-02-01")
    assert u["items"] == {kid: [[0, 100], [0, 100], [0, 100]]}
    u = gw.get_usage(usagePlanId=plan, keyId=kid, startDate="2026-03-01", endDate="2026-03-01")
    assert u["items"] == {kid: [[0, 100]]}
    assert gw.get_usage(usagePlanId=other, startDate="2026-03-01", endDate="2026-03-02")["items"] == {}
    bad_request(gw.get_usage, usagePlanId=plan, startDate="2026-3-1x", endDate="2026-03-02")
    bad_request(gw.get_usage, usagePlanId=plan, startDate="2026-03-02", endDate="2026-03-01")
    bad_request(gw.get_usage, usagePlanId=plan, startDate="2026-01-01", endDate="2026-12-31")
    not_found(gw.get_usage, usagePlanId="nosuchplan", startDate="2026-03-01", endDate="2026-03-01")

    d = gw.delete_usage_plan_key(usagePlanId=plan, keyId=kid)
    assert status(d) == 202
    not_found(gw.get_usage_plan_key, usagePlanId=plan, keyId=kid)
    not_found(gw.delete_usage_plan_key, usagePlanId=plan, keyId=kid)
    assert gw.get_usage_plan_keys(usagePlanId=plan)["items"] == []
    assert [p["id"] for p in gw.get_usage_plans(keyId=kid)["items"]] == [beta]
    # Now the other plan on prod may take it.
    gw.create_usage_plan_key(usagePlanId=other, keyId=kid, keyType="API_KEY")
    # Deleting the key takes it out of every plan.
    gw.delete_api_key(apiKey=kid)
    assert gw.get_usage_plan_keys(usagePlanId=other)["items"] == []
    assert gw.get_usage_plan_keys(usagePlanId=beta)["items"] == []
    for p in (plan, other, beta):
        gw.delete_usage_plan(usagePlanId=p)
    gw.delete_rest_api(restApiId=api)


# ---------------------------------------------------------------- custom domains


def test_domain_names_and_base_path_mappings(gw):
    api, _ = deployable_api(gw)
    gw.create_deployment(restApiId=api, stageName="prod")
    zone = unique("z") + ".example.test"
    plain = "api." + zone
    wild = "*.api." + zone

    d = gw.create_domain_name(domainName=plain, certificateName="cert")
    assert status(d) == 201
    assert (d["domainName"], d["domainNameStatus"], d["certificateName"]) == (plain, "AVAILABLE", "cert")
    w = gw.create_domain_name(domainName=wild, endpointConfiguration={"types": ["REGIONAL"]})
    assert w["domainName"] == wild and w["endpointConfiguration"] == {"types": ["REGIONAL"]}
    assert body(gw.get_domain_name(domainName=wild)) == body(w)
    got = gw.get_domain_name(domainName=plain)
    assert status(got) == 200 and body(got) == body(d)
    names = {x["domainName"] for x in gw.get_domain_names()["items"]}
    assert {plain, wild} <= names
    conflict(gw.create_domain_name, domainName=plain)
    conflict(gw.create_domain_name, domainName=plain.upper())
    for bad in ("bad_name.example.test", "a..b", "*", "x.*.example.test", ""):
        bad_request(gw.create_domain_name, domainName=bad)
    not_found(gw.get_domain_name, domainName="none." + zone)

    m = gw.create_base_path_mapping(domainName=wild, restApiId=api, stage="prod")
    assert status(m) == 201
    assert body(m) == {"basePath": "(none)", "restApiId": api, "stage": "prod"}
    v1 = gw.create_base_path_mapping(domainName=wild, restApiId=api, basePath="v1")
    assert body(v1) == {"basePath": "v1", "restApiId": api}
    got = gw.get_base_path_mapping(domainName=wild, basePath="(none)")
    assert status(got) == 200 and body(got) == body(m)
    assert body(gw.get_base_path_mapping(domainName=wild, basePath="v1")) == body(v1)
    assert [x["basePath"] for x in gw.get_base_path_mappings(domainName=wild)["items"]] == ["(none)", "v1"]
    assert gw.get_base_path_mappings(domainName=plain)["items"] == []
    conflict(gw.create_base_path_mapping, domainName=wild, restApiId=api, basePath="v1")
    conflict(gw.create_base_path_mapping, domainName=wild, restApiId=api, stage="prod")
    bad_request(gw.create_base_path_mapping, domainName=plain, restApiId=api, stage="nosuchstage")
    bad_request(gw.create_base_path_mapping, domainName=plain, restApiId="nosuchapi0")
    bad_request(gw.create_base_path_mapping, domainName=plain, restApiId=api, basePath="v 2")
    not_found(gw.create_base_path_mapping, domainName="none." + zone, restApiId=api)
    not_found(gw.get_base_path_mapping, domainName=wild, basePath="v2")

    r = gw.delete_base_path_mapping(domainName=wild, basePath="v1")
    assert status(r) == 202
    not_found(gw.get_base_path_mapping, domainName=wild, basePath="v1")
    not_found(gw.delete_base_path_mapping, domainName=wild, basePath="v1")
    assert [x["basePath"] for x in gw.get_base_path_mappings(domainName=wild)["items"]] == ["(none)"]
    gw.delete_base_path_mapping(domainName=wild, basePath="(none)")
    assert gw.get_base_path_mappings(domainName=wild)["items"] == []

    gw.create_base_path_mapping(domainName=plain, restApiId=api, basePath="orders", stage="prod")
    for name in (plain, wild):
        r = gw.delete_domain_name(domainName=name)
        assert status(r) == 202
        not_found(gw.get_domain_name, domainName=name)
        not_found(gw.delete_domain_name, domainName=name)
        not_found(gw.get_base_path_mappings, domainName=name)
    # The mappings went with the domain.
    gw.create_domain_name(domainName=plain)
    assert gw.get_base_path_mappings(domainName=plain)["items"] == []
    gw.delete_domain_name(domainName=plain)
    assert not {plain, wild} & {x["domainName"] for x in gw.get_domain_names()["items"]}
    gw.delete_rest_api(restApiId=api)


# ---------------------------------------------------------------- persistence


def test_everything_survives_a_restart(fresh_server):
    s = fresh_server.start()
    gw = apigw(s)
    api, root = new_api(gw, apiKeySource="AUTHORIZER")
    rid = gw.create_resource(restApiId=api, parentId=root, pathPart="{tenant}")["id"]
    az = gw.create_authorizer(restApiId=api, name="jwt", type="JWT",
                              providerARNs=["issuer=https://issuer.test", "secret=s3cret",
                                            "tenantClaim=tenantId"])["id"]
    val = gw.create_request_validator(restApiId=api, name="v", validateRequestParameters=True)["id"]
    gw.put_method(restApiId=api, resourceId=rid, httpMethod="POST", authorizationType="CUSTOM",
                  authorizerId=az, apiKeyRequired=True, requestValidatorId=val,
                  requestParameters={"method.request.header.x-tenant-id": True})
    gw.put_integration(restApiId=api, resourceId=rid, httpMethod="POST", type="AWS_PROXY",
                       integrationHttpMethod="POST", uri=lambda_uri("orders"),
                       requestParameters={"integration.request.header.X-Amz-Tenant-Id":
                                          "context.authorizer.tenantId"})
    dep = gw.create_deployment(restApiId=api, stageName="prod", variables={"x": "1"})["id"]
    plan = gw.create_usage_plan(name="gold", throttle={"rateLimit": 2.0, "burstLimit": 4},
                                quota={"limit": 10, "period": "MONTH"},
                                apiStages=[{"apiId": api, "stage": "prod"}])["id"]
    key = gw.create_api_key(name="blue", enabled=True)["id"]
    gw.create_usage_plan_key(usagePlanId=plan, keyId=key, keyType="API_KEY")
    gw.create_domain_name(domainName="*.api.example.test")
    gw.create_base_path_mapping(domainName="*.api.example.test", restApiId=api, stage="prod")

    def snapshot(gw):
        return {
            "api": body(gw.get_rest_api(restApiId=api)),
            "resources": gw.get_resources(restApiId=api)["items"],
            "method": body(gw.get_method(restApiId=api, resourceId=rid, httpMethod="POST")),
            "integration": body(gw.get_integration(restApiId=api, resourceId=rid, httpMethod="POST")),
            "authorizers": gw.get_authorizers(restApiId=api)["items"],
            "validators": gw.get_request_validators(restApiId=api)["items"],
            "deployments": gw.get_deployments(restApiId=api)["items"],
            "stage": body(gw.get_stage(restApiId=api, stageName="prod")),
            "plan": body(gw.get_usage_plan(usagePlanId=plan)),
            "plan_keys": gw.get_usage_plan_keys(usagePlanId=plan)["items"],
            "key": body(gw.get_api_key(apiKey=key, includeValue=True)),
            "domain": body(gw.get_domain_name(domainName="*.api.example.test")),
            "mappings": gw.get_base_path_mappings(domainName="*.api.example.test")["items"],
        }

    before = snapshot(gw)
    assert before["stage"]["deploymentId"] == dep
    assert before["method"]["methodIntegration"]["uri"] == lambda_uri("orders")
    assert s.stop(signal.SIGTERM) == 0

    s2 = Server(s.data_dir).start()
    try:
        gw2 = apigw(s2)
        after = snapshot(gw2)
        assert after == before
        assert after["api"]["apiKeySource"] == "AUTHORIZER"
        assert after["authorizers"][0]["providerARNs"] == ["issuer=https://issuer.test", "secret=s3cret",
                                                           "tenantClaim=tenantId"]
        assert after["stage"]["variables"] == {"x": "1"}
        assert api in {a["id"] for a in gw2.get_rest_apis()["items"]}
        # Still consistent, and still writable: the stage keeps its deployment, ids stay unique.
        bad_request(gw2.delete_deployment, restApiId=api, deploymentId=dep)
        conflict(gw2.create_usage_plan_key, usagePlanId=plan, keyId=key, keyType="API_KEY")
        gw2.delete_rest_api(restApiId=api)
        not_found(gw2.get_rest_api, restApiId=api)
    finally:
        s2.stop(signal.SIGKILL)  # the graceful stop was tested above
