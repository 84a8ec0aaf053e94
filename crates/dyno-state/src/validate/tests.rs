//! Table tests for every rule, and random strings checked against a reference predicate that
//! restates each rule as its regular expression would.

use super::*;

fn ok<T: FromStr<Err = ValidationError>>(s: &str) -> T {
    s.parse()
        .unwrap_or_else(|e: ValidationError| panic!("{s:?} should be valid: {e}"))
}

fn err<T: FromStr<Err = ValidationError> + fmt::Debug>(s: &str, needle: &str) {
    let e = s
        .parse::<T>()
        .expect_err(&format!("{} should be refused", shown(s)));
    assert!(
        e.message.contains(needle),
        "error for {s:?} should contain {needle:?}: {}",
        e.message
    );
}

/// `^[a-z][a-z0-9-]{2,29}$`, spelled out.
fn app_name_rule(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn random_string(rng: &mut fastrand::Rng, alphabet: &[u8], max_len: usize) -> String {
    let len = rng.usize(0..=max_len);
    (0..len)
        .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
        .collect()
}

const NASTY: &[u8] = b"aAzZ09-_.:/ \t\n\0@[]%?#\x7f";

#[test]
fn app_names() {
    for s in ["abc", "my-app-2", "a23456789012345678901234567890", "a--"] {
        assert_eq!(ok::<AppName>(s).as_str(), s);
    }
    err::<AppName>("ab", "too short");
    err::<AppName>("a234567890123456789012345678901", "too long");
    err::<AppName>("1app", "start with a lowercase letter");
    err::<AppName>("-app", "start with a lowercase letter");
    err::<AppName>("My-app", "start with a lowercase letter");
    err::<AppName>("my_app", "other than a-z");
    err::<AppName>("myäpp", "other than a-z");
    err::<AppName>("", "too short");
    let e = "x".parse::<AppName>().unwrap_err();
    assert!(e.message.contains("like `my-app-2`"), "{e}");
}

#[test]
fn app_names_match_the_regex_on_random_input() {
    let mut rng = fastrand::Rng::with_seed(0xa99);
    let alphabet = b"abcxyz0189-_A.";
    for _ in 0..20_000 {
        let s = random_string(&mut rng, alphabet, 34);
        assert_eq!(AppName::parse(&s).is_ok(), app_name_rule(&s), "{s:?}");
    }
}

#[test]
fn process_types() {
    for s in [
        "web",
        "worker",
        "Release_phase-2",
        "x",
        "123456789012345678901234567890",
    ] {
        assert_eq!(ok::<ProcessType>(s).as_str(), s);
    }
    err::<ProcessType>("run", "reserved for one-off");
    err::<ProcessType>("", "cannot be empty");
    err::<ProcessType>("1234567890123456789012345678901", "too long");
    err::<ProcessType>("web.1", "letters, digits");
    err::<ProcessType>("we b", "letters, digits");
    assert!(ok::<ProcessType>("web").is_web());
    assert!(!ok::<ProcessType>("Web").is_web());
}

#[test]
fn process_types_match_the_regex_on_random_input() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..20_000 {
        let s = random_string(&mut rng, NASTY, 33);
        let rule = !s.is_empty()
            && s.len() <= 30
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            && s != "run";
        assert_eq!(ProcessType::parse(&s).is_ok(), rule, "{s:?}");
    }
}

#[test]
fn config_keys() {
    for s in ["DATABASE_URL", "_x", "a1", "Port", "PORT_NUMBER"] {
        assert_eq!(ok::<ConfigKey>(s).as_str(), s);
    }
    err::<ConfigKey>("PORT", "set by the platform");
    err::<ConfigKey>("DYNO", "set by the platform");
    err::<ConfigKey>("", "cannot be empty");
    err::<ConfigKey>("1ABC", "not starting with a digit");
    err::<ConfigKey>("A-B", "letters, digits and '_'");
    err::<ConfigKey>("A=B", "letters, digits and '_'");
    err::<ConfigKey>(&"K".repeat(256), "too long");
    ok::<ConfigKey>(&"K".repeat(255));
}

#[test]
fn config_keys_match_the_regex_on_random_input() {
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..20_000 {
        let s = random_string(&mut rng, b"AZaz09_-=. \0P", 8);
        let rule = !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
            && s != "PORT"
            && s != "DYNO";
        assert_eq!(ConfigKey::parse(&s).is_ok(), rule, "{s:?}");
    }
}

#[test]
fn config_values() {
    ok::<ConfigValue>("");
    ok::<ConfigValue>("postgres://u:p@h/db?x=1 y\nz ünïcode");
    ok::<ConfigValue>(&"v".repeat(32 * 1024));
    err::<ConfigValue>(&"v".repeat(32 * 1024 + 1), "at most 32768 bytes");
    err::<ConfigValue>("a\0b", "NUL");
}

