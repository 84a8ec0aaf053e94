//! Typed, validated inputs. Every value that reaches the store from outside (API, CLI) goes
//! through one of these types first; their errors name the value, the rule and what to do.
//!
//! Each type parses with [`FromStr`] and `TryFrom<&str>`, prints back with `Display`, and
//! (de)serialises as its string, so a JSON body with a bad value fails at parse time.

mod drain;
mod hostname;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

pub use drain::{DrainScheme, DrainTarget, DrainUrl};
pub use hostname::Hostname;

/// A value that breaks a rule. `field` is the kind of value (`app name`, `config key`...), the
/// message says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> ValidationError {
        ValidationError {
            field,
            message: message.into(),
        }
    }
}

/// Implements `FromStr`, `TryFrom<&str>`, `TryFrom<String>`, `Display`, `AsRef<str>`, `as_str` and
/// serde (as a string) for a newtype over `String` with a `fn parse(&str) -> Result<Self, _>`.
macro_rules! string_newtype {
    ($t:ident) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $t {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, ValidationError> {
                $t::parse(s)
            }
        }
        impl TryFrom<&str> for $t {
            type Error = ValidationError;
            fn try_from(s: &str) -> Result<Self, ValidationError> {
                $t::parse(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, ValidationError> {
                $t::parse(&s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $t::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_newtype;

/// Shortens a bad value for an error message (it may be huge or hold control characters).
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}… ({} bytes)", s.len())
    }
}

/// An app's name: `^[a-z][a-z0-9-]{2,29}$` (3 to 30 characters, as Heroku).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);
string_newtype!(AppName);

impl AppName {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 30;

    pub fn parse(s: &str) -> Result<AppName, ValidationError> {
        let bad = |why: &str| {
            Err(ValidationError::new(
                "app name",
                format!(
                    "app name {} {why}; use 3 to 30 characters of a-z, 0-9 and '-', starting with a letter (like `my-app-2`)",
                    shown(s)
                ),
            ))
        };
        if s.len() < Self::MIN_LEN {
            return bad("is too short");
        }
        if s.len() > Self::MAX_LEN {
            return bad("is too long");
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            return bad("must start with a lowercase letter");
        }
        if !s
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return bad("has characters other than a-z, 0-9 and '-'");
        }
        Ok(AppName(s.to_string()))
    }
}

/// A Procfile process type: `^[a-zA-Z0-9_-]+$`, at most 30 characters (Heroku's rule). `run` is
/// reserved for one-off dynos (`run.4821`) and cannot be a Procfile type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessType(String);
string_newtype!(ProcessType);

impl ProcessType {
    pub const MAX_LEN: usize = 30;
    /// The name of one-off dynos; not a Procfile type.
    pub const RUN: &'static str = "run";
    /// The release phase's type: it runs once per deploy and is never scaled.
    pub const RELEASE: &'static str = "release";

    pub fn parse(s: &str) -> Result<ProcessType, ValidationError> {
        let bad = |why: String| Err(ValidationError::new("process type", why));
        if s.is_empty() {
            return bad("a process type cannot be empty; use a name like `web` or `worker`".into());
        }
        if s.len() > Self::MAX_LEN {
            return bad(format!(
                "process type {} is too long: at most {} characters",
                shown(s),
                Self::MAX_LEN
            ));
        }
        if !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            return bad(format!(
                "process type {} may only contain letters, digits, '_' and '-' (like `web` or `worker`)",
                shown(s)
            ));
        }
        if s == Self::RUN {
            return bad(
                "`run` is reserved for one-off dynos (`dyno run`); rename the Procfile entry"
                    .into(),
            );
        }
        Ok(ProcessType(s.to_string()))
    }

    pub fn is_web(&self) -> bool {
        self.0 == "web"
    }
}

/// A config var name: `^[A-Za-z_][A-Za-z0-9_]*$`, at most 255 bytes.
///
/// `PORT` and `DYNO` are refused: the platform sets them for every dyno (`PORT` is the one port
/// the router reaches, `DYNO` is `web.1`), so a value set by the user would never be seen by
/// the app. Heroku accepts them and silently overrides them; refusing says so at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigKey(String);
string_newtype!(ConfigKey);

impl ConfigKey {
    pub const MAX_LEN: usize = 255;
    /// Set by the platform in every dyno; not settable.
    pub const PLATFORM_KEYS: &'static [&'static str] = &["PORT", "DYNO"];

    pub fn parse(s: &str) -> Result<ConfigKey, ValidationError> {
        let bad = |why: String| Err(ValidationError::new("config key", why));
        if s.is_empty() {
            return bad("a config var name cannot be empty; use a name like `DATABASE_URL`".into());
        }
        if s.len() > Self::MAX_LEN {
            return bad(format!(
                "config var name {} is too long: at most {} characters",
                shown(s),
                Self::MAX_LEN
            ));
        }
        let first_ok = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return bad(format!(
                "config var name {} must be letters, digits and '_', not starting with a digit (like `DATABASE_URL`)",
                shown(s)
            ));
        }
        if Self::PLATFORM_KEYS.contains(&s) {
            return bad(format!(
                "{s} is set by the platform for every dyno and cannot be set; read it in your app instead"
            ));
        }
        Ok(ConfigKey(s.to_string()))
    }
}

