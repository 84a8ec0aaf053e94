//! PID 1 of a dyno (`dyno __init`): drops to the app's identity, starts the Procfile command,
//! reaps every orphan, forwards signals to every process of the dyno, and exits with the app's
//! status when the app's main process ends (taking whatever it left behind with it).

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::identity;
use crate::signals::{self, Waiter};

/// Runs the app as `uid`/`gid`; returns the exit status to exit with (128 + signal when the app
/// was killed, as shells report it).
pub fn run(uid: u32, gid: u32, command: &str) -> i32 {
    let waiter = match Waiter::install() {
        Ok(w) => w,
        Err(e) => return fail(&format!("signals: {e}")),
    };
    if let Err(e) = identity::become_app_user(uid, gid) {
        return fail(&e.to_string());
    }
    // Handlers reset to the default on exec; the mask must be emptied by hand (it is inherited,
    // and std does not clear it).
    let mut app = Command::new("/bin/bash");
    app.arg("-c").arg(command).current_dir("/app");
    // SAFETY: the closure only calls pthread_sigmask, which is async-signal-safe.
    unsafe {
        app.pre_exec(signals::unblock_all);
    }
    let app = app.spawn();
    let app = match app {
        Ok(app) => app.id() as libc::pid_t,
        Err(e) => return fail(&format!("start /bin/bash -c {command:?}: {e}")),
    };
    loop {
        let signal = waiter.next();
        if signal != libc::SIGCHLD {
            // Every process of the dyno, daemonized grandchildren included.
            signals::send(-1, signal);
            continue;
        }
        while let Some((pid, status)) = signals::reap_any() {
            if pid == app {
                // The dyno ends with its main process: nothing it left may outlive it.
                signals::send(-1, libc::SIGKILL);
                while signals::reap_any().is_some() {}
                return match signals::decode(status) {
                    Ok(code) => code,
                    Err(signal) => 128 + signal,
                };
            }
        }
    }
}

fn fail(message: &str) -> i32 {
    eprintln!("dyno init: {message}");
    127
}
