//! The daemon's [`Ledger`]: every incarnation of every dyno is a row of the store's `dynos`
//! table (with its address lease) before its network, cgroup or shim exist, `stopping` once its
//! teardown starts, and gone once its resources are (see `dyno-state`'s intent-before-resource
//! rule). A daemon restarted after a crash reads these rows to adopt or remove what it finds.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use dyno_state::model::{DynoState, DynoUpdate, NewDyno};
use dyno_state::{AppName, SizeName, Store};

use crate::supervisor::{DynoDef, Ledger, LedgerError};

pub struct StoreLedger {
    pub store: Arc<Mutex<Store>>,
}

impl StoreLedger {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
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
            net_name: Some(net_name.to_string()),
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
