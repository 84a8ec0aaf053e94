//! Heroku Platform API v3's protocol around every answer: the `Accept` version, `Request-Id`,
//! and `Range` / `Next-Range` pagination of lists.
//!
//! A list is sorted and cut by the field its `Range` names (`Range: version ..; max=15,
//! order=desc`); when more is left, the answer is `206 Partial Content` with `Next-Range`
//! (`]15..; max=15, order=desc`: after the last value sent), which the client sends back for
//! the next page. Without `Range` a list is sorted by the endpoint's first field, at most
//! [`DEFAULT_MAX`] at a time, as Heroku's.

use std::cmp::Ordering;

use hyper::header::{HeaderMap, HeaderValue, ACCEPT};
use serde_json::Value;

use crate::error::ApiError;

/// Items per page without `max`.
pub const DEFAULT_MAX: usize = 200;
/// The largest `max` a client may ask for.
pub const LARGEST_MAX: usize = 1000;

/// `Accept`: none, `*/*` and `application/json` take the current version; Heroku's media type
/// must ask for version 3 (`3`, or a variant of it such as `3.sdk`).
pub fn check_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(ACCEPT) else {
        return Ok(());
    };
    let value = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
    for media in value.split(',') {
        let mut parts = media.split(';').map(str::trim);
        if parts.next() != Some("application/vnd.heroku+json") {
            continue;
        }
        let version = parts.find_map(|p| p.strip_prefix("version=")).unwrap_or("");
        if version == "3" || version.starts_with("3.") {
            return Ok(());
        }
        return Err(ApiError::bad_request(format!(
            "This API speaks version 3 of Heroku's Platform API: send \
             `Accept: application/vnd.heroku+json; version=3` (got version {version:?})."
        )));
    }
    Ok(())
}

/// The answer's `Request-Id`: the client's own when it sent a sane one, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let theirs = headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 200
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b','))
        });
    match theirs {
        Some(id) => HeaderValue::from_str(id).unwrap_or_else(|_| new_request_id()),
        None => new_request_id(),
    }
}

fn new_request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("hex and dashes")
}

/// A parsed `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub field: String,
    /// The first value; `exclusive` when written `]value` (after it, as `Next-Range` says).
    pub start: Option<String>,
    pub exclusive: bool,
    pub end: Option<String>,
    pub max: usize,
    pub descending: bool,
}

impl Range {
    /// `FIELD [START]..[END][; max=N][, order=asc|desc]`, Heroku's syntax (`;` or `,` between
    /// the options, a trailing one allowed).
    pub fn parse(value: &str) -> Result<Range, ApiError> {
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "Range header {value:?}: {why}. Write it as `Range: name ..; max=100, order=asc`."
            ))
        };
        let (spec, options) = match value.find(';') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, ""),
        };
        let spec = spec.trim();
        let (field, bounds) = match spec.find(char::is_whitespace) {
            Some(i) => (&spec[..i], spec[i..].trim()),
            None => (spec, ""),
        };
        if field.is_empty()
            || !field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad("no field to sort by"));
        }
        let (start, end) = if bounds.is_empty() {
            ("", "")
        } else {
            bounds.split_once("..").ok_or_else(|| bad("no `..`"))?
        };
        let (start, exclusive) = match start.trim().strip_prefix(']') {
            Some(rest) => (rest, true),
            None => (start.trim(), false),
        };
        let mut range = Range {
            field: field.to_string(),
            start: (!start.is_empty()).then(|| start.to_string()),
            exclusive,
            end: (!end.trim().is_empty()).then(|| end.trim().to_string()),
            max: DEFAULT_MAX,
            descending: false,
        };
        for option in options.split([';', ',']).map(str::trim) {
            if option.is_empty() {
                continue;
            }
            let (key, val) = option
                .split_once('=')
                .ok_or_else(|| bad("an option without `=`"))?;
            match (key.trim(), val.trim()) {
                ("max", n) => {
                    range.max = n
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=LARGEST_MAX).contains(n))
                        .ok_or_else(|| bad("max is a number from 1 to 1000"))?;
                }
                ("order", "asc") => range.descending = false,
                ("order", "desc") => range.descending = true,
                ("order", _) => return Err(bad("order is asc or desc")),
                _ => return Err(bad("the options are max and order")),
            }
        }
        Ok(range)
    }
}

/// One page of a list: the items, and the `Next-Range` when more are left.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    pub next_range: Option<String>,
}

