//! Apps, releases, config vars, formation, maintenance and drains: happy paths and errors.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{app, assert_id, deploy, kv, ptype, slug, TempDir};
use dyno_state::{
    ConfigKey, DrainUrl, NewRelease, Quantity, ScaleChange, SizeName, Store, StoreOptions,
};

fn open(tmp: &TempDir) -> Store {
    Store::open(tmp.join("data")).unwrap()
}

#[test]
fn open_creates_a_private_data_dir_with_a_wal_database() {
    let tmp = TempDir::new("open");
    let store = open(&tmp);
    let mode = std::fs::metadata(tmp.join("data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(tmp.join("data/state.db").is_file());
    assert!(store.slugs_dir().is_dir());
    assert!(!store.is_read_only());
    store.integrity_check().unwrap();
    let conn = rusqlite::Connection::open(tmp.join("data/state.db")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, dyno_state::schema::latest());
}

#[test]
fn one_daemon_per_data_dir() {
    let tmp = TempDir::new("lock");
    let store = open(&tmp);
    let e = assert_id(Store::open(tmp.join("data")), "locked");
    assert!(
        e.to_string().contains("in use by another dyno daemon"),
        "{e}"
    );
    drop(store);
    open(&tmp);
}

#[test]
fn a_newer_schema_is_refused() {
    let tmp = TempDir::new("schema");
    drop(open(&tmp));
    let conn = rusqlite::Connection::open(tmp.join("data/state.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let e = assert_id(Store::open(tmp.join("data")), "schema_too_new");
    assert!(e.to_string().contains("run the newer dyno"), "{e}");
}

#[test]
fn a_store_of_the_first_schema_gives_its_apps_and_account_ids() {
    let tmp = TempDir::new("v1");
    std::fs::create_dir_all(tmp.join("data")).unwrap();
    let conn = rusqlite::Connection::open(tmp.join("data/state.db")).unwrap();
    conn.execute_batch(dyno_state::schema::MIGRATIONS[0])
        .unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    for name in ["alpha", "beta"] {
        conn.execute(
            "INSERT INTO apps (name, created_at, stack) VALUES (?1, 0, 'dyno-1')",
            [name],
        )
        .unwrap();
    }
    drop(conn);
    let store = open(&tmp);
    let apps = store.list_apps().unwrap();
    let ids: Vec<&str> = apps.iter().map(|a| a.uuid.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");
    }
    assert_eq!(
        store.app_by_uuid(&ids[1].to_uppercase()).unwrap().name,
        "beta"
    );
    let account = store.account_uuid().unwrap();
    assert_eq!(account.len(), 36);
    assert_eq!(account, store.account_uuid().unwrap());
}

#[test]
fn domains_belong_to_one_app_and_go_with_it() {
    let tmp = TempDir::new("domains");
    let mut store = open(&tmp);
    let (a, b) = (app("alpha"), app("beta"));
    store.create_app(&a).unwrap();
    store.create_app(&b).unwrap();
    let www = dyno_state::Hostname::parse("www.example.test").unwrap();
    let api = dyno_state::Hostname::parse("api.example.test").unwrap();
    store.add_domain(&a, &www).unwrap();
    let with_both = store.add_domain(&a, &api).unwrap();
    assert_eq!(with_both.domains, ["api.example.test", "www.example.test"]);
    // Again for the same app: nothing changes; for another app: refused.
    assert_eq!(store.add_domain(&a, &www).unwrap().domains.len(), 2);
    let before = store.dump().unwrap();
    let e = assert_id(store.add_domain(&b, &www), "conflict");
    assert!(e.to_string().contains("another app"), "{e}");
    assert_id(store.remove_domain(&b, &www), "not_found");
    assert_eq!(store.dump().unwrap(), before);
    assert_eq!(store.domains_added(&a).unwrap().len(), 2);
    assert_eq!(
        store.remove_domain(&a, &api).unwrap().domains,
        ["www.example.test"]
    );
    store.destroy_app(&a).unwrap();
    // The name is free again once its app is gone.
    assert_eq!(
        store.add_domain(&b, &www).unwrap().domains,
        ["www.example.test"]
    );
}

#[test]
fn apps_are_created_listed_and_refused_twice() {
    let tmp = TempDir::new("apps");
    let mut store = open(&tmp);
    let a = store.create_app(&app("zeta")).unwrap();
    assert_eq!((a.name.as_str(), a.current_release), ("zeta", 1));
    assert!(!a.maintenance && !a.metrics_enabled);
    assert_eq!(store.app_by_uuid(&a.uuid).unwrap().name, "zeta");
    assert_id(
        store.app_by_uuid("00000000-0000-4000-8000-000000000000"),
        "not_found",
    );
    store.create_app(&app("alpha")).unwrap();
    let names: Vec<String> = store
        .list_apps()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);
    let e = assert_id(store.create_app(&app("zeta")), "conflict");
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = assert_id(store.app(&app("nope")), "not_found");
    assert!(e.to_string().contains("no app named nope"), "{e}");
    let releases = store.releases(&app("zeta")).unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].description, "Initial release");
    assert!(releases[0].slug.is_none());
    // Survives a reopen.
    drop(store);
    assert_eq!(open(&tmp).list_apps().unwrap().len(), 2);
}

#[test]
fn deploys_number_releases_and_copy_the_config() {
    let tmp = TempDir::new("deploy");
    let mut store = open(&tmp);
    let a = app("shop");
    store.create_app(&a).unwrap();
    store
        .config_set(&a, &[kv("DATABASE_URL", "postgres://db")])
        .unwrap(); // v2
    let v3 = deploy(
        &mut store,
        &a,
        &[("web", "./web"), ("worker", "./work")],
        "abc123",
    );
    assert_eq!(v3.version, 3);
    assert_eq!(v3.description, "Deploy abc123");
    assert_eq!(v3.config["DATABASE_URL"], "postgres://db");
    assert_eq!(v3.process_types["worker"], "./work");
    assert!(v3.slug.as_ref().unwrap().digest.starts_with("sha256:"));
    let v4 = deploy(&mut store, &a, &[("web", "./web2")], "def456");
    assert_eq!(v4.version, 4);
    let versions: Vec<u32> = store
        .releases(&a)
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, [4, 3, 2, 1], "newest first");
    assert_eq!(store.current_release(&a).unwrap(), v4);
    assert_eq!(store.release(&a, 3).unwrap(), v3);
    assert_id(store.release(&a, 9), "not_found");
    assert_eq!(store.app(&a).unwrap().current_release, 4);
}

