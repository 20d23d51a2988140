//! `ferry` binary: parse arguments, dispatch, map errors to exit codes.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry::output::OutputFormat;

#[derive(Parser)]
#[command(name = "ferry", version, about = "Move Kubernetes namespaces — objects and volume data — between clusters, driven by Git")]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `ferry=debug`.
    #[arg(long, global = true, env = "FERRY_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded demo: local clusters `east` and `west`, the guestbook on one, migrated to the other.
    Demo {
        /// State directory of the local clusters.
        #[arg(long, env = "FERRY_STATE")]
        state: Option<PathBuf>,
    },
    /// Local multi-cluster harness made of real upstream Kubernetes components.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Validate a placement repository: exit 1 on any error.
    Validate(ferry::model::cli::ValidateArgs),
    /// Show what Ferry would do for a placement commit.
    Plan(ferry::plan::cli::PlanArgs),
    /// Migrate one namespace between clusters: preflight, export, transform, apply,
    /// quiesce, volumes, cutover, verify, retire — resumable, rolled back on failure.
    Migrate(ferry::pipeline::cli::MigrateArgs),
    /// Volume data mover: sync a directory to another over mutual TLS (receive, send, copy, certs).
    #[command(subcommand)]
    Mover(ferry::mover::cli::MoverCommand),
    /// Run as a long-lived GitOps agent: follow the placement repository, migrate, commit status.
    Agent(ferry::agent::AgentArgs),
}

#[derive(Subcommand)]
enum DevCommand {
    /// Start local clusters (default `east` and `west`) and wait until every component is healthy.
    Up {
        #[command(flatten)]
        state: StateArg,
        /// Cluster names to start.
        #[arg(long, value_delimiter = ',', default_value = "east,west")]
        clusters: Vec<String>,
        /// Simulated (kwok) nodes per cluster.
        #[arg(long, default_value_t = 2)]
        nodes: u32,
        /// Allocatable CPU of each simulated node (Kubernetes quantity).
        #[arg(long, default_value = "4")]
        node_cpu: String,
        /// Allocatable memory of each simulated node (Kubernetes quantity).
        #[arg(long, default_value = "16Gi")]
        node_memory: String,
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Stop every process the harness started and free its ports (also after a crash).
    Down {
        #[command(flatten)]
        state: StateArg,
        /// Also delete the state directory (data, certificates, kubeconfig).
        #[arg(long)]
        purge: bool,
    },
    /// Report each cluster's health.
    Status {
        #[command(flatten)]
        state: StateArg,
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Build (or find cached) upstream binaries and print their directory.
    Binaries,
    /// (internal) Run the hostPath volume provisioner for one cluster in the foreground.
    #[command(hide = true)]
    Provisioner {
        #[command(flatten)]
        state: StateArg,
        #[arg(long)]
        cluster: String,
    },
    /// (internal) Run the node agent (the cluster's one real node, for mover pods) in the foreground.
    #[command(hide = true)]
    NodeAgent {
        #[command(flatten)]
        state: StateArg,
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        node_ip: String,
        #[arg(long)]
        pod_ip_prefix: String,
        #[arg(long)]
        service_cidr: String,
        /// Run no pods and register no Node (a kubelet is the node): only forward Services.
        #[arg(long)]
        proxy_only: bool,
    },
    /// (internal) The pod sandbox's process in the harness's pause image: wait for SIGTERM.
    #[command(hide = true)]
    Pause,
}

#[derive(clap::Args)]
struct StateArg {
    /// State directory (ports, pids, data, kubeconfig). Default: $XDG_STATE_HOME/ferry/dev or ~/.local/state/ferry/dev.
    #[arg(long = "state", env = "FERRY_STATE")]
    dir: Option<PathBuf>,
}

impl StateArg {
    fn resolve(self) -> PathBuf {
        self.dir.unwrap_or_else(ferry::dev::default_state_dir)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Dev(DevCommand::Pause)) {
        // Before any runtime thread exists, so that the signal wait sees every signal.
        return match ferry::dev::image::pause() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    ferry::output::init_tracing(&cli.log);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    use ferry::dev;
    match command {
        Command::Demo { state } => {
            let state = state.unwrap_or_else(dev::default_state_dir);
            dev::demo::run(&state).await?;
        }
        Command::Dev(DevCommand::Up { state, clusters, nodes, node_cpu, node_memory, output }) => {
            let opts = dev::UpOptions { clusters, nodes, node_cpu, node_memory };
            let report = dev::up(&state.resolve(), &opts).await?;
            dev::print_status(&report, output)?;
        }
        Command::Dev(DevCommand::Down { state, purge }) => dev::down(&state.resolve(), purge)?,
        Command::Dev(DevCommand::Status { state, output }) => {
            let report = dev::status(&state.resolve()).await?;
            dev::print_status(&report, output)?;
            if !report.healthy() {
                return Ok(ExitCode::from(3));
            }
        }
        Command::Dev(DevCommand::Binaries) => println!("{}", dev::binaries::ensure()?.display()),
        Command::Dev(DevCommand::Provisioner { state, cluster }) => dev::provisioner::run(&state.resolve(), &cluster).await?,
        Command::Dev(DevCommand::NodeAgent { state, cluster, node_ip, pod_ip_prefix, service_cidr, proxy_only }) => {
            dev::node::run(&state.resolve(), dev::node::NodeOptions { cluster, node_ip, pod_ip_prefix, service_cidr, proxy_only }).await?
        }
        Command::Dev(DevCommand::Pause) => unreachable!("handled before the runtime starts"),
        Command::Migrate(args) => return ferry::pipeline::cli::run(args).await,
        Command::Validate(args) if args.watch => {
            // The edit-save-see loop: every save re-validates the working copy.
            let mut changes = ferry::repo::watch(&args.path, std::time::Duration::from_millis(300))?;
            loop {
                let again = ferry::model::cli::ValidateArgs { path: args.path.clone(), output: args.output, objects: args.objects.clone(), watch: false };
                ferry::model::cli::run(again).await?;
                eprintln!("-- watching {} for changes (ctrl-c to stop)", args.path.display());
                if changes.changed().await.is_none() {
                    break;
                }
            }
        }
        Command::Validate(args) => return ferry::model::cli::run(args).await,
        Command::Plan(args) => return ferry::plan::cli::run(args).await,
        Command::Agent(args) => return ferry::agent::run_cli(args).await,
        Command::Mover(cmd) => return ferry::mover::cli::run(cmd).await,
    }
    Ok(ExitCode::SUCCESS)
}
