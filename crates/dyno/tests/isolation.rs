//! The adversarial isolation suite (privileged: run as root). Every test starts a real
//! `dyno serve` in its own lab with a victim app and an attacker app (web and worker dynos
//! each), runs one attack from inside the attacker's dynos, as the dyno's user, and checks the
//! expectation written next to it. Each test records a row for `docs/isolation.md`
//! (`isolation/doc.rs` rebuilds the doc's table from them).

mod support;

#[path = "isolation/rig.rs"]
mod rig;

#[path = "isolation/record.rs"]
mod record;

#[path = "isolation/connections.rs"]
mod connections;

#[path = "isolation/reach.rs"]
mod reach;

#[path = "isolation/forge.rs"]
mod forge;

#[path = "isolation/view.rs"]
mod view;

#[path = "isolation/syscalls.rs"]
mod syscalls;

#[path = "isolation/figures.rs"]
mod figures;

#[path = "isolation/abuse.rs"]
mod abuse;

#[path = "isolation/doc.rs"]
mod doc;
