//! The `vigil` operator command: one clap `Command` enum, one match in [`run`].

pub mod audit;
pub mod doctor;
pub mod profile;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_policy::{LearningKeys, PolicyError};

use crate::config::{self, ConfigLocation, NodeConfig};

/// vigil: learn, monitor and enforce container behaviour profiles.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about)]
pub struct Cli {
    /// State folder holding profiles/ (default: state_dir of the node config, else
    /// /var/lib/vigil)
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Every `vigil` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, show, compare, export and import profiles
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// What this node can enforce, and why not (exit 0 only if the configured modes can be
    /// honoured)
    Doctor(doctor::DoctorArgs),
    /// Read the audit log
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Why a command failed; the exit code follows from the variant.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or input (exit 2); the message says what to fix.
    #[error("{0}")]
    Input(String),
    /// The thing asked about is not true (exit 1), for checks such as `doctor`.
    #[error("{0}")]
    NotTrue(String),
}

impl From<PolicyError> for CliError {
    fn from(e: PolicyError) -> Self {
        CliError::Input(e.to_string())
    }
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Input(_) => ExitCode::from(2),
            CliError::NotTrue(_) => ExitCode::from(1),
        }
    }
}

/// Settings every subcommand may need, resolved once.
#[derive(Debug, Clone)]
pub struct Context {
    pub state_dir: PathBuf,
    pub learning: LearningKeys,
    /// The node config, when it could be read.
    pub config: Option<NodeConfig>,
}

impl Context {
    /// `--state-dir`, else the node config's `state_dir` (VIGIL_CONFIG or
    /// /etc/vigil/config.toml), else the default. A broken config file is an error only when
    /// it is needed (no `--state-dir`).
    pub fn resolve(state_dir: Option<PathBuf>) -> Result<Self, CliError> {
        let location = ConfigLocation::resolve(None);
        let loaded = config::load(&location);
        let config = match (&state_dir, loaded) {
            (_, Ok(config)) => Some(config),
            (Some(_), Err(_)) => None,
            (None, Err(e)) => {
                return Err(CliError::Input(format!(
                    "{e}; fix it or give --state-dir to bypass it"
                )))
            }
        };
        let learning = config.as_ref().map(learning_keys).unwrap_or_default();
        let state_dir = state_dir
            .or_else(|| config.as_ref().map(|c| c.state_dir.clone()))
            .unwrap_or_else(|| NodeConfig::default().state_dir);
        Ok(Self {
            state_dir,
            learning,
            config,
        })
    }
}

/// The learning keys of a node config.
pub fn learning_keys(config: &NodeConfig) -> LearningKeys {
    LearningKeys {
        min_duration_secs: config.learn_min_seconds,
        quiet_period_secs: config.stable_quiet_seconds,
        auto_promote: config.auto_promote,
        ..LearningKeys::default()
    }
}

/// Runs a parsed command line and maps the outcome to vigil's exit codes (0 ok, 1 not true,
/// 2 usage or input error).
pub fn run(cli: Cli) -> ExitCode {
    let result = Context::resolve(cli.state_dir).and_then(|ctx| match cli.command {
        Command::Profile(cmd) => profile::run(&ctx, cmd),
        Command::Doctor(args) => doctor::run(&ctx, args),
        Command::Audit(cmd) => audit::run(&ctx, cmd),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {e}");
            e.exit_code()
        }
    }
}
