//! `dyno-cni`: the dyno network model as a CNI plugin. The runtime's request comes as
//! environment variables and a network configuration on stdin; the result (or a CNI error
//! object) goes to stdout; logs go to stderr.

/// A line on stderr, written whole in one `write` (the runtime reads stderr as it comes; a
/// formatted `eprintln!` is a write per piece).
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log_line(&format!($($arg)*))
    };
}

mod config;
mod env;
mod error;
mod plugin;
mod result;

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::env::Command;
use crate::error::CniError;

/// The version errors carry when the input's cannot be read.
const FALLBACK_VERSION: &str = "1.0.0";

fn main() -> ExitCode {
    let mut input = Vec::new();
    let read = std::io::stdin().read_to_end(&mut input);
    let version = config::version_of(&input).unwrap_or_else(|| FALLBACK_VERSION.into());
    let outcome = read
        .map_err(|e| CniError::Io(format!("stdin: {e}")))
        .and_then(|_| run(&input));
    let mut stdout = std::io::stdout();
    match outcome {
        Ok(Some(value)) => {
            let _ = writeln!(stdout, "{value}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            log!("{e}");
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

fn run(input: &[u8]) -> Result<Option<Value>, CniError> {
    let env = env::parse(|name| std::env::var(name).ok())?;
    if env.command == Command::Version {
        // Runtimes may send a configuration or nothing; its version is echoed when known.
        let version = config::version_of(input).unwrap_or_else(|| "1.1.0".into());
        return Ok(Some(json!({
            "cniVersion": version,
            "supportedVersions": config::SUPPORTED_VERSIONS,
        })));
    }
    let conf = config::parse(input)?;
    if matches!(env.command, Command::Gc | Command::Status) && conf.cni_version != "1.1.0" {
        return Err(CniError::Version(format!(
            "{} is CNI 1.1.0's; the configuration says {}",
            if env.command == Command::Gc {
                "GC"
            } else {
                "STATUS"
            },
            conf.cni_version
        )));
    }
    match env.command {
        Command::Add => plugin::add(&env, &conf).map(Some),
        Command::Del => plugin::del(&env, &conf).map(|()| None),
        Command::Gc => plugin::gc(&conf).map(|()| None),
        Command::Status => plugin::status(&conf).map(|()| None),
        Command::Check | Command::Version => plugin::check(&env, &conf).map(|()| None),
    }
}

pub(crate) fn log_line(message: &str) {
    let line = format!("dyno-cni: {message}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}
