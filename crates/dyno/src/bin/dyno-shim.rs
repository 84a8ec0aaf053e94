//! `dyno-shim`: the small binary every dyno runs twice, as its shim (`dyno-shim __shim STATE`)
//! and as its PID 1 (`dyno __init …`, exec'd by the shim). It links only the sandbox code: one
//! copy runs per dyno, so its size is what a dyno costs in memory. `dyno` itself understands the
//! same two commands, for hosts that install only `dyno`.

use std::ffi::OsString;
use std::path::Path;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let code = match args.get(1).and_then(|a| a.to_str()) {
        Some("__shim") if args.len() == 3 => dyno_sandbox::shim::run(Path::new(&args[2])),
        Some("__init") => match dyno_sandbox::init::InitArgs::parse(&utf8(&args[2..])) {
            Ok(init) => dyno_sandbox::init::run(&init),
            Err(e) => {
                eprintln!("dyno-shim __init: {e}");
                2
            }
        },
        _ => {
            eprintln!(
                "dyno-shim is started by dyno for each dyno (as its shim and PID 1); it is not a command to run by hand"
            );
            2
        }
    };
    std::process::exit(code);
}

fn utf8(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}
