//! Builds and buildpack installations: one pending build per app, a status that settles once,
//! buildpacks replaced as a whole, all of it gone with the app and kept across a rename.

mod common;

use common::{app, TempDir};
use dyno_error::ErrorKind;
use dyno_state::{BuildStatus, NewBuild, Store};

fn new_build<'a>(version: &'a str, buildpacks: &'a [String]) -> NewBuild<'a> {
    NewBuild {
        source_url: "http://127.0.0.1/sources/abc",
        source_version: Some(version),
        buildpacks,
    }
}

#[test]
fn one_pending_build_per_app_and_a_status_that_settles_once() {
    let tmp = TempDir::new("builds-pending");
    let mut store = Store::open(tmp.join("data")).unwrap();
    let (a, b) = (app("build-a"), app("build-b"));
    store.create_app(&a).unwrap();
    store.create_app(&b).unwrap();

    let first = store.start_build(&a, new_build("c0ffee", &[])).unwrap();
    assert_eq!(first.status, BuildStatus::Pending);
    assert_eq!(first.source_version.as_deref(), Some("c0ffee"));
    let second = store.start_build(&a, new_build("beef", &[])).unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Conflict);
    assert!(second.to_string().contains(&first.id), "{second}");
    // Another app builds meanwhile.
    store.start_build(&b, new_build("beef", &[])).unwrap();
    assert_eq!(store.pending_builds().unwrap().len(), 2);

    let ran = ["file:///bp/python".to_string()];
    let done = store
        .finish_build(&first.id, BuildStatus::Succeeded, Some(3), &ran)
        .unwrap();
    assert_eq!(
        (done.status, done.release_version, done.buildpacks.clone()),
        (BuildStatus::Succeeded, Some(3), ran.to_vec())
    );
    // Settled: a second finish changes nothing.
    let again = store
        .finish_build(&first.id, BuildStatus::Failed, None, &[])
        .unwrap();
    assert_eq!(again, done);
    assert_eq!(
        store
            .build_by_output_secret(&first.output_secret)
            .unwrap()
            .id,
        first.id
    );
    // The next build of the app may start now.
    store.start_build(&a, new_build("beef", &[])).unwrap();
    assert_eq!(store.builds(&a).unwrap().len(), 2);
    // Another app's build is not found through this one.
    let other = store.builds(&b).unwrap().remove(0);
    assert_eq!(
        store.build(&a, &other.id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn buildpacks_are_replaced_whole_and_go_with_the_app() {
    let tmp = TempDir::new("builds-buildpacks");
    let mut store = Store::open(tmp.join("data")).unwrap();
    let a = app("bp-app");
    store.create_app(&a).unwrap();
    assert!(store.buildpacks(&a).unwrap().is_empty());
    let urls = vec![
        "https://example.com/a.tgz".to_string(),
        "/srv/bp/b".to_string(),
    ];
    assert_eq!(store.set_buildpacks(&a, &urls).unwrap(), urls);
    assert_eq!(store.buildpacks(&a).unwrap(), urls);
    assert_eq!(store.set_buildpacks(&a, &urls[1..]).unwrap(), &urls[1..]);
    store.start_build(&a, new_build("1", &urls)).unwrap();
    store.destroy_app(&a).unwrap();
    store.create_app(&a).unwrap();
    assert!(store.buildpacks(&a).unwrap().is_empty());
    assert!(store.builds(&a).unwrap().is_empty());
}
