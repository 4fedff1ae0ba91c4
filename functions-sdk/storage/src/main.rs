//! The talk's storage demo with the AWS SDK for Rust inside a native function.
//!
//! Every invocation reads the shared bucket with the execution role (the SDK's default chain finds
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` and `AWS_ENDPOINT_URL`), then
//! tries each tenant's object in the tenant-data bucket with tenant-scoped credentials: from the
//! gateway's authorizer context when the event carries one, otherwise from Quarters' per-tenant
//! credentials through the SDK's container-credentials provider.
use aws_config::BehaviorVersion;
use aws_config::ecs::EcsCredentialsProvider;
use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

const TENANTS: [&str; 3] = ["BlueTenant", "GreenTenant", "YellowTenant"];

fn s3(conf: &aws_config::SdkConfig, creds: Option<SharedCredentialsProvider>) -> aws_sdk_s3::Client {
    let mut b = aws_sdk_s3::config::Builder::from(conf).force_path_style(true);
    if let Some(c) = creds {
        b = b.credentials_provider(c);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

async fn read(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => match o.body.collect().await {
            Ok(b) => String::from_utf8_lossy(&b.into_bytes()).into_owned(),
            Err(e) => format!("BodyError: {e}"),
        },
        Err(e) => e.as_service_error().and_then(|s| s.meta().code()).unwrap_or("NoCode").to_owned(),
    }
}

async fn handler(conf: &aws_config::SdkConfig, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    let env = |k: &str| std::env::var(k).map_err(|_| Error::from(format!("{k} is not set")));
    let shared = read(&s3(conf, None), &env("SHARED")?, "readme.txt").await;
    let az = payload.pointer("/requestContext/authorizer").filter(|v| v.is_object());
    let creds = match az {
        Some(az) => {
            let f = |k: &str| az.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            let c =
                Credentials::new(f("accessKeyId"), f("secretAccessKey"), Some(f("sessionToken")), None, "authorizer");
            SharedCredentialsProvider::new(c)
        }
        None => SharedCredentialsProvider::new(EcsCredentialsProvider::builder().build()),
    };
    let tenant_s3 = s3(conf, Some(creds));
    let bucket = env("TENANT_DATA")?;
    let mut data = serde_json::Map::new();
    for t in TENANTS {
        data.insert(t.to_owned(), Value::String(read(&tenant_s3, &bucket, &format!("{t}/secret.txt")).await));
    }
    let out = json!({"shared": shared, "tenant": ctx.tenant_id, "data": data, "sdk": "aws-sdk-rust"});
    Ok(if az.is_some() { json!({"statusCode": 200, "body": out.to_string()}) } else { out })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let conf = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let conf = &conf;
    lambda_runtime::run(service_fn(move |e| handler(conf, e))).await
}