#[test]
fn quantities() {
    assert_eq!(ok::<Quantity>("0").get(), 0);
    assert_eq!(ok::<Quantity>("100").get(), 100);
    assert_eq!(ok::<Quantity>(" 3 ").get(), 3);
    err::<Quantity>("101", "over the limit of 100");
    err::<Quantity>("-1", "not a whole number");
    err::<Quantity>("1.5", "not a whole number");
    err::<Quantity>("", "not a whole number");
    err::<Quantity>("99999999999999999999", "not a whole number");
    assert!(Quantity::parse_with_max("5", 4).is_err());
    assert!(Quantity::parse_with_max("500", 1000).is_ok());
    assert!(Quantity::try_from(101u32).is_err());
    let q: Quantity = serde_json::from_str("7").unwrap();
    assert_eq!(q.get(), 7);
    assert!(serde_json::from_str::<Quantity>("700").is_err());
}

#[test]
fn sizes() {
    assert_eq!(ok::<SizeName>("standard-2x").as_str(), "Standard-2X");
    assert_eq!(ok::<SizeName>("performance-m").as_str(), "Performance-M");
    assert_eq!(SizeName::default().as_str(), "Standard-1X");
    err::<SizeName>("huge", "choose one of Eco, Basic, Standard-1X");
    err::<SizeName>("", "no dyno size");
}

#[test]
fn drain_urls() {
    let u = ok::<DrainUrl>("syslog+tls://logs.example.com:6514");
    let t = u.target();
    assert_eq!(
        (t.scheme, t.host.as_str(), t.port),
        (DrainScheme::SyslogTls, "logs.example.com", 6514)
    );
    let t = ok::<DrainUrl>("SYSLOG://192.0.2.7:514/").target();
    assert_eq!((t.scheme, t.port), (DrainScheme::Syslog, 514));
    assert_eq!(
        ok::<DrainUrl>("Syslog://[2001:db8::1]:514").as_str(),
        "syslog://[2001:db8::1]:514"
    );
    let t = ok::<DrainUrl>("https://user:pa55@logs.example.com/drain?token=abc").target();
    assert_eq!(
        (t.scheme, t.host.as_str(), t.port),
        (DrainScheme::Https, "logs.example.com", 443)
    );
    assert_eq!(ok::<DrainUrl>("https://h.example:8443").target().port, 8443);

    err::<DrainUrl>("http://logs.example.com/", "use https");
    err::<DrainUrl>("ftp://logs.example.com/", "unsupported drain scheme");
    err::<DrainUrl>("logs.example.com:514", "is not a URL");
    err::<DrainUrl>("syslog://logs.example.com", "needs a port");
    err::<DrainUrl>("syslog://logs.example.com:0", "from 1 to 65535");
    err::<DrainUrl>("syslog://logs.example.com:65536", "from 1 to 65535");
    err::<DrainUrl>("syslog://logs.example.com:5x", "from 1 to 65535");
    err::<DrainUrl>("syslog://u@logs.example.com:514", "no user or password");
    err::<DrainUrl>("syslog://logs.example.com:514/path", "only host:port");
    err::<DrainUrl>("https:///path", "no host");
    err::<DrainUrl>("https://-bad-.example/", "not a valid host name");
    err::<DrainUrl>("https://256.1.1.1/", "not an IPv4 address");
    err::<DrainUrl>("https://[zz::1]/", "not an IPv6 address");
    err::<DrainUrl>("https://a.example/ b", "spaces, control");
    err::<DrainUrl>(
        &format!("https://a.example/{}", "x".repeat(2048)),
        "too long",
    );
    // Every refusal says what to write instead.
    let e = "nope".parse::<DrainUrl>().unwrap_err();
    assert!(e.message.contains("syslog+tls://host:port"), "{e}");
}

#[test]
fn random_drain_urls_never_panic_and_valid_ones_round_trip() {
    let mut rng = fastrand::Rng::with_seed(3);
    let prefixes = ["syslog://", "syslog+tls://", "https://", "http://", ""];
    for _ in 0..20_000 {
        let s = format!(
            "{}{}",
            prefixes[rng.usize(..prefixes.len())],
            random_string(&mut rng, b"ab.example:5140[]@/?-", 24)
        );
        if let Ok(u) = DrainUrl::parse(&s) {
            let again = DrainUrl::parse(u.as_str()).expect("a valid URL stays valid");
            assert_eq!(again, u);
            let t = u.target();
            assert!(t.port > 0 && !t.host.is_empty(), "{s:?}");
        }
    }
}

#[test]
fn serde_validates() {
    let name: AppName = serde_json::from_str("\"my-app\"").unwrap();
    assert_eq!(serde_json::to_string(&name).unwrap(), "\"my-app\"");
    let e = serde_json::from_str::<AppName>("\"My App\"").unwrap_err();
    assert!(e.to_string().contains("app name"), "{e}");
}