/// A config var value: any UTF-8 text up to 32 KiB, without NUL bytes (environment strings end
/// at NUL, so the dyno would see a different value).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigValue(String);
string_newtype!(ConfigValue);

impl ConfigValue {
    pub const MAX_LEN: usize = 32 * 1024;

    pub fn parse(s: &str) -> Result<ConfigValue, ValidationError> {
        if s.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "config value",
                format!(
                    "config value of {} bytes is too large: at most {} bytes (32 KiB); keep large data in a file or an add-on",
                    s.len(),
                    Self::MAX_LEN
                ),
            ));
        }
        if s.contains('\0') {
            return Err(ValidationError::new(
                "config value",
                "config values cannot contain NUL bytes (the environment cannot hold them); encode binary data, e.g. in base64",
            ));
        }
        Ok(ConfigValue(s.to_string()))
    }
}

/// How many dynos of a type to run. Parses with [`Quantity::DEFAULT_MAX`]; the store checks its
/// own configured maximum again when scaling.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

impl Quantity {
    pub const DEFAULT_MAX: u32 = 100;

    pub fn new(n: u32, max: u32) -> Result<Quantity, ValidationError> {
        if n > max {
            return Err(ValidationError::new(
                "quantity",
                format!("quantity {n} is over the limit of {max} dynos per process type; scale to {max} or fewer"),
            ));
        }
        Ok(Quantity(n))
    }

    pub fn parse_with_max(s: &str, max: u32) -> Result<Quantity, ValidationError> {
        let n: u32 = s.trim().parse().map_err(|_| {
            ValidationError::new(
                "quantity",
                format!(
                    "quantity {} is not a whole number from 0 to {max}",
                    shown(s)
                ),
            )
        })?;
        Quantity::new(n, max)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for Quantity {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Quantity, ValidationError> {
        Quantity::parse_with_max(s, Quantity::DEFAULT_MAX)
    }
}

impl TryFrom<&str> for Quantity {
    type Error = ValidationError;
    fn try_from(s: &str) -> Result<Quantity, ValidationError> {
        s.parse()
    }
}

impl TryFrom<u32> for Quantity {
    type Error = ValidationError;
    fn try_from(n: u32) -> Result<Quantity, ValidationError> {
        Quantity::new(n, Quantity::DEFAULT_MAX)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Heroku's dyno types, as Heroku lists them. Their limits (memory, processes, CPU weight) are
/// the sandbox's business (`dyno_sandbox::cgroup::DYNO_SIZES`, checked to have the same names);
/// the state only keeps which one a formation asks for.
pub const SIZE_NAMES: [&str; 9] = [
    "Eco",
    "Basic",
    "Standard-1X",
    "Standard-2X",
    "Performance-M",
    "Performance-L",
    "Performance-L-RAM",
    "Performance-XL",
    "Performance-2XL",
];

/// The size of a dyno that is given none.
pub const DEFAULT_SIZE: &str = "Standard-1X";

/// A dyno size from [`SIZE_NAMES`] (`Standard-1X`...), matched ignoring case and kept in its
/// canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SizeName(String);
string_newtype!(SizeName);

impl SizeName {
    pub fn parse(s: &str) -> Result<SizeName, ValidationError> {
        match SIZE_NAMES.iter().find(|n| n.eq_ignore_ascii_case(s)) {
            Some(name) => Ok(SizeName(name.to_string())),
            None => Err(ValidationError::new(
                "dyno size",
                format!(
                    "no dyno size {}; choose one of {}",
                    shown(s),
                    SIZE_NAMES.join(", ")
                ),
            )),
        }
    }
}

impl Default for SizeName {
    fn default() -> SizeName {
        SizeName(DEFAULT_SIZE.to_string())
    }
}
