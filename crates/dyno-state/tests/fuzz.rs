//! Random operations with random, mostly bad, inputs, as the API layer would pass them (strings
//! parsed into the validated types, then the store call). Properties: bad input is always
//! `invalid_params`; any refused operation leaves the whole state unchanged; nothing panics.

mod common;

use common::{app, deploy, TempDir};
use dyno_state::{
    AppName, ConfigKey, ConfigValue, DrainUrl, ProcessType, Quantity, ScaleChange, SizeName,
    StateError, Store, StoreOptions, ValidationError,
};

const GOOD_APPS: &[&str] = &["fuzz-app", "other-app"];

/// A string that is sometimes valid for some field and often not.
fn arg(rng: &mut fastrand::Rng) -> String {
    const SAMPLES: &[&str] = &[
        "fuzz-app",
        "other-app",
        "web",
        "worker",
        "run",
        "PORT",
        "DYNO",
        "FOO",
        "_x",
        "1BAD",
        "0",
        "1",
        "3",
        "100",
        "101",
        "-1",
        "1e3",
        "",
        " ",
        "Standard-2X",
        "performance-m",
        "huge",
        "syslog://h.example.com:514",
        "syslog://h.example.com",
        "https://x.example/in",
        "http://x.example/",
        "v1",
        "2",
        "9",
        "a\0b",
        "ab",
        "My-App",
        "web.1",
        "x-y_z",
    ];
    match rng.u8(0..4) {
        0 | 1 => SAMPLES[rng.usize(..SAMPLES.len())].to_string(),
        2 => {
            let alphabet = b"azAZ09-_.:/ \0@\n";
            let len = rng.usize(0..40);
            (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
                .collect()
        }
        _ => "k".repeat(rng.usize(250..40_000)),
    }
}

/// What the API layer would do with three string arguments.
fn api(store: &mut Store, op: u8, a: &str, b: &str, c: &str) -> Result<(), StateError> {
    let name = AppName::parse(a)?;
    match op {
        0 => store.create_app(&name).map(drop),
        1 => store
            .config_set(&name, &[(ConfigKey::parse(b)?, ConfigValue::parse(c)?)])
            .map(drop),
        2 => store.config_unset(&name, &[ConfigKey::parse(b)?]).map(drop),
        3 => store
            .scale(
                &name,
                &[ScaleChange {
                    process_type: ProcessType::parse(b)?,
                    quantity: Some(c.parse::<Quantity>()?),
                    size: None,
                }],
            )
            .map(drop),
        4 => store
            .scale(
                &name,
                &[ScaleChange {
                    process_type: ProcessType::parse(b)?,
                    quantity: None,
                    size: Some(SizeName::parse(c)?),
                }],
            )
            .map(drop),
        5 => store.add_drain(&name, &DrainUrl::parse(b)?).map(drop),
        6 => store.remove_drain(&name, b).map(drop),
        7 => {
            let v: u32 = b
                .strip_prefix('v')
                .unwrap_or(b)
                .parse()
                .map_err(|_| ValidationError::new("release", "not a release number"))?;
            store.rollback(&name, v).map(drop)
        }
        8 => store
            .set_maintenance(&name, c.len().is_multiple_of(2))
            .map(drop),
        _ => store.destroy_app(&name).map(drop),
    }
}

/// Whether every argument `op` parses is valid (so a refusal is not about the input's form).
fn inputs_valid(op: u8, a: &str, b: &str, c: &str) -> bool {
    let name = AppName::parse(a).is_ok();
    name && match op {
        1 => ConfigKey::parse(b).is_ok() && ConfigValue::parse(c).is_ok(),
        2 => ConfigKey::parse(b).is_ok(),
        3 => ProcessType::parse(b).is_ok() && c.parse::<Quantity>().is_ok(),
        4 => ProcessType::parse(b).is_ok() && SizeName::parse(c).is_ok(),
        5 => DrainUrl::parse(b).is_ok(),
        7 => b.strip_prefix('v').unwrap_or(b).parse::<u32>().is_ok(),
        _ => true,
    }
}

#[test]
fn random_operations_with_bad_input_change_nothing() {
    let tmp = TempDir::new("fuzz");
    let options = StoreOptions {
        max_quantity: 50,
        ..StoreOptions::default()
    };
    let mut store = Store::open_with(tmp.join("data"), options).unwrap();
    for name in GOOD_APPS {
        store.create_app(&app(name)).unwrap();
        deploy(
            &mut store,
            &app(name),
            &[("web", "w"), ("worker", "k")],
            name,
        );
    }
    let seed = fastrand::u64(..);
    eprintln!("fuzz seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut ok, mut invalid, mut refused) = (0, 0, 0);
    for i in 0..3000 {
        let op = rng.u8(0..10);
        let a = if rng.u8(0..3) == 0 {
            arg(&mut rng)
        } else {
            GOOD_APPS[rng.usize(..GOOD_APPS.len())].to_string()
        };
        let (b, c) = (arg(&mut rng), arg(&mut rng));
        // Keep the two good apps alive most of the time.
        if op == 9 && GOOD_APPS.contains(&a.as_str()) && rng.u8(0..10) != 0 {
            continue;
        }
        let before = store.dump().unwrap();
        match api(&mut store, op, &a, &b, &c) {
            Ok(()) => {
                assert!(
                    inputs_valid(op, &a, &b, &c),
                    "#{i} (seed {seed}): op {op} accepted bad input {a:?} {b:?} {c:?}"
                );
                ok += 1;
            }
            Err(e) => {
                let after = store.dump().unwrap();
                assert_eq!(
                    after, before,
                    "#{i} (seed {seed}): refused op {op} ({e}) changed the state"
                );
                if !inputs_valid(op, &a, &b, &c) {
                    assert_eq!(e.kind().name(), "invalid_params", "#{i} (seed {seed}): {e}");
                    invalid += 1;
                } else {
                    assert!(
                        ["invalid_params", "not_found", "conflict"].contains(&e.kind().name()),
                        "#{i} (seed {seed}): op {op} {a:?} {b:?} {c:?}: unexpected {e}"
                    );
                    refused += 1;
                }
            }
        }
    }
    eprintln!("{ok} accepted, {invalid} invalid, {refused} refused");
    assert!(
        ok > 100 && invalid > 500 && refused > 50,
        "{ok} {invalid} {refused}"
    );
    store.integrity_check().unwrap();
}

#[test]
fn quantities_over_the_configured_maximum_are_invalid() {
    let tmp = TempDir::new("fuzz-q");
    let options = StoreOptions {
        max_quantity: 7,
        ..StoreOptions::default()
    };
    let mut store = Store::open_with(tmp.join("data"), options).unwrap();
    let a = app("qty-app");
    store.create_app(&a).unwrap();
    deploy(&mut store, &a, &[("web", "w")], "s");
    let mut rng = fastrand::Rng::with_seed(5);
    for _ in 0..300 {
        let n = rng.u32(0..=100);
        let before = store.dump().unwrap();
        let r = store.scale(
            &a,
            &[ScaleChange {
                process_type: "web".parse().unwrap(),
                quantity: Some(Quantity::try_from(n).unwrap()),
                size: None,
            }],
        );
        if n <= 7 {
            assert_eq!(r.unwrap()[0].quantity, n);
        } else {
            assert_eq!(r.unwrap_err().kind().name(), "invalid_params");
            assert_eq!(store.dump().unwrap(), before);
        }
    }
}
