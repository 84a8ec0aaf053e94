//! `dyno bench net`: dyno network setup/teardown against CNI `ptp` + `host-local`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use dyno_net::dyno::{Host, NetError};
use dyno_net::ipam::{Ipv4Net, MemoryStore};
use dyno_net::lab::Lab;
use dyno_net::names::LINK_PREFIX;
use dyno_net::network::{Network, NetworkConfig};

use super::cni;
use super::stats::{ms_text as ms, ratio_text as ratio, summarize, Summary};

#[derive(Args)]
#[command(
    after_help = "The last line is key=value pairs: setup_p50_ms setup_p99_ms teardown_p50_ms \
    teardown_p99_ms cni_ptp_add_p50_ms cni_ptp_del_p50_ms speedup_setup speedup_teardown \
    first100_setup_p50_ms last100_setup_p50_ms last_vs_first ..."
)]
pub struct NetBench {
    /// How many dynos
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Keep every dyno up until all are set up (N alive at once), then tear all down; without it,
    /// each dyno is torn down right after its setup
    #[arg(long)]
    hold: bool,
    /// Namespaces the daemon keeps ready in the background (0: create each on demand)
    #[arg(long, default_value_t = 8)]
    spares: usize,
    /// Where Debian's CNI plugins are
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_dir: PathBuf,
    /// Skip the CNI anchor (no ratios then)
    #[arg(long)]
    no_anchor: bool,
}

struct DynoTimings {
    setup: Vec<Duration>,
    teardown: Vec<Duration>,
}

pub fn run(args: NetBench) -> Result<(), String> {
    if args.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let dyno = bench_dyno(&args).map_err(|e| format!("dyno setup/teardown: {e}"))?;
    let setup = summarize(&dyno.setup);
    let teardown = summarize(&dyno.teardown);
    let window = 100.min(args.count);
    let first = summarize(&dyno.setup[..window]);
    let last = summarize(&dyno.setup[args.count - window..]);
    println!(
        "dyno   setup    p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms  (first {window}: p50 {:.3} ms, last {window}: p50 {:.3} ms)",
        setup.p50_ms, setup.p99_ms, setup.mean_ms, first.p50_ms, last.p50_ms
    );
    println!(
        "dyno   teardown p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms",
        teardown.p50_ms, teardown.p99_ms, teardown.mean_ms
    );
    let mut pairs = vec![
        ("count", args.count.to_string()),
        ("hold", args.hold.to_string()),
        ("spares", args.spares.to_string()),
        ("setup_p50_ms", ms(setup.p50_ms)),
        ("setup_p99_ms", ms(setup.p99_ms)),
        ("setup_mean_ms", ms(setup.mean_ms)),
        ("setup_max_ms", ms(setup.max_ms)),
        ("teardown_p50_ms", ms(teardown.p50_ms)),
        ("teardown_p99_ms", ms(teardown.p99_ms)),
        ("teardown_max_ms", ms(teardown.max_ms)),
        ("first100_setup_p50_ms", ms(first.p50_ms)),
        ("last100_setup_p50_ms", ms(last.p50_ms)),
        ("last_vs_first", ratio(last.p50_ms, first.p50_ms)),
    ];
    if !args.no_anchor {
        let anchor = cni::run_ptp_anchor(args.count, &args.cni_dir)
            .map_err(|e| format!("CNI ptp anchor: {e}"))?;
        let add = summarize(&anchor.add);
        let del = summarize(&anchor.del);
        print_anchor("ADD", &add);
        print_anchor("DEL", &del);
        pairs.extend([
            ("cni_ptp_add_p50_ms", ms(add.p50_ms)),
            ("cni_ptp_add_p99_ms", ms(add.p99_ms)),
            ("cni_ptp_del_p50_ms", ms(del.p50_ms)),
            ("cni_ptp_del_p99_ms", ms(del.p99_ms)),
            ("speedup_setup", ratio(add.p50_ms, setup.p50_ms)),
            ("speedup_teardown", ratio(del.p50_ms, teardown.p50_ms)),
        ]);
    }
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
    Ok(())
}

fn print_anchor(what: &str, s: &Summary) {
    println!(
        "cni    ptp {what}  p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms",
        s.p50_ms, s.p99_ms, s.mean_ms
    );
}

fn bench_dyno(args: &NetBench) -> Result<DynoTimings, String> {
    let lab = Lab::new("bench").map_err(|e| e.to_string())?;
    let host = Host::in_netns(lab.host.netns()).map_err(|e| e.to_string())?;
    let pool: Ipv4Net = "10.213.0.0/16".parse().map_err(|e| format!("{e}"))?;
    let config = NetworkConfig {
        run_dir: lab.run_dir.clone(),
        pool,
        spares: args.spares,
        ..NetworkConfig::default()
    };
    let mut network = Network::open(host, &config, MemoryStore).map_err(|e| e.to_string())?;
    // Let the spares fill, as they would in a daemon that has been up for a moment.
    std::thread::sleep(Duration::from_millis(20 * args.spares as u64));
    let names: Vec<String> = (0..args.count).map(|i| format!("b{i}")).collect();
    let mut timings = DynoTimings {
        setup: Vec::with_capacity(args.count),
        teardown: Vec::with_capacity(args.count),
    };
    let mut alive = Vec::new();
    for name in &names {
        let started = Instant::now();
        let net = network.up(name, Some(5000)).map_err(|e| e.to_string())?;
        timings.setup.push(started.elapsed());
        // Closing our handle on the namespace is part of what a teardown costs.
        if args.hold {
            alive.push(net);
        } else {
            timings.teardown.push(time_down(&mut network, name, net)?);
        }
    }
    for net in alive {
        let name = net.name.to_string();
        timings.teardown.push(time_down(&mut network, &name, net)?);
    }
    // The kernel destroys namespaces in the background; wait for it so the anchor that runs
    // next does not pay for our cleanup.
    wait_for_links_gone(&mut network).map_err(|e| e.to_string())?;
    Ok(timings)
}

fn time_down(
    network: &mut Network<MemoryStore>,
    name: &str,
    net: dyno_net::dyno::DynoNet,
) -> Result<Duration, String> {
    let started = Instant::now();
    drop(net);
    network.down(name).map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

fn wait_for_links_gone(network: &mut Network<MemoryStore>) -> Result<(), NetError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if network.host().links_with_prefix(LINK_PREFIX)?.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
