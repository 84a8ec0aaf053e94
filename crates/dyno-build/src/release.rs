//! A buildpack's `bin/release` output: YAML with the app's default process types and config
//! vars the buildpack wants set (`addons` and other keys are ignored, as Heroku ignores
//! `addons` today).
//!
//! ```yaml
//! ---
//! config_vars:
//!   LANG: "en_US.UTF-8"
//! default_process_types:
//!   web: bundle exec rackup -p $PORT
//! ```

use std::collections::BTreeMap;

use serde_norway::Value;

/// What one buildpack's release said, or several merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseInfo {
    /// Process type → command, used where the app has no `Procfile` entry of that type.
    pub default_process_types: BTreeMap<String, String>,
    /// Config vars the buildpack sets unless the app has set them.
    pub config_vars: BTreeMap<String, String>,
}

/// Why a release output was refused. The texts are shown in the build output.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    #[error(
        "the buildpack's bin/release printed no valid YAML ({0}); it must print a YAML map \
         with `config_vars` and `default_process_types`"
    )]
    Yaml(String),
    #[error(
        "the buildpack's bin/release printed more than {max} bytes; it must print only the \
         YAML map with `config_vars` and `default_process_types` (send anything else to stderr)"
    )]
    TooLong { max: usize },
    #[error(
        "the buildpack's bin/release nests `[` or `{{` more than {max} deep; it must print a \
         flat YAML map with `config_vars` and `default_process_types`"
    )]
    TooDeep { max: usize },
    #[error(
        "the buildpack's bin/release printed {found} where a YAML map was expected; it must \
         print a map with `config_vars` and `default_process_types`"
    )]
    NotAMap { found: &'static str },
    #[error(
        "the buildpack's bin/release gives `{section}` as {found}; it must be a map of names \
         to strings"
    )]
    SectionNotAMap {
        section: &'static str,
        found: &'static str,
    },
    #[error(
        "the buildpack's bin/release gives `{section}.{key}` as {found}; each value must be \
         a string, a number or a boolean (quote it)"
    )]
    NotAScalar {
        section: &'static str,
        key: String,
        found: &'static str,
    },
    #[error(
        "the buildpack's bin/release has a key of `{section}` that is {found}; names must be \
         strings"
    )]
    BadKey {
        section: &'static str,
        found: &'static str,
    },
}

/// Real release outputs are a few hundred bytes; the cap keeps a runaway buildpack's output
/// from costing the daemon more than milliseconds to parse.
pub const MAX_RELEASE_LEN: usize = 256 * 1024;

/// libyaml's scanner is quadratic in the nesting of flow collections (`[[[[…`: seconds at
/// 10 000 levels, before its own recursion limit of 128 refuses the document), so deep
/// nesting is refused before parsing. Brackets inside quoted strings count too, which only
/// matters for a value holding more than 32 unclosed brackets.
pub const MAX_FLOW_DEPTH: usize = 32;

const PROCESS_TYPES: &str = "default_process_types";
const CONFIG_VARS: &str = "config_vars";

/// Parses one `bin/release` output. Empty output (or `---` alone) is an empty release, and so
/// is a missing or empty (`{}`, null) section.
pub fn parse_release(text: &str) -> Result<ReleaseInfo, ReleaseError> {
    if text.len() > MAX_RELEASE_LEN {
        return Err(ReleaseError::TooLong {
            max: MAX_RELEASE_LEN,
        });
    }
    let mut depth = 0usize;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_FLOW_DEPTH {
            return Err(ReleaseError::TooDeep {
                max: MAX_FLOW_DEPTH,
            });
        }
    }
    let doc: Value = serde_norway::from_str(text).map_err(|e| ReleaseError::Yaml(e.to_string()))?;
    let top = match doc {
        Value::Null => return Ok(ReleaseInfo::default()),
        Value::Mapping(map) => map,
        other => {
            return Err(ReleaseError::NotAMap {
                found: what(&other),
            })
        }
    };
    Ok(ReleaseInfo {
        default_process_types: section(top.get(PROCESS_TYPES), PROCESS_TYPES)?,
        config_vars: section(top.get(CONFIG_VARS), CONFIG_VARS)?,
    })
}

