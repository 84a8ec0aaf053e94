//! Custom domains (`heroku domains:add www.example.com`): DNS names the router sends to an app.

use std::fmt;
use std::str::FromStr;

use super::{shown, string_newtype, ValidationError};

/// A lowercase DNS name of at least two labels, each 1–63 of `a-z`, `0-9` and `-` (not at
/// either end), 253 characters at most; not under `.localhost`, where every app already has
/// its own name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);
string_newtype!(Hostname);

impl Hostname {
    pub const MAX_LEN: usize = 253;

    pub fn parse(s: &str) -> Result<Hostname, ValidationError> {
        let bad = |why: &str| {
            Err(ValidationError::new(
                "domain",
                format!(
                    "domain {} {why}; give a DNS name such as www.example.com",
                    shown(s)
                ),
            ))
        };
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return bad("must have 1 to 253 characters");
        }
        if name.starts_with("*.") {
            return bad("is a wildcard, which dyno does not route yet");
        }
        let labels: Vec<&str> = name.split('.').collect();
        if labels.len() < 2 {
            return bad("needs at least two labels");
        }
        for label in &labels {
            let ok = (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return bad("has a label that is not 1-63 of a-z, 0-9 and '-'");
            }
        }
        if labels.last() == Some(&"localhost") {
            return bad("is under .localhost, where every app has its own name already");
        }
        Ok(Hostname(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(
            Hostname::parse("WWW.Example.com.").unwrap().as_str(),
            "www.example.com"
        );
        assert_eq!(
            Hostname::parse("a-1.b.test").unwrap().as_str(),
            "a-1.b.test"
        );
        for bad in [
            "",
            "example",
            "*.example.com",
            "-a.example.com",
            "a-.example.com",
            "a..example.com",
            "a_b.example.com",
            "x.localhost",
            "exa mple.com",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(Hostname::parse(bad).is_err(), "{bad}");
        }
    }
}
