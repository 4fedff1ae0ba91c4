//! Quarters' domain types: identifiers, function configuration, validation rules and limits.
//!
//! This crate does no IO. Everything that crosses a trust boundary (tenant ids, function names,
//! qualifiers, configuration values) is parsed here into a type that can only hold a valid value.

mod arn;
mod config;
mod error;
mod ids;
pub mod limits;
pub mod time;

pub use arn::{Arns, FunctionRef};
pub use config::{
    CodeInfo, FunctionConfig, ImageSettings, LayerRef, LogFormat, LoggingConfig, Runtime, RuntimeFamily,
    TenantIsolationMode, VersionRecord,
};
pub use error::{ValidationError, ValidationKind};
pub use ids::{EnvId, FunctionName, Qualifier, TenantId, validate_alias_name};
