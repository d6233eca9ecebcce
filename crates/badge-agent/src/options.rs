//! The agent's flags, as `badge agent` and the `badge-agent` binary take them (the
//! kubelet's `--token-...` names are accepted as aliases).

use std::path::PathBuf;
use std::time::Duration;

use crate::join;

/// Flags of the agent (embedded by `badge agent`, and the `badge-agent` binary).
#[derive(clap::Args, Debug, Clone)]
pub struct AgentOptions {
    /// The node's kubeconfig (from `badge node add`); with --bootstrap-token, where the
    /// joined node's kubeconfig is kept (default: ROOT/kubelet.conf).
    #[arg(long, required_unless_present = "bootstrap_token")]
    pub kubeconfig: Option<PathBuf>,
    /// The node this agent plays the kubelet for.
    #[arg(long)]
    pub node_name: String,
    /// Where pod volumes are written (`ROOT/pods/<uid>/volumes/...`, like /var/lib/kubelet).
    #[arg(long, visible_alias = "root-dir")]
    pub root: PathBuf,
    /// Refresh a token once this fraction of its lifetime has passed.
    #[arg(long, visible_alias = "token-refresh-fraction", default_value_t = 0.8, value_parser = parse_fraction)]
    pub refresh_fraction: f64,
    /// Refresh a token at least this often, in seconds.
    #[arg(long = "max-refresh-seconds", visible_alias = "max-token-refresh-seconds", default_value = "86400", value_parser = parse_seconds)]
    pub max_refresh: Duration,
    /// Serve the counters as Prometheus text at http://ADDRESS/metrics (e.g. 127.0.0.1:10255).
    #[arg(long, visible_alias = "metrics-bind-address")]
    pub metrics_address: Option<std::net::SocketAddr>,
    #[command(flatten)]
    /// How the agent joins a cluster with a bootstrap token.
    pub join: join::JoinOptions,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !(value > 0.0 && value <= 1.0) {
        return Err("must be in (0, 1]".into());
    }
    Ok(value)
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let value: u64 = text.parse().map_err(|e| format!("{e}"))?;
    if value == 0 {
        return Err("must be positive".into());
    }
    Ok(Duration::from_secs(value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: AgentOptions,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--kubeconfig",
            "k",
            "--node-name",
            "n1",
            "--root",
            "/r",
            "--token-refresh-fraction",
            "0.01",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(cli.options.refresh_fraction, 0.01);
        assert_eq!(cli.options.max_refresh, Duration::from_secs(86_400));
        assert!(cli.options.metrics_address.is_some());
        let cli = Cli::try_parse_from([
            "x",
            "--kubeconfig",
            "k",
            "--node-name",
            "n1",
            "--root",
            "/r",
            "--max-refresh-seconds",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.options.refresh_fraction, 0.8);
        assert_eq!(cli.options.max_refresh, Duration::from_secs(5));
        assert!(
            Cli::try_parse_from([
                "x",
                "--kubeconfig",
                "k",
                "--node-name",
                "n",
                "--root",
                "r",
                "--refresh-fraction",
                "0"
            ])
            .is_err()
        );
    }
}
