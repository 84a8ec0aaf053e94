//! The operator's additions to the dynos' system-call profile, per app: `dyno serve
//! --seccomp-allow APP:CALL[,CALL…]` (repeatable) and `dyno up --seccomp-allow CALL[,CALL…]`.
//! Every name is checked when the option is read, so a daemon with a typo refuses to start
//! (naming the call) rather than starting dynos half-filtered. The profile itself is
//! `dyno_sandbox::seccomp::profile`.

use std::collections::BTreeMap;

use dyno_sandbox::seccomp::validate_additions;
use dyno_sandbox::spec::SeccompSpec;

/// Calls allowed on top of the default profile, by app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeccompAdditions(BTreeMap<String, Vec<String>>);

/// One `--seccomp-allow` value: an app and the calls it may make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCalls {
    pub app: String,
    pub calls: Vec<String>,
}

/// Why a `--seccomp-allow` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum AllowError {
    #[error("{0:?}: expected APP:CALL[,CALL…], e.g. myapp:io_uring_setup")]
    NoApp(String),
    #[error("{0:?}: the app's name is missing before ':'")]
    EmptyApp(String),
    #[error("no system call named: give CALL[,CALL…], e.g. io_uring_setup")]
    NoCall,
    /// An unknown call's name, or one this architecture lacks.
    #[error(transparent)]
    Call(#[from] dyno_sandbox::seccomp::SeccompError),
}

impl std::str::FromStr for AppCalls {
    type Err = AllowError;

    /// `APP:CALL[,CALL…]`
    fn from_str(value: &str) -> Result<AppCalls, AllowError> {
        let (app, calls) = value
            .split_once(':')
            .ok_or_else(|| AllowError::NoApp(value.into()))?;
        if app.is_empty() {
            return Err(AllowError::EmptyApp(value.into()));
        }
        Ok(AppCalls {
            app: app.to_string(),
            calls: parse_calls(calls)?,
        })
    }
}

/// `CALL[,CALL…]`, each a system call this kernel's architecture has (and may be allowed).
pub fn parse_calls(calls: &str) -> Result<Vec<String>, AllowError> {
    let calls: Vec<String> = calls
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if calls.is_empty() {
        return Err(AllowError::NoCall);
    }
    validate_additions(&calls)?;
    Ok(calls)
}

impl SeccompAdditions {
    pub fn new(values: impl IntoIterator<Item = AppCalls>) -> SeccompAdditions {
        let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for AppCalls { app, calls } in values {
            let allowed = by_app.entry(app).or_default();
            for call in calls {
                if !allowed.contains(&call) {
                    allowed.push(call);
                }
            }
        }
        SeccompAdditions(by_app)
    }

    /// The filter of `app`'s dynos.
    pub fn spec_for(&self, app: &str) -> SeccompSpec {
        SeccompSpec {
            off: false,
            allow: self.0.get(app).cloned().unwrap_or_default(),
        }
    }

    /// Apps with additions (for the daemon's start-up note).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additions_name_known_calls_per_app() {
        let a: AppCalls = "hello:io_uring_setup,io_uring_enter".parse().unwrap();
        let b: AppCalls = "hello:io_uring_setup, keyctl".parse().unwrap();
        let c: AppCalls = "other:bpf".parse().unwrap();
        let additions = SeccompAdditions::new([a, b, c]);
        assert_eq!(
            additions.spec_for("hello").allow,
            ["io_uring_setup", "io_uring_enter", "keyctl"]
        );
        assert_eq!(additions.spec_for("other").allow, ["bpf"]);
        assert_eq!(additions.spec_for("nobody"), SeccompSpec::default());
    }

    #[test]
    fn a_bad_addition_is_refused_with_its_name() {
        let e = "hello:io_uring_stup".parse::<AppCalls>().unwrap_err();
        assert!(matches!(e, AllowError::Call(_)), "{e:?}");
        assert!(e.to_string().contains("\"io_uring_stup\""), "{e}");
        assert!(matches!(
            "io_uring_setup".parse::<AppCalls>(),
            Err(AllowError::NoApp(_))
        ));
        assert!(matches!(
            ":keyctl".parse::<AppCalls>(),
            Err(AllowError::EmptyApp(_))
        ));
        assert!(matches!(
            "hello:".parse::<AppCalls>(),
            Err(AllowError::NoCall)
        ));
        assert!("hello:clone3"
            .parse::<AppCalls>()
            .unwrap_err()
            .to_string()
            .contains("clone3"));
    }
}
