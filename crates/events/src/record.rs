//! Lambda's invocation record (the payload a destination receives) and destination names.

use serde_json::{Value, json};

/// Why an event ended, as `requestContext.condition` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// The function's last answer, for `responseContext` and `responsePayload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordResponse<'a> {
    pub executed_version: &'a str,
    pub body: &'a [u8],
    pub function_error: bool,
}

/// The invocation record Lambda sends to a destination:
///
/// ```json
/// {"version":"1.0","timestamp":"2019-11-14T18:16:05.568Z",
///  "requestContext":{"requestId":"…","functionArn":"arn:…:function:f:$LATEST",
///                    "condition":"RetriesExhausted","approximateInvokeCount":3},
///  "requestPayload":{…},
///  "responseContext":{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"},
///  "responsePayload":{"errorMessage":"…"}}
/// ```
///
/// `responseContext` and `responsePayload` are left out when the function never answered (an
/// event that only met throttles or platform errors). Payloads that are not JSON are given as
/// strings; empty ones as `null`.
pub fn invocation_record(
    request_id: &str,
    function_arn: &str,
    condition: Condition,
    approximate_invoke_count: u32,
    request_payload: &[u8],
    response: Option<RecordResponse<'_>>,
    timestamp_ms: u64,
) -> Value {
    let mut v = json!({
        "version": "1.0",
        "timestamp": quarters_types::time::rfc3339_ms(timestamp_ms),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": approximate_invoke_count,
        },
        "requestPayload": as_json(request_payload),
    });
    if let (Some(r), Some(obj)) = (response, v.as_object_mut()) {
        let mut ctx = json!({ "statusCode": 200, "executedVersion": r.executed_version });
        if r.function_error {
            ctx["functionError"] = "Unhandled".into();
        }
        obj.insert("responseContext".into(), ctx);
        obj.insert("responsePayload".into(), as_json(r.body));
    }
    v
}

fn as_json(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The function a destination names, and its qualifier: accepts `name`, `name:qualifier`,
/// `account:function:name[:qualifier]` and `arn:aws:lambda:region:account:function:name[:qualifier]`.
/// `None` for anything else (an SQS, SNS, EventBridge or S3 ARN, which Quarters cannot deliver to).
pub fn parse_function_destination(dest: &str) -> Option<(String, Option<String>)> {
    let rest = if let Some(i) = dest.find(":function:") {
        let head = &dest[..i];
        let ok = if head.starts_with("arn:") {
            head.split(':').nth(2) == Some("lambda")
        } else {
            !head.contains(':') // a partial ARN: account:function:name
        };
        if !ok {
            return None;
        }
        &dest[i + ":function:".len()..]
    } else if dest.starts_with("arn:") {
        return None;
    } else {
        dest
    };
    let mut parts = rest.split(':');
    let name = parts.next().filter(|n| valid_name(n))?;
    let qualifier = parts.next().map(str::to_owned);
    if parts.next().is_some() || qualifier.as_deref() == Some("") {
        return None;
    }
    Some((name.to_owned(), qualifier))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_record_has_lambda_shape() {
        let v = invocation_record(
            "req-1",
            "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
            Condition::RetriesExhausted,
            3,
            br#"{"a":1}"#,
            Some(RecordResponse {
                executed_version: "$LATEST",
                body: br#"{"errorMessage":"boom"}"#,
                function_error: true,
            }),
            1_709_212_455_678,
        );
        assert_eq!(
            v,
            json!({
                "version": "1.0",
                "timestamp": "2024-02-29T13:14:15.678Z",
                "requestContext": {
                    "requestId": "req-1",
                    "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 3
                },
                "requestPayload": {"a": 1},
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": {"errorMessage": "boom"}
            })
        );
    }

    #[test]
    fn success_record_and_odd_payloads() {
        let v = invocation_record(
            "r",
            "arn",
            Condition::Success,
            1,
            b"  ",
            Some(RecordResponse { executed_version: "3", body: b"not json", function_error: false }),
            0,
        );
        assert_eq!(v["requestPayload"], Value::Null);
        assert_eq!(v["responsePayload"], json!("not json"));
        assert_eq!(v["responseContext"], json!({"statusCode": 200, "executedVersion": "3"}));
        assert_eq!(v["requestContext"]["condition"], "Success");
        let v = invocation_record("r", "arn", Condition::EventAgeExceeded, 0, b"[1]", None, 0);
        assert!(v.get("responseContext").is_none() && v.get("responsePayload").is_none());
        assert_eq!(v["requestPayload"], json!([1]));
    }

    #[test]
    fn destinations() {
        let p = |s: &str| parse_function_destination(s);
        assert_eq!(p("dlq"), Some(("dlq".into(), None)));
        assert_eq!(p("dlq:live"), Some(("dlq".into(), Some("live".into()))));
        assert_eq!(p("arn:aws:lambda:us-east-1:000000000000:function:dlq"), Some(("dlq".into(), None)));
        assert_eq!(
            p("arn:aws:lambda:us-east-1:000000000000:function:dlq:$LATEST"),
            Some(("dlq".into(), Some("$LATEST".into())))
        );
        assert_eq!(p("000000000000:function:dlq:2"), Some(("dlq".into(), Some("2".into()))));
        assert_eq!(p("arn:aws:sqs:us-east-1:000000000000:queue"), None);
        assert_eq!(p("arn:aws:sns:us-east-1:000000000000:function:x"), None);
        assert_eq!(p(""), None);
        assert_eq!(p("a:b:c"), None);
        assert_eq!(p("dlq:"), None);
    }
}
