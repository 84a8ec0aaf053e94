//! `dyno-net`: every dyno's own network namespace and interface, taken away again without a trace.
//!
//! Layout: [`netlink`] is our small synchronous netlink client; [`ns`] the only place that
//! switches namespaces; [`names`] validates dyno names and derives every name and MAC from them;
//! [`ipam`] hands out the /32s; [`dyno`] sets a dyno's network up and tears it down; [`nft`]
//! programs the static firewall; [`diag`] reads a dyno's listeners through inet_diag; [`lab`]
//! builds a throwaway "host" namespace for tests and benchmarks.

pub mod attach;
pub mod diag;
pub mod dyno;
pub mod inspect;
pub mod ipam;
pub mod lab;
pub mod names;
pub mod netlink;
pub mod network;
pub mod nft;
pub mod ns;
pub mod probe;
pub mod reaper;
