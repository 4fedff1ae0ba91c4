//! Which AWS service a request on the one `--listen` endpoint is for, routed as LocalStack
//! does: by the SigV4 credential scope's service name first (`Authorization: AWS4-HMAC-SHA256
//! Credential=AKID/20260101/us-east-1/<service>/aws4_request`, or the presigned
//! `X-Amz-Credential` query parameter), then by `X-Amz-Target`, then by path.

use axum::http::{HeaderMap, Uri};

/// The services this endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Lambda,
    Logs,
    ApiGateway,
    Sts,
    Iam,
    S3,
}

impl Service {
    fn from_scope(name: &str) -> Option<Service> {
        match name {
            "lambda" => Some(Service::Lambda),
            "logs" => Some(Service::Logs),
            "apigateway" => Some(Service::ApiGateway),
            "sts" => Some(Service::Sts),
            "iam" => Some(Service::Iam),
            "s3" => Some(Service::S3),
            _ => None,
        }
    }
}

/// The service of a request. `None`: nothing names one; route by path.
pub fn of(headers: &HeaderMap, uri: &Uri) -> Option<Service> {
    if let Some(s) = scope_service(headers, uri) {
        return Service::from_scope(s);
    }
    // Signature Version 2 (no scope) is S3's alone: `Authorization: AWS AKID:sig`, or a
    // presigned `?AWSAccessKeyId=...&Signature=...` (boto3's default for presigned S3 URLs).
    let v2_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("AWS ") && a.contains(':'));
    let v2_query = uri.query().is_some_and(|q| {
        q.split('&').any(|kv| kv.starts_with("AWSAccessKeyId=")) && q.split('&').any(|kv| kv.starts_with("Signature="))
    });
    if v2_header || v2_query {
        return Some(Service::S3);
    }
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok())?;
    if target.starts_with(crate::cwlogs::TARGET_PREFIX) {
        return Some(Service::Logs);
    }
    None
}

/// The service name in a SigV4 credential scope, from the header or the presigned query.
pub fn scope_service<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let cred = auth.strip_prefix("AWS4-HMAC-SHA256")?.split("Credential=").nth(1)?;
        let cred = cred.split([',', ' ']).next()?;
        return cred.split('/').nth(3);
    }
    let query = uri.query()?;
    let cred = query.split('&').find_map(|kv| kv.strip_prefix("X-Amz-Credential="))?;
    // Percent-encoded: `AKID%2F20260101%2Fus-east-1%2Fs3%2Faws4_request`.
    cred.split("%2F").nth(3).or_else(|| cred.split('/').nth(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn scope_first_then_target_then_nothing() {
        let uri: Uri = "/".parse().expect("uri");
        let auth = "AWS4-HMAC-SHA256 Credential=AKID/20261127/us-east-1/logs/aws4_request, \
                    SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(of(&headers(&[("authorization", auth)]), &uri), Some(Service::Logs));
        let gw = auth.replace("/logs/", "/apigateway/");
        assert_eq!(of(&headers(&[("authorization", &gw)]), &uri), Some(Service::ApiGateway));
        // The scope wins over a target that says otherwise.
        let lam = auth.replace("/logs/", "/lambda/");
        let h = headers(&[("authorization", &lam), ("x-amz-target", "Logs_20140328.DescribeLogGroups")]);
        assert_eq!(of(&h, &uri), Some(Service::Lambda));
        // Unsigned: by target, else by path.
        assert_eq!(of(&headers(&[("x-amz-target", "Logs_20140328.GetLogEvents")]), &uri), Some(Service::Logs));
        assert_eq!(of(&HeaderMap::new(), &uri), None);
        let sts = auth.replace("/logs/", "/sts/");
        assert_eq!(of(&headers(&[("authorization", &sts)]), &uri), Some(Service::Sts));
        // A service we do not serve names none.
        let ec2 = auth.replace("/logs/", "/ec2/");
        assert_eq!(of(&headers(&[("authorization", &ec2)]), &uri), None);
        assert_eq!(scope_service(&headers(&[("authorization", &ec2)]), &uri), Some("ec2"));
    }

    #[test]
    fn presigned_query_scope() {
        let uri: Uri = "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20261127%2Fus-east-1%2Fapigateway%2Faws4_request&X-Amz-Signature=x"
            .parse()
            .expect("uri");
        assert_eq!(of(&HeaderMap::new(), &uri), Some(Service::ApiGateway));
        assert_eq!(of(&headers(&[("authorization", "Bearer x")]), &"/".parse().expect("uri")), None);
        // Signature Version 2 is S3's.
        let v2: Uri = "/b/k?AWSAccessKeyId=AKID&Signature=abc%3D&Expires=1".parse().expect("uri");
        assert_eq!(of(&HeaderMap::new(), &v2), Some(Service::S3));
        assert_eq!(
            of(&headers(&[("authorization", "AWS AKID:c2ln")]), &"/b/k".parse().expect("uri")),
            Some(Service::S3)
        );
    }
}
