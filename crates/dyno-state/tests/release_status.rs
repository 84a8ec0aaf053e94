//! Heroku's release status (`pending` while the release phase runs, then `succeeded` or
//! `failed`), the `preboot` feature and `apps:rename`, in the store.

mod common;

use common::{app, assert_id, deploy, kv, new_dyno, ptype, slug, TempDir};
use dyno_state::{DrainUrl, Hostname, NewRelease, ReleaseChange, ReleaseStatus, Store, DB_FILE};

#[test]
fn a_pending_release_changes_nothing_until_it_succeeds() {
    let tmp = TempDir::new("pending");
    let mut store = Store::open(tmp.path()).unwrap();
    let a = app("shop");
    store.create_app(&a).unwrap();
    let v2 = deploy(&mut store, &a, &[("web", "./web")], "one");
    store.config_set(&a, &[kv("FOO", "1")]).unwrap();

    let pending = store
        .begin_release(&a, ReleaseChange::SetConfig(vec![kv("FOO", "2")]))
        .unwrap();
    assert_eq!(
        (pending.version, pending.status),
        (4, ReleaseStatus::Pending)
    );
    assert_eq!(pending.config["FOO"], "2");
    // Not released yet: config, current release and formation are the old ones.
    assert_eq!(store.config(&a).unwrap()["FOO"], "1");
    assert_eq!(store.current_release(&a).unwrap().version, 3);
    assert_eq!(store.app(&a).unwrap().current_release, 3);
    assert_eq!(
        store.releases(&a).unwrap()[0].status,
        ReleaseStatus::Pending
    );
    // One pending release at a time.
    assert_id(store.config_set(&a, &[kv("BAR", "1")]), "conflict");

    let done = store.settle_release(&a, 4, true).unwrap();
    assert_eq!(done.status, ReleaseStatus::Succeeded);
    assert_eq!(store.config(&a).unwrap()["FOO"], "2");
    assert_eq!(store.current_release(&a).unwrap().version, 4);
    // Settled once.
    assert_id(store.settle_release(&a, 4, false), "conflict");

    // A failed deploy stays in the list; the app keeps running v4 with its formation.
    let next = NewRelease {
        slug: slug(&store, "two"),
        process_types: vec![
            (ptype("web"), "./web".into()),
            (ptype("worker"), "./w".into()),
        ],
        description: "Deploy two".into(),
        default_config: Default::default(),
    };
    store
        .begin_release(&a, ReleaseChange::Deploy(next))
        .unwrap();
    let failed = store.settle_release(&a, 5, false).unwrap();
    assert_eq!(failed.status, ReleaseStatus::Failed);
    assert_eq!(store.current_release(&a).unwrap().version, 4);
    let types: Vec<String> = store
        .formation(&a)
        .unwrap()
        .into_iter()
        .map(|f| f.process_type)
        .collect();
    assert_eq!(types, ["web"]);
    let statuses: Vec<(u32, ReleaseStatus)> = store
        .releases(&a)
        .unwrap()
        .iter()
        .map(|r| (r.version, r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (5, ReleaseStatus::Failed),
            (4, ReleaseStatus::Succeeded),
            (3, ReleaseStatus::Succeeded),
            (2, ReleaseStatus::Succeeded),
            (1, ReleaseStatus::Succeeded),
        ]
    );
    // A failed release never ran: no rollback to it; the next version follows it.
    assert_id(store.rollback(&a, 5), "invalid_params");
    assert_eq!(store.rollback(&a, v2.version).unwrap().version, 6);

    // A release still pending when the daemon stopped cannot finish: it is failed on start.
    store
        .begin_release(&a, ReleaseChange::SetConfig(vec![kv("BAZ", "1")]))
        .unwrap();
    let failed = store.fail_pending_releases().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(store.release(&a, 7).unwrap().status, ReleaseStatus::Failed);
}

#[test]
fn release_content_stays_immutable() {
    let tmp = TempDir::new("immutable");
    let mut store = Store::open(tmp.path()).unwrap();
    let a = app("shop");
    store.create_app(&a).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(tmp.join(DB_FILE)).unwrap();
    let changed = conn.execute(
        "UPDATE releases SET description = 'forged' WHERE app = 'shop'",
        [],
    );
    assert!(changed.is_err(), "{changed:?}");
    let settled = conn.execute(
        "UPDATE releases SET status = 'failed' WHERE app = 'shop'",
        [],
    );
    assert!(
        settled.is_err(),
        "a succeeded release stays succeeded: {settled:?}"
    );
}

#[test]
fn preboot_is_off_until_enabled() {
    let tmp = TempDir::new("preboot");
    let mut store = Store::open(tmp.path()).unwrap();
    let a = app("shop");
    assert!(!store.create_app(&a).unwrap().preboot);
    assert!(store.set_preboot(&a, true).unwrap().preboot);
    drop(store);
    let store = Store::open(tmp.path()).unwrap();
    assert!(store.app(&a).unwrap().preboot);
}

#[test]
fn a_rename_moves_everything_and_frees_the_old_name() {
    let tmp = TempDir::new("rename");
    let mut store = Store::open(tmp.path()).unwrap();
    let (old, new, other) = (app("old-name"), app("new-name"), app("other"));
    let created = store.create_app(&old).unwrap();
    store.create_app(&other).unwrap();
    deploy(&mut store, &old, &[("web", "./web")], "one");
    store.config_set(&old, &[kv("FOO", "bar")]).unwrap();
    let drain: DrainUrl = "syslog://203.0.113.5:514".parse().unwrap();
    store.add_drain(&old, &drain).unwrap();
    let host: Hostname = "www.example.com".parse().unwrap();
    store.add_domain(&old, &host).unwrap();
    let dyno = store.insert_dyno(&new_dyno(&old, "web", 1, 3)).unwrap();
    let before = store.dump().unwrap();

    // A taken name changes nothing.
    assert_id(store.rename_app(&old, &other), "conflict");
    assert_eq!(store.dump().unwrap(), before);

    let renamed = store.rename_app(&old, &new).unwrap();
    assert_eq!(renamed.name, "new-name");
    assert_eq!(renamed.uuid, created.uuid, "the id stays");
    assert_eq!(renamed.domains, ["www.example.com"]);
    assert_eq!(renamed.current_release, 3);
    assert_id(store.app(&old), "not_found");
    assert_eq!(store.releases(&new).unwrap().len(), 3);
    assert_eq!(store.config(&new).unwrap()["FOO"], "bar");
    assert_eq!(store.formation(&new).unwrap().len(), 1);
    assert_eq!(store.drains(&new).unwrap().len(), 1);
    assert_eq!(store.dyno(dyno.id).unwrap().app, "new-name");
    store.integrity_check().unwrap();
    // Not while a release of the app is pending.
    let pending = store
        .begin_release(&new, ReleaseChange::SetConfig(vec![kv("X", "1")]))
        .unwrap();
    assert_id(store.rename_app(&new, &app("third")), "conflict");
    store.settle_release(&new, pending.version, true).unwrap();
    // The old name is free again.
    store.create_app(&old).unwrap();
    assert_eq!(store.releases(&old).unwrap().len(), 1);
}
