//! Lambda's limits, as in the wire reference.

pub const MEMORY_MIN_MB: u32 = 128;
pub const MEMORY_MAX_MB: u32 = 10_240;
pub const MEMORY_DEFAULT_MB: u32 = 128;
pub const TIMEOUT_MIN_S: u32 = 1;
pub const TIMEOUT_MAX_S: u32 = 900;
pub const TIMEOUT_DEFAULT_S: u32 = 3;
pub const EPHEMERAL_MIN_MB: u32 = 512;
pub const EPHEMERAL_MAX_MB: u32 = 10_240;
pub const EPHEMERAL_DEFAULT_MB: u32 = 512;
/// Total size of environment variable keys and values.
pub const ENV_VARS_MAX_BYTES: usize = 4 * 1024;
pub const ZIP_MAX_BYTES: u64 = 52_428_800;
pub const UNZIPPED_MAX_BYTES: u64 = 262_144_000;
/// Largest CreateFunction / UpdateFunctionCode request body.
pub const CREATE_REQUEST_MAX_BYTES: usize = 70_167_211;
/// Largest synchronous invoke request payload.
pub const SYNC_PAYLOAD_MAX_BYTES: usize = 6_291_456;
/// Largest asynchronous (Event) invoke request payload.
pub const ASYNC_PAYLOAD_MAX_BYTES: usize = 1_048_576;
/// Largest function response.
pub const RESPONSE_MAX_BYTES: usize = 6_291_556;
/// Size of the log tail returned with `X-Amz-Log-Type: Tail`.
pub const LOG_TAIL_BYTES: usize = 4096;
pub const DESCRIPTION_MAX: usize = 256;
pub const HANDLER_MAX: usize = 128;
pub const LIST_MAX_ITEMS: usize = 50;
pub const ACCOUNT_CONCURRENCY_DEFAULT: u32 = 1000;
/// Unreserved concurrency the account must always keep.
pub const UNRESERVED_MIN: u32 = 100;
/// Tenant environments allowed per 1,000 of a function's concurrency.
pub const TENANT_ENVS_PER_1000: u32 = 2500;
pub const CLIENT_CONTEXT_MAX_BYTES: usize = 3583;
