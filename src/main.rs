//! The `sessionstore-operator` binary: `run` the controller, print the `crd`, or `render` a manifest.

use std::io::Read;
use std::process::ExitCode;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use sessionstore_operator::crd::Engine;
use sessionstore_operator::observe::ProbeSettings;
use sessionstore_operator::observe::step::HealthSettings;
use sessionstore_operator::render;
use sessionstore_operator::run::RunOptions;
use sessionstore_operator::settings::{
    self, DEFAULT_EXPORTER_IMAGE, DEFAULT_REDIS_IMAGE, DEFAULT_VALKEY_IMAGE, DefaultImages,
    OperatorSettings,
};
use sessionstore_operator::telemetry::{self, LogFormat};
use sessionstore_operator::validate::{check_image, check_image_engine};

#[derive(Parser, Debug)]
#[command(
    name = "sessionstore-operator",
    version,
    about = "A secure, reliable Redis for every application's sessions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against the current kubeconfig or in-cluster configuration.
    Run(Box<RunArgs>),
    /// Print the SessionStore CustomResourceDefinition as YAML.
    Crd,
    /// Validate a SessionStore manifest and print every child object, with no cluster.
    Render {
        /// Manifest file, or `-` for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Print generated Secret values instead of `<redacted>`.
        #[arg(long)]
        show_secrets: bool,
    },
}

/// Flags of `run` (see the run contract shared with the Helm chart).
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch only these namespaces (repeatable); default all.
    #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// An EnvFilter directive, e.g. `info` or `sessionstore_operator=debug,kube=warn`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Seconds between Redis health checks of a store.
    #[arg(long, env = "HEALTH_INTERVAL_SECONDS", default_value_t = 30)]
    health_interval_seconds: u64,
    /// Redis connections the health probe opens at once, across all stores.
    #[arg(long, env = "MAX_CONCURRENT_PROBES", default_value_t = 32)]
    max_concurrent_probes: usize,
    /// Take a Lease before reconciling, so two replicas can run.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_election: bool,
    /// Disable leader election (a single replica).
    #[arg(long, conflicts_with = "leader_election", action = ArgAction::SetTrue)]
    no_leader_election: bool,
    #[arg(long, default_value = "sessionstore-operator")]
    lease_name: String,
    /// Namespace the operator runs in (the Lease lives there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "sessionstore-system")]
    operator_namespace: String,
    /// Labels of the operator's pods, let in by every store's NetworkPolicy.
    #[arg(
        long,
        env = "OPERATOR_POD_LABELS",
        default_value = "app.kubernetes.io/name=sessionstore-operator"
    )]
    operator_pod_labels: String,
    /// Labels of the namespace Prometheus scrapes from.
    #[arg(
        long,
        env = "MONITORING_NAMESPACE_LABELS",
        default_value = "kubernetes.io/metadata.name=monitoring"
    )]
    monitoring_namespace_labels: String,
    /// Redis image of stores whose spec names none (e.g. a registry mirror).
    #[arg(long, env = "REDIS_IMAGE", default_value = DEFAULT_REDIS_IMAGE)]
    redis_image: String,
    /// Valkey image of stores with `engine: valkey` whose spec names none.
    #[arg(long, env = "VALKEY_IMAGE", default_value = DEFAULT_VALKEY_IMAGE)]
    valkey_image: String,
    /// redis_exporter image of stores with the exporter on whose spec names none.
    #[arg(long, env = "EXPORTER_IMAGE", default_value = DEFAULT_EXPORTER_IMAGE)]
    exporter_image: String,
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Namespace of the cluster DNS pods: the stores' pods may send DNS queries only there.
    #[arg(long, env = "DNS_NAMESPACE", default_value = settings::DEFAULT_DNS_NAMESPACE)]
    dns_namespace: String,
    /// Labels of the cluster DNS pods (k=v,...), in --dns-namespace.
    #[arg(long, env = "DNS_POD_LABELS", default_value = settings::DEFAULT_DNS_POD_LABELS)]
    dns_pod_labels: String,
    #[arg(long, env = "MAX_CONCURRENT_RECONCILES", default_value_t = 8)]
    max_concurrent_reconciles: u16,
    /// Lease holder identity (default: the hostname).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
}