/// Sorts `items` by the range's field (one of `fields`; the first without `Range`) and cuts
/// out the page it asks for.
pub fn page(mut items: Vec<Value>, range: Option<&str>, fields: &[&str]) -> Result<Page, ApiError> {
    let range = match range {
        Some(value) => Range::parse(value)?,
        None => Range::parse(fields.first().copied().unwrap_or("id"))?,
    };
    if !fields.contains(&range.field.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Range header: this list sorts by {}, not {:?}.",
            fields.join(" or "),
            range.field
        )));
    }
    let name = range.field.as_str();
    items.sort_by(|a, b| compare(field(a, name), field(b, name)));
    if range.descending {
        items.reverse();
    }
    let before_start = |v: &Value| {
        range.start.as_deref().is_some_and(|start| {
            let ord = compare_text(v, start);
            let ord = if range.descending { ord.reverse() } else { ord };
            ord == Ordering::Less || (range.exclusive && ord == Ordering::Equal)
        })
    };
    let after_end = |v: &Value| {
        range.end.as_deref().is_some_and(|end| {
            let ord = compare_text(v, end);
            let ord = if range.descending { ord.reverse() } else { ord };
            ord == Ordering::Greater
        })
    };
    let mut selected: Vec<Value> = items
        .into_iter()
        .filter(|item| !before_start(field(item, name)) && !after_end(field(item, name)))
        .collect();
    let next_range = (selected.len() > range.max).then(|| {
        selected.truncate(range.max);
        let last = text(
            selected
                .last()
                .map_or(&Value::Null, |item| field(item, name)),
        );
        format!(
            "{} ]{last}..; max={}, order={}",
            range.field,
            range.max,
            if range.descending { "desc" } else { "asc" }
        )
    });
    Ok(Page {
        items: selected,
        next_range,
    })
}

/// `item[name]`, `null` when it has none.
fn field<'a>(item: &'a Value, name: &str) -> &'a Value {
    item.get(name).unwrap_or(&Value::Null)
}

/// Numbers by value, everything else by its text.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => text(a).cmp(&text(b)),
        },
    }
}

/// A value against a bound from the header (text): numerically when both are numbers.
fn compare_text(v: &Value, bound: &str) -> Ordering {
    match (v.as_f64(), bound.parse::<f64>()) {
        (Some(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => match v {
            Value::String(s) => s.as_str().cmp(bound),
            other => other.to_string().as_str().cmp(bound),
        },
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn versions(page: &Page) -> Vec<u64> {
        page.items
            .iter()
            .map(|i| i["version"].as_u64().unwrap())
            .collect()
    }

    fn releases(n: u64) -> Vec<Value> {
        (1..=n)
            .map(|v| json!({"version": v, "id": format!("r{v:02}")}))
            .collect()
    }

    #[test]
    fn ranges_parse_as_heroku_writes_them() {
        let r = Range::parse("version ..; max=15, order=desc").unwrap();
        assert_eq!(
            r,
            Range {
                field: "version".into(),
                start: None,
                exclusive: false,
                end: None,
                max: 15,
                descending: true
            }
        );
        let r = Range::parse("id ..; max=1000;").unwrap();
        assert_eq!((r.field.as_str(), r.max, r.descending), ("id", 1000, false));
        let r = Range::parse("name ]my-app..").unwrap();
        assert_eq!((r.start.as_deref(), r.exclusive), (Some("my-app"), true));
        assert_eq!(Range::parse("id").unwrap().max, DEFAULT_MAX);
        for bad in [
            "",
            "version 1",
            "id ..; max=0",
            "id ..; max=1001",
            "id ..; order=up",
            "x y..; z",
        ] {
            let e = Range::parse(bad).unwrap_err();
            assert_eq!((e.status, e.id), (400, "bad_request"), "{bad}");
        }
    }

    #[test]
    fn pages_follow_next_range_to_the_end() {
        let first = page(
            releases(40),
            Some("version ..; max=15, order=desc"),
            &["version", "id"],
        )
        .unwrap();
        assert_eq!(versions(&first), (26..=40).rev().collect::<Vec<_>>());
        let next = first.next_range.unwrap();
        assert_eq!(next, "version ]26..; max=15, order=desc");
        let second = page(releases(40), Some(&next), &["version", "id"]).unwrap();
        assert_eq!(versions(&second), (11..=25).rev().collect::<Vec<_>>());
        let third = page(
            releases(40),
            second.next_range.as_deref(),
            &["version", "id"],
        )
        .unwrap();
        assert_eq!(versions(&third), (1..=10).rev().collect::<Vec<_>>());
        assert_eq!(third.next_range, None);
    }

    #[test]
    fn numbers_sort_by_value_and_bounds_are_inclusive() {
        let all = page(releases(12), None, &["version"]).unwrap();
        assert_eq!(versions(&all), (1..=12).collect::<Vec<_>>());
        let some = page(releases(12), Some("version 9..11"), &["version"]).unwrap();
        assert_eq!(versions(&some), vec![9, 10, 11]);
        let by_id = page(releases(3), Some("id ]r01.."), &["version", "id"]).unwrap();
        assert_eq!(versions(&by_id), vec![2, 3]);
        let e = page(releases(3), Some("name .."), &["version", "id"]).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn accept_takes_version_3_and_plain_json() {
        let mut h = HeaderMap::new();
        assert!(check_accept(&h).is_ok());
        for ok in [
            "application/vnd.heroku+json; version=3",
            "application/vnd.heroku+json; version=3.sdk",
            "application/json",
            "*/*",
        ] {
            h.insert(ACCEPT, HeaderValue::from_static(ok));
            assert!(check_accept(&h).is_ok(), "{ok}");
        }
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.heroku+json; version=2"),
        );
        assert_eq!(check_accept(&h).unwrap_err().status, 400);
        let mut h = HeaderMap::new();
        h.insert("request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("request-id", HeaderValue::from_static("bad id\""));
        assert_eq!(request_id(&h).len(), 36);
    }
}
