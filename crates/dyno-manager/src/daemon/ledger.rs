//! The daemon's [`Ledger`]: every incarnation of every dyno is a row of the store's `dynos`
//! table (with its address lease) before its network, cgroup or shim exist, `stopping` once its
//! teardown starts, and gone once its resources are (see `dyno-state`'s intent-before-resource
//! rule). A daemon restarted after a crash reads these rows to adopt or remove what it finds.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use dyno_state::model::{DynoState, DynoUpdate, NetNames, NewDyno};
use dyno_state::{AppName, SizeName, Store};

use dyno_supervisor::{DynoDef, Ledger, LedgerError};

pub struct StoreLedger {
    pub store: Arc<Mutex<Store>>,
}

impl StoreLedger {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        crate::lock(&self.store)
    }
}

/// The names dyno-net gives the resources of network `net_name`.
fn net_names(net_name: &str) -> Result<NetNames, LedgerError> {
    let name = dyno_net::names::DynoName::new(net_name)
        .map_err(|e| dyno_state::ValidationError::new("net_name", e.to_string()))?;
    Ok(NetNames {
        net_name: name.as_str().to_string(),
        netns: name.netns_file(),
        link: name.host_link(),
    })
}

impl Ledger for StoreLedger {
    fn begin(&self, def: &DynoDef, net_name: &str) -> Result<(i64, Ipv4Addr), LedgerError> {
        let new = NewDyno {
            app: AppName::parse(&def.app)?,
            // A dyno that is never restarted (a one-off, the release phase) is recorded as a
            // one-off: the release it runs on need not have its process type.
            process_type: if def.restart {
                def.process.clone()
            } else {
                dyno_state::ProcessType::RUN.to_string()
            },
            index: def.index,
            release_version: def.release,
            size: SizeName::parse(def.size.name)?,
            net: net_names(net_name)?,
        };
        let dyno = self.store().insert_dyno(&new)?;
        let ip = dyno
            .address
            .ok_or_else(|| LedgerError::NoAddress(net_name.to_string()))?;
        Ok((dyno.id, ip))
    }

    fn relocate(&self, id: i64) -> Result<Ipv4Addr, LedgerError> {
        Ok(self.store().relocate_lease(id)?)
    }

    fn stopping(&self, id: i64) {
        let update = DynoUpdate {
            state: Some(DynoState::Stopping),
            ..DynoUpdate::default()
        };
        if let Err(e) = self.store().update_dyno(id, &update) {
            tracing::warn!(dyno = id, error = %e, "record that the dyno stops");
        }
    }

    fn end(&self, id: i64) {
        if let Err(e) = self.store().remove_dyno(id) {
            tracing::warn!(dyno = id, error = %e, "forget the stopped dyno");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_knows_exactly_the_sizes_the_sandbox_has_limits_for() {
        let sandbox: Vec<&str> = dyno_sandbox::cgroup::DYNO_SIZES
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(sandbox, dyno_state::SIZE_NAMES);
        assert_eq!(
            dyno_state::DEFAULT_SIZE,
            dyno_sandbox::cgroup::DynoSize::default().name
        );
    }

    #[test]
    fn recorded_names_are_the_ones_dyno_net_gives() {
        let names = net_names("mxct6afs0393r").unwrap();
        assert_eq!(names.netns, "dyno-mxct6afs0393r");
        assert_eq!(names.link, "dymxct6afs0393r");
        assert!(net_names("Not/Valid").is_err());
    }
}
