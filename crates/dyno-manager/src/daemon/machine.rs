//! What the daemon runs its dynos on ([`Machine`]): the Linux host ([`LinuxMachine`]: one
//! network, the dyno cgroups, LXCFS), or in unit tests the supervisor's fake host, so that
//! convergence, preboot and destroy are tested without root.

use super::*;
use dyno_supervisor::{DynoHost, LinuxHost};

pub trait Machine: Send + Sync {
    /// Where `app`'s dynos run (their system-call profile is the app's).
    fn host_for(&self, app: &str, options: &DaemonOptions) -> Arc<dyn DynoHost>;
    /// The dyno cgroups (runtime metrics, CPU placement); `None`: nothing to measure by.
    fn cgroups(&self) -> Option<&Cgroups>;
    /// Notices dynos whose network was changed under them; `None`: nobody looks.
    fn netwatch(&self) -> Option<Arc<NetWatch>>;
    /// Every dyno of the daemon has stopped: what they shared goes, unless others use it.
    fn shut_down(&self);
}

/// The Linux host, as `Daemon::open` found and prepared it.
pub(super) struct LinuxMachine {
    pub(super) network: SharedNetwork,
    pub(super) cgroups: Option<Cgroups>,
    /// The LXCFS mount the dynos' `/proc` view comes from.
    pub(super) proc_view: Option<PathBuf>,
    /// `None`: it could not start (said).
    pub(super) netwatch: Option<Arc<NetWatch>>,
    /// The mount namespace dynos are copied from (`dyno_sandbox::template`).
    pub(super) mount_template: Option<PathBuf>,
}

impl Machine for LinuxMachine {
    fn host_for(&self, app: &str, options: &DaemonOptions) -> Arc<dyn DynoHost> {
        Arc::new(
            LinuxHost::new(
                self.network.clone(),
                options.exe.clone(),
                options.state_root.clone(),
                self.cgroups.clone(),
            )
            .with_seccomp(options.seccomp.spec_for(app))
            .with_proc_view(self.proc_view.clone())
            .with_mount_template(self.mount_template.clone()),
        )
    }

    fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.as_ref()
    }

    fn netwatch(&self) -> Option<Arc<NetWatch>> {
        self.netwatch.clone()
    }

    /// The firewall goes unless dynos of someone else still use it; the parent of our dyno
    /// cgroups too.
    fn shut_down(&self) {
        let mut network = crate::lock(&self.network);
        if network.list().map(|l| l.is_empty()).unwrap_or(false) {
            if let Err(e) = network.uninstall() {
                tracing::warn!(error = %e, "remove the firewall");
            }
        }
        drop(network);
        if let Some(template) = &self.mount_template {
            if let Err(e) = dyno_sandbox::template::remove(template) {
                tracing::warn!(error = %e, "remove the mount namespace template");
            }
        }
        if let Some(cgroups) = &self.cgroups {
            let _ = cgroups.remove_dyno_root_if_unused();
        }
    }
}
