//! `dyno net …`: dyno networks by hand, one command at a time. The daemon does the same through
//! `dyno_net::network::Network`; these commands keep the leases in a small state directory so
//! that separate invocations agree.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use dyno_net::dyno::{Host, RunDir};
use dyno_net::ipam::{FileStore, Ipv4Net};
use dyno_net::network::{self, Network, NetworkConfig};

#[derive(Subcommand)]
pub enum NetCommand {
    /// Create dyno NAME's network: namespace dyno-NAME, eth0 with a /32 from the pool, host link
    /// dyNAME, routes, and (with --port) the router's way in
    #[command(
        after_help = "Example:\n  dyno net up web1 --port 5000\n  ip netns exec dyno-web1 ip addr"
    )]
    Up {
        /// 1-13 characters of a-z, 0-9 and '-'
        name: String,
        /// The port the router may reach ($PORT); without it nothing can connect into the dyno
        #[arg(long)]
        port: Option<u16>,
        #[command(flatten)]
        place: Place,
    },
    /// Remove dyno NAME's network, its exposed port and its address lease
    Down {
        name: String,
        #[command(flatten)]
        place: Place,
    },
    /// List dyno networks with their address and exposed port
    Ls {
        #[command(flatten)]
        place: Place,
    },
    /// Remove everything dyno made: every dyno-* namespace, every dy* link, the `inet dyno`
    /// nf_tables table, and the leases (use after a crash)
    Reset {
        #[command(flatten)]
        place: Place,
    },
}

/// Where dyno networks live.
#[derive(Args, Clone)]
pub struct Place {
    /// Directory the namespaces are bound in (`ip netns` looks in /run/netns)
    #[arg(long, default_value = "/run/netns", global = true)]
    run_dir: PathBuf,
    /// Directory of the address leases of `dyno net` commands
    #[arg(long, default_value = "/run/dyno/net", global = true)]
    state_dir: PathBuf,
    /// Address pool for dynos (one /32 each)
    #[arg(long, default_value_t = Ipv4Net::default(), global = true)]
    pool: Ipv4Net,
}

impl Place {
    fn config(&self) -> NetworkConfig {
        NetworkConfig {
            run_dir: RunDir(self.run_dir.clone()),
            pool: self.pool,
            // One command, one dyno: a pool of spares would only cost.
            spares: 0,
            ..NetworkConfig::default()
        }
    }

    fn open(&self) -> Result<Network<FileStore>, String> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| format!("create state dir {}: {e}", self.state_dir.display()))?;
        let host = Host::current().map_err(|e| e.to_string())?;
        Network::open(host, &self.config(), FileStore::new(self.leases()))
            .map_err(|e| e.to_string())
    }

    fn leases(&self) -> PathBuf {
        self.state_dir.join("leases.json")
    }
}

pub fn run(command: NetCommand) -> Result<(), String> {
    crate::require_root("dyno net")?;
    match command {
        NetCommand::Up { name, port, place } => {
            let mut network = place.open()?;
            let net = network.up(&name, port).map_err(|e| e.to_string())?;
            println!(
                "{}  {}  eth0 in {} (host link {}){}",
                net.name,
                net.ip,
                net.netns_path.display(),
                net.host_link,
                port.map(|p| format!(", port {p} open to the router"))
                    .unwrap_or_default()
            );
        }
        NetCommand::Down { name, place } => {
            let mut network = place.open()?;
            if network.down(&name).map_err(|e| e.to_string())? {
                println!("{name}: removed");
            } else {
                println!("{name}: no such dyno network, nothing to do");
            }
        }
        NetCommand::Ls { place } => {
            let network = place.open()?;
            let entries = network.list().map_err(|e| e.to_string())?;
            println!("{:<14} {:<16} {:<6} NAMESPACE", "NAME", "ADDRESS", "PORT");
            for e in entries {
                println!(
                    "{:<14} {:<16} {:<6} {}",
                    e.name.as_str(),
                    e.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
                    e.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    if e.bound {
                        place
                            .config()
                            .run_dir
                            .netns_path(&e.name)
                            .display()
                            .to_string()
                    } else {
                        "(missing: run `dyno net down NAME`)".into()
                    }
                );
            }
        }
        NetCommand::Reset { place } => {
            let mut host = Host::current().map_err(|e| e.to_string())?;
            let config = place.config();
            let (report, errors) = network::reset(&mut host, &config.run_dir, &config.firewall());
            let leases = place.leases();
            let mut errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            match std::fs::remove_file(&leases) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("remove {}: {e}", leases.display())),
            }
            println!(
                "removed {} namespace(s), {} link(s){}",
                report.namespaces.len(),
                report.links.len(),
                if report.table {
                    ", the nf_tables table inet dyno"
                } else {
                    ""
                }
            );
            if !errors.is_empty() {
                return Err(errors.join("\n"));
            }
        }
    }
    Ok(())
}