#[test]
fn deploy_errors_change_nothing() {
    let tmp = TempDir::new("deploy-err");
    let mut store = open(&tmp);
    let a = app("shop");
    store.create_app(&a).unwrap();
    let before = store.dump().unwrap();
    let the_slug = slug(&store, "x");
    let bad = |types: Vec<(&str, &str)>, description: &str| NewRelease {
        slug: the_slug.clone(),
        process_types: types
            .into_iter()
            .map(|(t, c)| (ptype(t), c.to_string()))
            .collect(),
        description: description.into(),
        default_config: Default::default(),
    };
    let cases = [
        bad(vec![], "Deploy x"),
        bad(vec![("web", "")], "Deploy x"),
        bad(vec![("web", "a\nb")], "Deploy x"),
        bad(vec![("web", "a"), ("web", "b")], "Deploy x"),
        bad(vec![("web", "a")], ""),
        bad(vec![("web", "a")], "two\nlines"),
    ];
    for release in cases {
        assert_id(store.create_release(&a, release), "invalid_params");
    }
    let ok = bad(vec![("web", "a")], "Deploy x");
    assert_id(store.create_release(&app("ghost"), ok), "not_found");
    assert_eq!(store.dump().unwrap(), before);
    assert!(dyno_state::Slug::new("relative/path", &"a".repeat(64)).is_err());
    assert!(dyno_state::Slug::new("/abs", "sha256:xyz").is_err());
}

#[test]
fn config_changes_are_releases() {
    let tmp = TempDir::new("config");
    let mut store = open(&tmp);
    let a = app("cfg-app");
    store.create_app(&a).unwrap();
    let v2 = deploy(&mut store, &a, &[("web", "./web")], "s1");
    let v3 = store
        .config_set(&a, &[kv("FOO", "1"), kv("BAR", "2"), kv("FOO", "3")])
        .unwrap();
    assert_eq!(v3.version, 3);
    assert_eq!(v3.description, "Set FOO, BAR config vars");
    assert_eq!(v3.slug, v2.slug, "config changes keep the current slug");
    assert_eq!(v3.process_types, v2.process_types);
    assert_eq!(
        v3.config["FOO"], "3",
        "the last value of a repeated key wins"
    );
    let v4 = store
        .config_unset(&a, &["FOO".parse().unwrap(), "NOPE".parse().unwrap()])
        .unwrap();
    assert_eq!(v4.description, "Remove FOO config vars");
    let config = store.config(&a).unwrap();
    assert_eq!(config.len(), 1);
    assert_eq!(config["BAR"], "2");
    assert_eq!(v4.config, config);

    let before = store.dump().unwrap();
    let e = assert_id(
        store.config_unset(&a, &["NOPE".parse().unwrap()]),
        "not_found",
    );
    assert!(e.to_string().contains("NOPE is not set"), "{e}");
    assert_id(store.config_set(&a, &[]), "invalid_params");
    assert_id(store.config_unset(&a, &[]), "invalid_params");
    assert_id(
        store.config_set(&app("ghost"), &[kv("A", "b")]),
        "not_found",
    );
    assert_eq!(store.dump().unwrap(), before);
    assert!("PORT".parse::<ConfigKey>().is_err());
}

