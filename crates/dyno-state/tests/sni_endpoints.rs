//! SNI endpoints (an app's certificates and keys): stored as given, listed, replaced, removed,
//! kept across a reopen, gone with their app.

mod common;

use common::{app, TempDir};
use dyno_error::ErrorKind;
use dyno_state::Store;

fn open(tmp: &TempDir) -> Store {
    Store::open(tmp.join("data")).unwrap()
}

#[test]
fn endpoints_are_added_listed_updated_and_removed_per_app() {
    let tmp = TempDir::new("sni-endpoints");
    let mut store = open(&tmp);
    let (a, b) = (app("web-a"), app("web-b"));
    store.create_app(&a).unwrap();
    store.create_app(&b).unwrap();

    let first = store.add_sni_endpoint(&a, "CHAIN-1", "KEY-1").unwrap();
    assert_eq!(first.app, "web-a");
    assert!(first.name.starts_with("sni-"), "{}", first.name);
    assert_eq!(
        (first.certificate_chain.as_str(), first.private_key.as_str()),
        ("CHAIN-1", "KEY-1")
    );
    let second = store.add_sni_endpoint(&a, "CHAIN-2", "KEY-2").unwrap();
    assert_ne!(first.id, second.id);
    assert_ne!(first.name, second.name);
    assert_eq!(
        store.sni_endpoints(&a).unwrap(),
        [first.clone(), second.clone()]
    );
    assert!(store.sni_endpoints(&b).unwrap().is_empty());

    // Named by name or id; another app's endpoint is not found through this one.
    let updated = store
        .update_sni_endpoint(&a, &first.name, "CHAIN-3", "KEY-3")
        .unwrap();
    assert_eq!(
        (updated.id.as_str(), updated.certificate_chain.as_str()),
        (first.id.as_str(), "CHAIN-3")
    );
    assert!(updated.updated_at_ms >= first.updated_at_ms);
    let err = store.remove_sni_endpoint(&b, &first.id).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("heroku certs -a web-b"), "{err}");
    assert_eq!(store.remove_sni_endpoint(&a, &second.id).unwrap(), second);
    assert_eq!(
        store.sni_endpoints(&a).unwrap(),
        std::slice::from_ref(&updated)
    );

    // Kept across a reopen; gone with the app.
    drop(store);
    let mut store = open(&tmp);
    assert_eq!(store.all_sni_endpoints().unwrap(), [updated]);
    store.destroy_app(&a).unwrap();
    assert!(store.all_sni_endpoints().unwrap().is_empty());
    let err = store.add_sni_endpoint(&a, "C", "K").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}