fn parse_labels(
    flag: &str,
    value: &str,
) -> sessionstore_operator::Result<BTreeMap<String, String>> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    sessionstore_operator::Error::Startup(format!(
                        "{flag}: expected k=v,..., got {pair:?}"
                    ))
                })
        })
        .collect()
}

/// `--redis-image`, `--valkey-image` and `--exporter-image`, checked as a spec's images are (a
/// server image whose name says the other engine is refused).
fn default_images(
    redis: String,
    valkey: String,
    exporter: String,
) -> sessionstore_operator::Result<DefaultImages> {
    let startup = |e: sessionstore_operator::validate::ValidationError| {
        sessionstore_operator::Error::Startup(format!("{}: {}", e.field, e.message))
    };
    for (flag, image) in [
        ("--redis-image", &redis),
        ("--valkey-image", &valkey),
        ("--exporter-image", &exporter),
    ] {
        check_image(flag, image).map_err(startup)?;
    }
    check_image_engine("--redis-image", &redis, Engine::Redis).map_err(startup)?;
    check_image_engine("--valkey-image", &valkey, Engine::Valkey).map_err(startup)?;
    Ok(DefaultImages {
        redis,
        valkey,
        exporter,
    })
}

/// A setting that must not be empty: an empty DNS namespace or selector would select no DNS pod
/// (or every pod), so it is refused at start with the flag's name.
fn non_empty(flag: &str, value: String) -> sessionstore_operator::Result<String> {
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(sessionstore_operator::Error::Startup(format!(
            "{flag}: must not be empty"
        )));
    }
    Ok(value)
}

fn non_empty_labels(
    flag: &str,
    labels: BTreeMap<String, String>,
) -> sessionstore_operator::Result<BTreeMap<String, String>> {
    if labels.is_empty() {
        return Err(sessionstore_operator::Error::Startup(format!(
            "{flag}: needs at least one k=v label (an empty selector would match every pod)"
        )));
    }
    Ok(labels)
}

fn run(args: RunArgs) -> sessionstore_operator::Result<()> {
    telemetry::init(args.log_format, &args.log_level)?;
    let pod_name = match args.pod_name {
        Some(name) => name,
        None => std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("sessionstore-operator-{}", std::process::id())),
    };
    let options = RunOptions {
        namespaces: args
            .namespaces
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect(),
        http_addr: args.http_addr,
        leader_election: args.leader_election && !args.no_leader_election,
        lease_name: args.lease_name,
        pod_name,
        max_concurrent_reconciles: args.max_concurrent_reconciles.max(1),
        settings: OperatorSettings {
            operator_namespace: args.operator_namespace,
            operator_pod_labels: parse_labels("--operator-pod-labels", &args.operator_pod_labels)?,
            monitoring_namespace_labels: parse_labels(
                "--monitoring-namespace-labels",
                &args.monitoring_namespace_labels,
            )?,
            cluster_domain: args.cluster_domain,
            images: default_images(args.redis_image, args.valkey_image, args.exporter_image)?,
            dns_namespace: non_empty("--dns-namespace", args.dns_namespace)?,
            dns_pod_labels: non_empty_labels(
                "--dns-pod-labels",
                parse_labels("--dns-pod-labels", &args.dns_pod_labels)?,
            )?,
        },
        health: HealthSettings {
            interval: Duration::from_secs(args.health_interval_seconds.max(1)),
            probe: ProbeSettings {
                max_connections: args.max_concurrent_probes.max(1),
                ..ProbeSettings::default()
            },
            ..HealthSettings::default()
        },
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        sessionstore_operator::Error::Startup(format!("starting the async runtime: {e}"))
    })?;
    runtime.block_on(sessionstore_operator::run::run(options))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Crd => render::crd_yaml().map(|yaml| print!("{yaml}")),
        Command::Render { file, show_secrets } => read_input(&file).and_then(|source| {
            render::render(&source, &file, show_secrets, &OperatorSettings::default())
                .map(|yaml| print!("{yaml}"))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn read_input(file: &str) -> sessionstore_operator::Result<String> {
    let mut source = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut source).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|s| source = s)
    };
    read.map_err(|e| sessionstore_operator::Error::Input {
        path: file.into(),
        message: e.to_string(),
    })?;
    Ok(source)
}