#[test]
fn rollback_is_a_new_release_with_the_old_slug_and_config() {
    let tmp = TempDir::new("rollback");
    let mut store = open(&tmp);
    let a = app("roll");
    store.create_app(&a).unwrap();
    let v2 = deploy(
        &mut store,
        &a,
        &[("web", "./web"), ("clock", "./clock")],
        "old",
    );
    let v3 = store.config_set(&a, &[kv("MODE", "old")]).unwrap();
    deploy(&mut store, &a, &[("web", "./web-new")], "new"); // v4
    store
        .config_set(&a, &[kv("MODE", "new"), kv("EXTRA", "1")])
        .unwrap(); // v5
    store.config_set(&a, &[kv("MORE", "1")]).unwrap(); // v6
    let v7 = store.rollback(&a, 3).unwrap();
    assert_eq!(v7.version, 7);
    assert_eq!(v7.description, "Rollback to v3");
    assert_eq!(v7.slug, v2.slug);
    assert_eq!(v7.process_types, v3.process_types);
    assert_eq!(v7.config, v3.config);
    assert_eq!(
        store.config(&a).unwrap(),
        v3.config,
        "config vars go back too"
    );
    // The formation follows the rolled-back Procfile: clock is back (at 0).
    let types: Vec<String> = store
        .formation(&a)
        .unwrap()
        .into_iter()
        .map(|f| f.process_type)
        .collect();
    assert_eq!(types, ["clock", "web"]);
    // Releases are immutable: v3 is untouched, and SQL refuses to change it.
    assert_eq!(store.release(&a, 3).unwrap(), v3);
    let before = store.dump().unwrap();
    let e = assert_id(store.rollback(&a, 42), "not_found");
    assert!(e.to_string().contains("no release v42"), "{e}");
    assert_eq!(store.dump().unwrap(), before);
    drop(store);
    let conn = rusqlite::Connection::open(tmp.join("data/state.db")).unwrap();
    let err = conn
        .execute(
            "UPDATE releases SET description = 'x' WHERE version = 3",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
}

fn change(t: &str, q: Option<u32>, size: Option<&str>) -> ScaleChange {
    ScaleChange {
        process_type: ptype(t),
        quantity: q.map(|q| Quantity::try_from(q).unwrap()),
        size: size.map(|s| s.parse::<SizeName>().unwrap()),
    }
}

#[test]
fn scale_and_resize_within_the_procfile() {
    let tmp = TempDir::new("scale");
    let options = StoreOptions {
        max_quantity: 5,
        ..StoreOptions::default()
    };
    let mut store = Store::open_with(tmp.join("data"), options).unwrap();
    let a = app("scaler");
    store.create_app(&a).unwrap();
    let e = assert_id(
        store.scale(&a, &[change("web", Some(1), None)]),
        "not_found",
    );
    assert!(e.to_string().contains("deploy it first"), "{e}");
    deploy(&mut store, &a, &[("web", "./web"), ("worker", "./w")], "s");
    let f = store.formation(&a).unwrap();
    assert_eq!(
        f.iter()
            .map(|e| (e.process_type.as_str(), e.quantity, e.size.as_str()))
            .collect::<Vec<_>>(),
        [("web", 1, "Standard-1X"), ("worker", 0, "Standard-1X")],
        "a first deploy runs one web dyno"
    );
    let f = store
        .scale(
            &a,
            &[
                change("web", Some(3), None),
                change("worker", Some(1), Some("standard-2x")),
            ],
        )
        .unwrap();
    assert_eq!(
        (f[0].quantity, f[1].quantity, f[1].size.as_str()),
        (3, 1, "Standard-2X")
    );
    let f = store
        .scale(&a, &[change("web", None, Some("Performance-M"))])
        .unwrap();
    assert_eq!((f[0].quantity, f[0].size.as_str()), (3, "Performance-M"));

    let before = store.dump().unwrap();
    // An unknown type anywhere refuses the whole change.
    let e = assert_id(
        store.scale(
            &a,
            &[change("web", Some(0), None), change("clock", Some(1), None)],
        ),
        "not_found",
    );
    assert!(
        e.to_string()
            .contains("no such process type clock in Procfile"),
        "{e}"
    );
    assert!(e.to_string().contains("web, worker"), "{e}");
    let e = assert_id(
        store.scale(&a, &[change("web", Some(6), None)]),
        "invalid_params",
    );
    assert!(e.to_string().contains("limit of 5"), "{e}");
    assert_id(store.scale(&a, &[]), "invalid_params");
    assert_id(
        store.scale(&a, &[change("web", None, None)]),
        "invalid_params",
    );
    assert_id(
        store.scale(&app("ghost"), &[change("web", Some(1), None)]),
        "not_found",
    );
    assert_eq!(
        store.dump().unwrap(),
        before,
        "failed scales change nothing"
    );

    // A deploy without worker drops its row; a new type starts at 0; web keeps its scale.
    deploy(&mut store, &a, &[("web", "./web"), ("clock", "./c")], "s2");
    let f = store.formation(&a).unwrap();
    assert_eq!(
        f.iter()
            .map(|e| (e.process_type.as_str(), e.quantity))
            .collect::<Vec<_>>(),
        [("clock", 0), ("web", 3)]
    );
    // Config releases leave the formation alone.
    store.config_set(&a, &[kv("X", "1")]).unwrap();
    assert_eq!(store.formation(&a).unwrap(), f);
}

#[test]
fn maintenance_and_metrics_flags() {
    let tmp = TempDir::new("flags");
    let mut store = open(&tmp);
    let a = app("flags");
    store.create_app(&a).unwrap();
    assert!(store.set_maintenance(&a, true).unwrap().maintenance);
    assert!(store.app(&a).unwrap().maintenance);
    assert!(!store.set_maintenance(&a, false).unwrap().maintenance);
    assert!(store.set_metrics_enabled(&a, true).unwrap().metrics_enabled);
    assert!(store.app(&a).unwrap().metrics_enabled);
    assert!(
        !store
            .set_metrics_enabled(&a, false)
            .unwrap()
            .metrics_enabled
    );
    // The id stays with the app across changes, and another app has another.
    let id = store.app(&a).unwrap().id;
    let b = store.create_app(&app("other")).unwrap();
    assert_ne!(b.id, id);
    assert_eq!(store.set_maintenance(&a, false).unwrap().id, id);
    assert_id(store.set_maintenance(&app("ghost"), true), "not_found");
    assert_id(store.set_metrics_enabled(&app("ghost"), true), "not_found");
}

#[test]
fn drains_are_added_listed_and_removed() {
    let tmp = TempDir::new("drains");
    let mut store = open(&tmp);
    let a = app("logs");
    store.create_app(&a).unwrap();
    let u1: DrainUrl = "syslog+tls://logs.example.com:6514".parse().unwrap();
    let u2: DrainUrl = "https://user:pw@logs.example.com/in".parse().unwrap();
    let d1 = store.add_drain(&a, &u1).unwrap();
    let d2 = store.add_drain(&a, &u2).unwrap();
    assert!(
        d1.token.starts_with("d.") && d1.token.len() == 38,
        "{}",
        d1.token
    );
    assert_ne!(d1.token, d2.token);
    assert_eq!(store.drains(&a).unwrap(), [d1.clone(), d2.clone()]);
    let before = store.dump().unwrap();
    let e = assert_id(store.add_drain(&a, &u1), "conflict");
    assert!(e.to_string().contains("already drains to"), "{e}");
    assert_id(store.remove_drain(&a, "d.nope"), "not_found");
    assert_id(store.add_drain(&app("ghost"), &u1), "not_found");
    assert_id(store.drains(&app("ghost")), "not_found");
    assert_eq!(store.dump().unwrap(), before);
    assert_eq!(store.remove_drain(&a, u1.as_str()).unwrap(), d1);
    assert_eq!(store.remove_drain(&a, &d2.token).unwrap(), d2);
    assert!(store.drains(&a).unwrap().is_empty());
}
