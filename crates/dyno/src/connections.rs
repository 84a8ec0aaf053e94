//! `--max-connections-per-client` and `--max-connections` of `dyno serve` and `dyno up`: the
//! router's bounds on client connections.

use clap::Args;
use dyno_router::RouterConfig;

#[derive(Args)]
#[command(next_help_heading = "Router connections")]
pub struct ConnectionArgs {
    /// Open client connections from one address. At the bound a new connection takes the place
    /// of that client's oldest idle one (waiting for a request); with none idle it is refused.
    /// The default keeps 1,000 clients behind one NAT working with two connections each
    #[arg(long, value_name = "N", default_value_t = RouterConfig::default().max_connections_per_client,
          value_parser = at_least_one)]
    pub max_connections_per_client: usize,
    /// Open client connections in all, the same way (the oldest idle of any client goes first).
    /// Keep it below the open-file limit (the daemon raises its soft limit to the hard one)
    #[arg(long, value_name = "N", default_value_t = RouterConfig::default().max_connections,
          value_parser = at_least_one)]
    pub max_connections: usize,
}

impl ConnectionArgs {
    /// `config` with these bounds.
    pub fn apply(&self, config: RouterConfig) -> RouterConfig {
        RouterConfig {
            max_connections_per_client: self.max_connections_per_client,
            max_connections: self.max_connections,
            ..config
        }
    }
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
