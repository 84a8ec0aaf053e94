//! `--alive N`: the same starts again while N idle dynos run, to show what a busy host adds (each
//! alive dyno holds a network namespace bind in the host's mount table, a link, a cgroup, a
//! firewall element).

use super::*;

/// What an idle dyno runs.
const IDLE_COMMAND: &str = "exec /usr/bin/sleep 3600";

/// Idle dynos, ended and removed when dropped.
pub(super) struct Idle<'a> {
    dynos: Vec<OneShot<'a>>,
}

impl<'a> Idle<'a> {
    /// Starts `count` idle dynos one after the other; the ones started so far stay in `Idle`
    /// (to be removed) when one fails.
    pub(super) fn start(
        ctx: &Ctx,
        network: &'a SharedNetwork,
        count: usize,
    ) -> (Idle<'a>, Result<(), String>) {
        let mut idle = Idle {
            dynos: Vec::with_capacity(count),
        };
        for i in 0..count {
            let name = format!("bi{i}");
            idle.dynos.push(OneShot {
                network,
                state: StateDir(ctx.state_root.join(&name)),
                name,
                shim: None,
                cgroup: None,
            });
            let dyno = idle.dynos.last_mut().expect("just pushed");
            if let Err(e) = dyno.spawn(ctx, i, false, IDLE_COMMAND, false) {
                let why = format!("start idle dyno {}: {e}", dyno.name);
                return (idle, Err(why));
            }
        }
        // Every sandbox is built (its mounts and processes exist) before anything is measured.
        std::thread::sleep(Duration::from_millis(500));
        let ended = idle.dynos.iter_mut().find_map(|d| {
            let shim = d.shim.as_mut()?;
            matches!(shim.try_wait(), Ok(Some(_))).then(|| d.name.clone())
        });
        match ended {
            Some(name) => (idle, Err(format!("idle dyno {name} ended on its own"))),
            None => (idle, Ok(())),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.dynos.len()
    }
}

impl Drop for Idle<'_> {
    /// SIGTERM to every shim at once (each forwards it to its PID 1, which ends the dyno), then
    /// each is waited for and its network, cgroup and state dir go.
    fn drop(&mut self) {
        for shim in self.dynos.iter().filter_map(|d| d.shim.as_ref()) {
            // SAFETY: kill with a pid of our own unreaped child and a signal constant.
            unsafe { libc::kill(shim.id() as libc::pid_t, libc::SIGTERM) };
        }
        for dyno in &mut self.dynos {
            if let Some(mut shim) = dyno.shim.take() {
                let _ = shim.wait();
            }
        }
    }
}
