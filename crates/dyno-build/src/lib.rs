//! Builds, as Heroku's classic buildpack API defines them: a source archive unpacked into a
//! build directory, buildpacks run in order (`bin/detect`, `bin/compile`, `bin/release`), the
//! built directory becomes the slug. This crate knows the buildpack API, source archives and
//! the buildpacks shipped with dyno; it does not know how a build is sandboxed (the daemon runs
//! the build's script in a build dyno) nor where builds are stored.

pub mod archive;
pub mod driver;
pub mod release;
pub mod shipped;
pub mod slug_size;
