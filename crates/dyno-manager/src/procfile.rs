//! The app's `Procfile` (`web: python3 web.py`) and `.env` (`KEY=value`), parsed with errors
//! that name the file and line.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessType {
    pub name: String,
    pub command: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppFileError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}: no process types; add a line like `web: python3 web.py`")]
    Empty(PathBuf),
}

/// Process type names: what Heroku accepts (`web`, `worker`, `clock`, `release-phase`...).
fn valid_type(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 30
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
}

pub fn read_procfile(path: &Path) -> Result<Vec<ProcessType>, AppFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| AppFileError::Read {
        path: path.to_path_buf(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            "no Procfile: an app needs one, with lines like `web: python3 web.py`".into()
        } else {
            e.to_string()
        },
    })?;
    parse_procfile(path, &text)
}

pub fn parse_procfile(path: &Path, text: &str) -> Result<Vec<ProcessType>, AppFileError> {
    let mut types: Vec<ProcessType> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| AppFileError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let (name, command) = line
            .split_once(':')
            .ok_or_else(|| err(format!("expected `type: command`, got {line:?}")))?;
        let (name, command) = (name.trim(), command.trim());
        if !valid_type(name) {
            return Err(err(format!(
                "process type {name:?} must be lowercase letters, digits, '-' or '_', starting with a letter"
            )));
        }
        if command.is_empty() {
            return Err(err(format!("process type {name:?} has no command")));
        }
        if types.iter().any(|t| t.name == name) {
            return Err(err(format!("process type {name:?} is defined twice")));
        }
        types.push(ProcessType {
            name: name.into(),
            command: command.into(),
        });
    }
    if types.is_empty() {
        return Err(AppFileError::Empty(path.to_path_buf()));
    }
    Ok(types)
}

/// `.env`: `KEY=value` lines, `#` comments, optional `export `, values optionally quoted.
/// A missing file is an empty environment.
pub fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, AppFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_dotenv(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(AppFileError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

pub fn parse_dotenv(path: &Path, text: &str) -> Result<Vec<(String, String)>, AppFileError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let err = |reason: String| AppFileError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err(format!("expected KEY=value, got {line:?}")))?;
        let key = key.trim();
        let key_ok = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with(|c: char| c.is_ascii_digit());
        if !key_ok {
            return Err(err(format!("{key:?} is not a valid variable name")));
        }
        let value = value.trim();
        let value = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| {
                value
                    .strip_prefix(*open)
                    .and_then(|v| v.strip_suffix(*close))
            })
            .unwrap_or(value);
        vars.retain(|(k, _)| k != key);
        vars.push((key.into(), value.into()));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("Procfile")
    }

    #[test]
    fn parses_a_procfile() {
        let types = parse_procfile(
            p(),
            "# app\nweb: python3 web.py --port $PORT\n\nworker:  ./work.sh\n",
        )
        .unwrap();
        assert_eq!(types.len(), 2);
        assert_eq!(types[0].name, "web");
        assert_eq!(types[0].command, "python3 web.py --port $PORT");
        assert_eq!(types[1].command, "./work.sh");
    }

    #[test]
    fn procfile_errors_name_the_line() {
        let e = parse_procfile(p(), "web: ok\nthis is wrong\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Procfile:2: expected `type: command`, got \"this is wrong\""
        );
        let e = parse_procfile(p(), "Web: x\n").unwrap_err().to_string();
        assert!(e.starts_with("Procfile:1: process type \"Web\""), "{e}");
        let e = parse_procfile(p(), "web:\n").unwrap_err().to_string();
        assert!(e.contains("has no command"), "{e}");
        let e = parse_procfile(p(), "web: a\nweb: b\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Procfile:2") && e.contains("defined twice"),
            "{e}"
        );
        assert_eq!(
            parse_procfile(p(), "# nothing\n").unwrap_err(),
            AppFileError::Empty(p().into())
        );
    }

    #[test]
    fn parses_dotenv() {
        let vars = parse_dotenv(
            Path::new(".env"),
            "# c\nA=1\nexport B = \"two words\"\nC='x=y'\nA=3\n",
        )
        .unwrap();
        assert_eq!(
            vars,
            vec![
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into()),
                ("A".into(), "3".into())
            ]
        );
        let e = parse_dotenv(Path::new(".env"), "1A=x\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(".env:1:"), "{e}");
        let e = parse_dotenv(Path::new(".env"), "novalue\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected KEY=value"), "{e}");
    }
}
