"""A TOKEN authorizer: a bearer token names the tenant (a real one would verify a signed token).
It allows every method of the stage and passes the tenant on as context.authorizer.tenantId."""

TOKENS = {"Bearer blue-secret": "blue", "Bearer green-secret": "green"}


def lambda_handler(event, context):
    tenant = TOKENS.get(event.get("authorizationToken", ""))
    if tenant is None:
        raise Exception("Unauthorized")  # API Gateway answers 401
    # arn:aws:execute-api:<region>:<account>:<api>/<stage>/<METHOD>/<path>
    head, rest = event["methodArn"].rsplit(":", 1)
    api, stage = rest.split("/")[:2]
    return {
        "principalId": tenant,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{head}:{api}/{stage}/*"}],
        },
        "context": {"tenantId": tenant},
    }
