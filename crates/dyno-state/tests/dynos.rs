//! Dyno rows, address leases and app destruction.

mod common;

use std::net::Ipv4Addr;

use common::{app, assert_id, deploy, new_dyno, TempDir};
use dyno_state::{DrainUrl, DynoState, DynoUpdate, Store, StoreOptions};

fn open_pool(tmp: &TempDir, pool: &str) -> Store {
    let options = StoreOptions {
        pool: pool.parse().unwrap(),
        ..StoreOptions::default()
    };
    Store::open_with(tmp.join("data"), options).unwrap()
}

fn state(s: DynoState) -> DynoUpdate {
    DynoUpdate {
        state: Some(s),
        ..DynoUpdate::default()
    }
}

#[test]
fn a_dyno_is_recorded_with_its_names_and_address_before_it_exists() {
    let tmp = TempDir::new("dynos");
    let mut store = open_pool(&tmp, "10.213.0.0/24");
    let a = app("web-app");
    store.create_app(&a).unwrap();
    let v2 = deploy(&mut store, &a, &[("web", "./web"), ("worker", "./w")], "s").version;
    let d = store.insert_dyno(&new_dyno(&a, "web", 1, v2)).unwrap();
    assert_eq!((d.name.as_str(), d.state), ("web.1", DynoState::Starting));
    assert_eq!(d.netns, format!("dyno-{}", d.net_name));
    assert_eq!(d.link, format!("dy{}", d.net_name));
    assert!(d.link.len() <= 15);
    assert_eq!(d.address, Some(Ipv4Addr::new(10, 213, 0, 1)));
    assert_eq!(d.uuid.len(), 36);
    assert_eq!(
        (d.shim_pid, d.started_at_ms, d.exit_status),
        (None, None, None)
    );
    let lease = &store.leases().unwrap()[0];
    assert_eq!(
        (lease.dyno_id, lease.owner.as_str()),
        (Some(d.id), d.net_name.as_str())
    );

    let up = store
        .update_dyno(
            d.id,
            &DynoUpdate {
                state: Some(DynoState::Up),
                shim_pid: Some(4242),
                exit_status: None,
            },
        )
        .unwrap();
    assert_eq!((up.state, up.shim_pid), (DynoState::Up, Some(4242)));
    assert!(up.started_at_ms.is_some());
    let crashed = store
        .update_dyno(
            d.id,
            &DynoUpdate {
                state: Some(DynoState::Crashed),
                exit_status: Some(1),
                ..DynoUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(
        (crashed.state, crashed.exit_status),
        (DynoState::Crashed, Some(1))
    );
    assert!(crashed.exited_at_ms.is_some());

    // A one-off, and a second formation dyno.
    let run = store.insert_dyno(&new_dyno(&a, "run", 4821, v2)).unwrap();
    assert_eq!(run.name, "run.4821");
    let w = store.insert_dyno(&new_dyno(&a, "worker", 1, v2)).unwrap();
    assert_eq!(w.address, Some(Ipv4Addr::new(10, 213, 0, 3)));
    assert_eq!(store.dynos(&a).unwrap().len(), 3);

    let before = store.dump().unwrap();
    assert_id(
        store.insert_dyno(&new_dyno(&a, "clock", 1, v2)),
        "not_found",
    );
    assert_id(store.insert_dyno(&new_dyno(&a, "web", 1, 1)), "not_found"); // v1 has no web
    assert_id(store.insert_dyno(&new_dyno(&a, "web", 1, 9)), "not_found");
    assert_id(
        store.insert_dyno(&new_dyno(&a, "web", 0, v2)),
        "invalid_params",
    );
    assert_id(
        store.insert_dyno(&new_dyno(&a, "we b", 1, v2)),
        "invalid_params",
    );
    assert_id(
        store.insert_dyno(&new_dyno(&app("ghost"), "web", 1, v2)),
        "not_found",
    );
    assert_id(store.update_dyno(999, &state(DynoState::Up)), "not_found");
    // Removal needs the teardown intent first.
    let e = assert_id(store.remove_dyno(d.id), "conflict");
    assert!(e.to_string().contains("mark it stopping"), "{e}");
    assert_eq!(store.dump().unwrap(), before);

    store
        .update_dyno(d.id, &state(DynoState::Stopping))
        .unwrap();
    let e = assert_id(store.update_dyno(d.id, &state(DynoState::Up)), "conflict");
    assert!(e.to_string().contains("being torn down"), "{e}");
    let removed = store.remove_dyno(d.id).unwrap();
    assert_eq!(removed.id, d.id);
    assert_id(store.dyno(d.id), "not_found");
    assert_eq!(
        store.leases().unwrap().len(),
        2,
        "the lease went with the row"
    );

    // Ids, and so netns and link names, are never reused, even after a reopen.
    drop(store);
    let mut store = open_pool(&tmp, "10.213.0.0/24");
    let next = store.insert_dyno(&new_dyno(&a, "web", 1, v2)).unwrap();
    assert!(next.id > w.id, "{} after {}", next.id, w.id);
    assert_ne!(next.net_name, d.net_name);
    // Round-robin goes on after .3: the freed .1 rests.
    assert_eq!(next.address, Some(Ipv4Addr::new(10, 213, 0, 4)));
}

#[test]
fn leases_go_round_robin_and_run_out_cleanly() {
    let tmp = TempDir::new("leases");
    let mut store = open_pool(&tmp, "10.213.0.0/29"); // .1 ... .6
    let a = store.lease_alloc("a").unwrap();
    let b = store.lease_alloc("b").unwrap();
    assert_eq!(
        (a, b),
        (Ipv4Addr::new(10, 213, 0, 1), Ipv4Addr::new(10, 213, 0, 2))
    );
    store.lease_release(a).unwrap();
    assert_eq!(
        store.lease_alloc("c").unwrap(),
        Ipv4Addr::new(10, 213, 0, 3)
    );
    for owner in ["d", "e", "f"] {
        store.lease_alloc(owner).unwrap();
    }
    assert_eq!(
        store.lease_alloc("g").unwrap(),
        a,
        "wrapped around to the only free one"
    );
    let before = store.dump().unwrap();
    let e = assert_id(store.lease_alloc("h"), "pool_exhausted");
    assert!(e.to_string().contains("all 6 addresses"), "{e}");
    assert_id(
        store.lease_release(Ipv4Addr::new(10, 213, 0, 7)),
        "not_found",
    );
    assert_id(
        store.lease_claim(Ipv4Addr::new(10, 213, 0, 2), "zz"),
        "conflict",
    );
    assert_id(
        store.lease_claim(Ipv4Addr::new(192, 0, 2, 1), "zz"),
        "invalid_params",
    );
    assert_id(store.lease_alloc(""), "invalid_params");
    assert_eq!(store.dump().unwrap(), before);
    store
        .lease_claim(Ipv4Addr::new(10, 213, 0, 2), "b")
        .unwrap();

    // A full pool refuses a dyno too, and records nothing of it.
    store.create_app(&app("full")).unwrap();
    let v = deploy(&mut store, &app("full"), &[("web", "w")], "s").version;
    let before = store.dump().unwrap();
    assert_id(
        store.insert_dyno(&new_dyno(&app("full"), "web", 1, v)),
        "pool_exhausted",
    );
    assert_eq!(store.dump().unwrap(), before);
}

#[test]
fn destroying_an_app_returns_what_to_tear_down() {
    let tmp = TempDir::new("destroy");
    let mut store = open_pool(&tmp, "10.213.0.0/24");
    let a = app("doomed");
    let other = app("keeper");
    store.create_app(&a).unwrap();
    store.create_app(&other).unwrap();
    let v2 = deploy(&mut store, &a, &[("web", "./web")], "s1").version;
    deploy(&mut store, &a, &[("web", "./web")], "s2");
    store.config_set(&a, &[common::kv("A", "1")]).unwrap();
    let drain = store
        .add_drain(
            &a,
            &"syslog://h.example.com:514".parse::<DrainUrl>().unwrap(),
        )
        .unwrap();
    let d1 = store.insert_dyno(&new_dyno(&a, "web", 1, v2)).unwrap();
    let d2 = store.insert_dyno(&new_dyno(&a, "web", 2, v2)).unwrap();
    deploy(&mut store, &other, &[("web", "./web")], "o1");
    let kept = store.insert_dyno(&new_dyno(&other, "web", 1, 2)).unwrap();

    let gone = store.destroy_app(&a).unwrap();
    assert_eq!(gone.name, "doomed");
    assert_eq!(gone.drains, [drain]);
    let mut slugs: Vec<String> = gone
        .slugs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    slugs.sort();
    assert_eq!(slugs, ["s1", "s2"]);
    assert_eq!(
        gone.dynos
            .iter()
            .map(|d| (d.id, d.state))
            .collect::<Vec<_>>(),
        [(d1.id, DynoState::Stopping), (d2.id, DynoState::Stopping)]
    );
    assert_id(store.app(&a), "not_found");
    assert_id(store.releases(&a), "not_found");
    // The dyno rows and leases stay until teardown is done.
    assert_eq!(store.all_dynos().unwrap().len(), 3);
    assert_eq!(store.leases().unwrap().len(), 3);
    store.remove_dyno(d1.id).unwrap();
    store.remove_dyno(d2.id).unwrap();
    assert_eq!(store.all_dynos().unwrap(), [kept]);
    assert_eq!(
        store
            .referenced_slugs()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        [store.slugs_dir().join("o1")]
    );
    assert_id(store.destroy_app(&a), "not_found");
    // The name is free again, with a fresh history.
    assert_eq!(store.create_app(&a).unwrap().current_release, 1);
    store.integrity_check().unwrap();
}
