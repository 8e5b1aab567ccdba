//! The named steps. Each is idempotent: rerunning a finished or half-done step
//! converges to the same files without duplicating anything.
//!
//! A step function takes only what it reads (parts of the card, settings), what it
//! may write ([`NodeFs`]: node files under `--root`, card files under `--boot`) and,
//! when it runs programs, [`Exec`] (the one logged, dry-run-aware door). [`run`] is
//! the one place that hands each step its inputs.

pub mod boot_device;
pub mod boot_hook;
pub mod cgroup;
pub mod clock;
pub mod data_disk;
pub mod files;
pub mod hostname;
pub mod join;
pub mod k3s;
pub mod locale;
pub mod network;
pub mod packages;
pub mod run_once;
pub mod sd_wear;
pub mod secrets;
pub mod self_install;
pub mod ssh;
pub mod sudoers;
pub mod user;
pub mod user_files;
pub mod userconfig;

use crate::error::Error;
use crate::exec::Exec;
use crate::http::Probe;
use crate::join_policy::{JoinEnv, JoinPolicy};
use crate::node_fs::NodeFs;
use crate::options::Options;
use crate::progress::Progress;
use crate::secrets::{ROOT_SECRETS, SecretStore};
use crate::state::State;
use crate::status::StatusCard;
use crate::step_id::StepId;
use piimg_contract::{NodeConfig, SECRETS_FILE};

/// Everything a run offers its steps; [`run`] hands each step its part.
pub struct StepEnv<'a> {
    /// Invocation options.
    pub opts: &'a Options,
    /// The card's node configuration.
    pub cfg: &'a NodeConfig,
    /// The node's files.
    pub fs: &'a NodeFs,
    /// Runs programs.
    pub exec: &'a Exec<'a>,
    /// Fetches a server's `Date`.
    pub probe: &'a dyn Probe,
    /// Decides how to join.
    pub join_policy: &'a dyn JoinPolicy,
    /// Where a long step reports its progress.
    pub status: StatusCard<'a>,
    /// Saves the state in the middle of a step (the `run-once` step, after each script).
    pub checkpoint: run_once::Checkpoint<'a>,
}

impl StepEnv<'_> {
    fn secrets(&self) -> SecretStore<'_> {
        SecretStore::new(self.fs, ROOT_SECRETS, SECRETS_FILE)
    }
}

/// Runs step `id`; returns its one-line summary. Only the `join` step (its
/// decision) and the `run-once` step (the scripts that finished) write the state,
/// only `k3s-config` reads the decision.
pub fn run(id: StepId, env: &StepEnv, state: &mut State) -> Result<String, Error> {
    let (cfg, opts, fs, exec) = (env.cfg, env.opts, env.fs, env.exec);
    match id {
        StepId::Secrets => secrets::take(&env.secrets(), fs),
        StepId::Files => files::lay_down(&cfg.files, fs),
        StepId::Hostname => hostname::apply(&cfg.node_name, cfg.domain.as_deref(), fs, exec),
        StepId::Locale => locale::apply(cfg.customize.locale.as_ref(), fs, exec),
        StepId::User => {
            let hash = env.secrets().load()?.password_hash;
            user::apply(&cfg.admin, hash.as_deref(), fs, exec)
        }
        StepId::SshKeys => ssh::authorized_keys(&cfg.admin, fs),
        StepId::Ssh => ssh::enable(cfg.admin.password_login, fs, exec),
        // Storage: the boot device reported, SD wear, the data disk (before the join
        // decision, which looks for existing etcd data on it, and before k3s).
        StepId::BootDevice => boot_device::report(cfg.storage.boot_device, fs),
        StepId::SdWear => sd_wear::apply(cfg.storage.sd_wear, fs, exec),
        StepId::DataDisk => match &cfg.storage.data_disk {
            Some(disk) => data_disk::prepare(disk, &cfg.cluster, &cfg.node_name, fs, exec),
            None => Ok("no data disk: k3s keeps its data on the root".into()),
        },
        StepId::UserFiles => user_files::lay_down(&cfg.customize.files, fs),
        StepId::InstallAgent => self_install::install(opts.self_exe.as_deref(), &cfg.files, fs),
        StepId::Unhook => boot_hook::unhook(&cfg.boot, fs),
        StepId::Handoff => Ok(boot_hook::handoff(&cfg.boot)),
        StepId::Network => network::wait(&cfg.network, &cfg.boot, opts.network_timeout, fs, exec),
        StepId::Clock => clock::sync(
            &clock::time_sources(&opts.time_urls, cfg, opts.api_port),
            opts.clock_timeout,
            fs,
            exec,
            env.probe,
        ),
        StepId::Cgroup => cgroup::check(fs),
        StepId::Packages => packages::install(
            &cfg.customize.packages,
            opts.apt_get.as_deref(),
            opts.packages_timeout,
            exec,
        ),
        StepId::RunOnce => {
            let snapshot = state.clone();
            let progress = Progress {
                card: env.status,
                state: &snapshot,
                step: id,
            };
            run_once::run_all(
                &cfg.customize.run_once,
                opts.run_scripts,
                state,
                env.checkpoint,
                progress,
                fs,
                exec,
            )
        }
        StepId::Join => {
            // The status the policy reports its waiting on: the state as the step starts.
            let snapshot = state.clone();
            let progress = Progress {
                card: env.status,
                state: &snapshot,
                step: id,
            };
            let secrets = env.secrets();
            let join_env = JoinEnv {
                cfg,
                api_port: opts.api_port,
                join_timeout: opts.join_timeout,
                fs,
                exec,
                secrets: &secrets,
                progress: &progress,
            };
            join::decide(
                env.join_policy,
                &join_env,
                cfg.ha.init_window_secs,
                &mut state.join,
            )
        }
        StepId::K3sConfig => k3s::config(
            state.join.as_ref(),
            &env.secrets(),
            cfg.role,
            &cfg.k3s.config_yaml,
            fs,
        ),
        StepId::K3sInstall => k3s::install(&cfg.k3s, cfg.role, fs, exec),
        StepId::K3sStart => k3s::start(cfg.role, opts.systemctl.as_deref(), exec),
        StepId::K3sReady => k3s::ready(&cfg.node_name, cfg.role, opts.ready_timeout, fs, exec),
        StepId::Scrub => secrets::scrub(&env.secrets(), cfg.ha.node_cleaner.as_ref(), fs),
        StepId::Disable => self_install::disable(&cfg.files, fs),
    }
}
