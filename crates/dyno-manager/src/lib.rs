//! `dyno-manager`: the control plane. Procfile apps ([`procfile`]), Heroku's runtime codes
//! ([`heroku`]) and log lines ([`logs`]), the dyno lifecycle ([`lifecycle`], [`supervisor`]),
//! and `dyno up` ([`up`]).

pub mod heroku;
pub mod ids;
pub mod lifecycle;
pub mod logs;
pub mod memory;
pub mod procfile;
pub mod supervisor;
pub mod up;