/// A section's names and values, scalars as strings.
fn section(
    value: Option<&Value>,
    name: &'static str,
) -> Result<BTreeMap<String, String>, ReleaseError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Mapping(map)) => map,
        Some(other) => {
            return Err(ReleaseError::SectionNotAMap {
                section: name,
                found: what(other),
            })
        }
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let key = scalar(key).ok_or_else(|| ReleaseError::BadKey {
            section: name,
            found: what(key),
        })?;
        let value = scalar(value).ok_or_else(|| ReleaseError::NotAScalar {
            section: name,
            key: key.clone(),
            found: what(value),
        })?;
        out.insert(key, value);
    }
    Ok(out)
}

/// A string, number or boolean as the text a shell would see (`5`, `1.5`, `true`).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Words for a YAML value's kind, for the errors.
fn what(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The release of a multi-buildpack build, from each buildpack's in order: config vars are
/// merged with later buildpacks winning, and the default process types are those of the last
/// buildpack that declares any (Heroku uses the last buildpack's; one that declares none,
/// such as a buildpack that only installs packages, does not erase the language buildpack's
/// before it).
pub fn merge(infos: &[ReleaseInfo]) -> ReleaseInfo {
    let mut merged = ReleaseInfo::default();
    for info in infos {
        merged
            .config_vars
            .extend(info.config_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !info.default_process_types.is_empty() {
            merged.default_process_types = info.default_process_types.clone();
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn heroku_example() {
        let text = "---\naddons: []\nconfig_vars:\n  PATH: /app/bin:/usr/bin\n  LANG: \"en_US.UTF-8\"\n\
                    default_process_types:\n  web: bundle exec rackup -p $PORT\n  worker: 'python worker.py'\n";
        let info = parse_release(text).unwrap();
        assert_eq!(
            info.config_vars,
            map(&[("PATH", "/app/bin:/usr/bin"), ("LANG", "en_US.UTF-8")])
        );
        assert_eq!(
            info.default_process_types,
            map(&[
                ("web", "bundle exec rackup -p $PORT"),
                ("worker", "python worker.py")
            ])
        );
    }

    #[test]
    fn empty_and_missing_sections() {
        for text in ["", "\n", "---\n", "---\naddons: []\n", "config_vars: {}\n"] {
            assert_eq!(
                parse_release(text).unwrap(),
                ReleaseInfo::default(),
                "{text:?}"
            );
        }
        let info = parse_release("default_process_types:\nconfig_vars: {}\n").unwrap();
        assert_eq!(info, ReleaseInfo::default());
        let info = parse_release("default_process_types:\n  web: ./server\n").unwrap();
        assert_eq!(info.default_process_types, map(&[("web", "./server")]));
        assert!(info.config_vars.is_empty());
    }

    #[test]
    fn scalars_become_strings() {
        let text =
            "config_vars:\n  WEB_CONCURRENCY: 5\n  RATIO: 1.5\n  DEBUG: true\n  \"8080\": port\n";
        let info = parse_release(text).unwrap();
        assert_eq!(
            info.config_vars,
            map(&[
                ("WEB_CONCURRENCY", "5"),
                ("RATIO", "1.5"),
                ("DEBUG", "true"),
                ("8080", "port")
            ])
        );
        let info = parse_release("config_vars:\n  1: one\n").unwrap();
        assert_eq!(info.config_vars, map(&[("1", "one")]));
    }

    #[test]
    fn nested_values_name_the_key() {
        let err = parse_release("config_vars:\n  DATABASE:\n    url: x\n").unwrap_err();
        assert_eq!(
            err,
            ReleaseError::NotAScalar {
                section: "config_vars",
                key: "DATABASE".into(),
                found: "a map"
            }
        );
        assert!(err.to_string().contains("`config_vars.DATABASE`"), "{err}");
        let err = parse_release("default_process_types:\n  web: [a, b]\n").unwrap_err();
        assert!(matches!(err, ReleaseError::NotAScalar { ref key, .. } if key == "web"));
        let err = parse_release("default_process_types:\n  web:\n").unwrap_err();
        assert!(matches!(
            err,
            ReleaseError::NotAScalar {
                found: "nothing (null)",
                ..
            }
        ));
    }

    #[test]
    fn wrong_shapes_are_refused() {
        assert!(matches!(
            parse_release("just a line of text\n"),
            Err(ReleaseError::NotAMap { found: "a string" })
        ));
        assert!(matches!(
            parse_release("- a\n- b\n"),
            Err(ReleaseError::NotAMap { found: "a list" })
        ));
        assert!(matches!(
            parse_release("config_vars: [A, B]\n"),
            Err(ReleaseError::SectionNotAMap {
                section: "config_vars",
                found: "a list"
            })
        ));
        assert!(matches!(
            parse_release("config_vars:\n  [a]: b\n"),
            Err(ReleaseError::BadKey { .. })
        ));
        let err = parse_release("config_vars: {A: b\n").unwrap_err();
        assert!(matches!(err, ReleaseError::Yaml(_)));
        assert!(err.to_string().contains("bin/release"), "{err}");
        assert!(matches!(
            parse_release("config_vars:\n  A: 1\n  A: 2\n"),
            Err(ReleaseError::Yaml(_))
        ));
    }

    #[test]
    fn runaway_output_is_refused_before_parsing() {
        // 10 000 open brackets took libyaml seconds before its own recursion limit.
        let deep = "config_vars:\n  X: ".to_string() + &"[".repeat(10_000);
        assert_eq!(
            parse_release(&deep),
            Err(ReleaseError::TooDeep {
                max: MAX_FLOW_DEPTH
            })
        );
        let nested = "config_vars:\n  X: ".to_string() + &"{a: ".repeat(MAX_FLOW_DEPTH + 1);
        assert!(matches!(
            parse_release(&nested),
            Err(ReleaseError::TooDeep { .. })
        ));
        // Closed brackets do not add up.
        let flat = "config_vars:\n  X: \"".to_string() + &"[a]".repeat(100) + "\"\n";
        assert_eq!(parse_release(&flat).unwrap().config_vars["X"].len(), 300);
        let long = "config_vars:\n  X: ".to_string() + &"a".repeat(MAX_RELEASE_LEN);
        let err = parse_release(&long).unwrap_err();
        assert_eq!(
            err,
            ReleaseError::TooLong {
                max: MAX_RELEASE_LEN
            }
        );
        assert!(err.to_string().contains("stderr"), "{err}");
        // Alias expansion (a "billion laughs") is refused by the parser itself.
        let mut laughs = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
        for (name, prev) in ('b'..='j').zip('a'..='i') {
            let refs = vec![format!("*{prev}"); 9].join(",");
            laughs += &format!("{name}: &{name} [{refs}]\n");
        }
        laughs += "config_vars:\n  X: *j\n";
        assert!(matches!(parse_release(&laughs), Err(ReleaseError::Yaml(_))));
    }

    #[test]
    fn merge_later_buildpacks_win() {
        let node = ReleaseInfo {
            default_process_types: map(&[("web", "npm start"), ("worker", "node w.js")]),
            config_vars: map(&[("PATH", "/app/node/bin"), ("NODE_ENV", "production")]),
        };
        let ruby = ReleaseInfo {
            default_process_types: map(&[("web", "bundle exec puma")]),
            config_vars: map(&[("PATH", "/app/bin"), ("LANG", "en_US.UTF-8")]),
        };
        let apt = ReleaseInfo::default();
        let merged = merge(&[node.clone(), ruby.clone(), apt]);
        assert_eq!(merged.default_process_types, ruby.default_process_types);
        assert_eq!(
            merged.config_vars,
            map(&[
                ("PATH", "/app/bin"),
                ("NODE_ENV", "production"),
                ("LANG", "en_US.UTF-8")
            ])
        );
        assert_eq!(merge(&[]), ReleaseInfo::default());
        assert_eq!(merge(std::slice::from_ref(&node)), node);
    }
}
