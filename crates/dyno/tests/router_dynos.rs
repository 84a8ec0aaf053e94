//! The router end to end through `dyno up` (privileged: run as root): every backend is a real
//! app in a real dyno (`router_dynos/app.py`, scripted by path), every client a socket in the
//! lab host. Each test asserts the status, the body where it means something, and the router's
//! log line in Heroku's exact shape (request ids and timings masked).

mod support;

#[path = "router_dynos/rig.rs"]
mod rig;

#[path = "router_dynos/requests.rs"]
mod requests;

#[path = "router_dynos/hcodes.rs"]
mod hcodes;

#[path = "router_dynos/streams.rs"]
mod streams;
