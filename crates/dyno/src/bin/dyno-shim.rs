//! `dyno-shim`: the small binary every dyno runs, as its shim (`dyno-shim __shim STATE`), whose
//! child goes on as the dyno's PID 1 (`dyno __init` in its command line). It links only the
//! sandbox code: one copy runs per dyno, so its size is what a dyno costs in memory. `dyno`
//! itself understands the same command, for hosts that install only `dyno`.

use std::ffi::OsString;
use std::path::Path;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let code = match args.get(1).and_then(|a| a.to_str()) {
        Some("__shim") if args.len() == 3 => dyno_sandbox::shim::run(Path::new(&args[2])),
        _ => {
            eprintln!(
                "dyno-shim is started by dyno for each dyno (as its shim); it is not a command to run by hand"
            );
            2
        }
    };
    std::process::exit(code);
}
