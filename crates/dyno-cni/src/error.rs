//! CNI errors: the spec's codes, written as the error object on stdout.

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("incompatible CNI version {0}")]
    Version(String),
    #[error("invalid environment: {0}")]
    Env(String),
    #[error("I/O failure: {0}")]
    Io(String),
    #[error("cannot decode the network configuration: {0}")]
    Decode(String),
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("{0}")]
    TryAgain(String),
    #[error("interface {0} already exists in the container")]
    IfnameExists(String),
    #[error("address management: {0}")]
    Ipam(String),
    #[error("network setup: {0}")]
    Setup(String),
    #[error("check: {0}")]
    Check(String),
    #[error("the plugin cannot serve ADD now: {0}")]
    NotAvailable(String),
    #[error("the plugin cannot serve ADD or DEL now: {0}")]
    Unavailable(String),
}

impl CniError {
    /// The spec's codes (1–99 are the spec's; 100 and up are this plugin's own).
    pub fn code(&self) -> u32 {
        match self {
            CniError::Version(_) => 1,
            CniError::Env(_) => 4,
            CniError::Io(_) => 5,
            CniError::Decode(_) => 6,
            CniError::Config(_) => 7,
            CniError::TryAgain(_) => 11,
            CniError::IfnameExists(_) => 100,
            CniError::Ipam(_) => 101,
            CniError::Setup(_) => 102,
            CniError::Check(_) => 103,
            CniError::NotAvailable(_) => 50,
            CniError::Unavailable(_) => 51,
        }
    }

    fn summary(&self) -> &'static str {
        match self {
            CniError::Version(_) => "incompatible CNI version",
            CniError::Env(_) => "invalid environment variables",
            CniError::Io(_) => "I/O failure",
            CniError::Decode(_) => "failed to decode content",
            CniError::Config(_) => "invalid network config",
            CniError::TryAgain(_) => "try again later",
            CniError::IfnameExists(_) => "interface exists",
            CniError::Ipam(_) => "address management failed",
            CniError::Setup(_) => "network setup failed",
            CniError::Check(_) => "check failed",
            CniError::NotAvailable(_) => "plugin not available",
            CniError::Unavailable(_) => "plugin not available for ADD or DEL",
        }
    }

    /// The error object; `version` is the input's when it could be read.
    pub fn to_json(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "code": self.code(),
            "msg": self.summary(),
            "details": self.to_string(),
        })
    }
}
