//! The card: the files piimg lays onto a node's boot partition, rendered from
//! `overlays/` templates. [`render`] is a pure function of the node's plan, its
//! secrets, the base image's OS release and the templates; writing the card into an
//! image is the `output` module's job.

pub mod cmdline;
pub mod config_txt;
pub mod context;
pub mod manifests;
pub mod templates;

/// How the base image's OS runs first-boot code (detected from its root partition).
pub use crate::image::FirstBoot;
pub use cmdline::{CmdlineEdit, CmdlineError};
pub use config_txt::{ConfigEdit, ConfigTxtError};
pub use templates::Templates;

use crate::plan::NodePlan;
use context::{CardValues, TemplateData};
use piimg_contract::status_slots;
use piimg_contract::{
    AGENT_FILE, AGENT_UNIT, AIRGAP_DIR, Admin, Airgap, BootHook, CONTRACT_VERSION, CardSecrets, Ha,
    K3s, NodeConfig, RootFile, ServerRef,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The boot partition's kernel command line.
pub const CMDLINE_TXT: &str = "cmdline.txt";
/// Prefix of everything piimg owns on the boot partition ([`contract::CARD_DIR`]).
pub const CARD_DIR_PREFIX: &str = "piimg/";
/// The boot partition's firmware configuration.
pub const CONFIG_TXT: &str = "config.txt";
/// The NetworkManager keyfile the agent lays down on Bookworm.
pub const NM_KEYFILE_DIR: &str = "/etc/NetworkManager/system-connections";
/// The sshd drop-in the agent lays down (it checks for `PasswordAuthentication no`).
pub const SSHD_DROP_IN: &str = "/etc/ssh/sshd_config.d/50-piimg.conf";
/// The airgap files a profile may bundle: (file name, required).
pub const AIRGAP_FILES: [(&str, bool); 3] = [
    ("k3s-arm64", true),
    ("install.sh", true),
    ("k3s-airgap-images-arm64.tar.zst", false),
];

/// What the card needs to know about the base image's OS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Os {
    /// Debian codename, e.g. `bookworm`.
    pub codename: String,
    /// The first-boot mechanism to use.
    pub first_boot: FirstBoot,
}

/// One node's secrets, resolved from the cluster secrets by the caller (see
/// `piimg::pki::files_for_node`): everything here ends up in `secrets.json`, which the
/// agent moves into the root file system (0600) and scrubs from the boot partition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSecrets {
    /// The k3s join token.
    pub token: String,
    /// Server cards: k3s's `agent-token` secret.
    pub agent_token: Option<String>,
    /// Pre-seeded /etc/rancher/node/password, if any.
    pub node_password: Option<String>,
    /// Secret files for the root filesystem (0600).
    pub files: Vec<RootFile>,
}

/// The non-secret part of what the cluster PKI gives a card (`node.json`): the HA
/// settings and the root-filesystem files that come with them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeHa {
    /// Non-secret root-filesystem files added after the built-in ones
    /// (`NodeConfig.files`), e.g. the server manifests.
    pub root_files: Vec<RootFile>,
    /// `NodeConfig.ha`: CA pin, first bring-up, node-cleaner identity.
    pub ha: Ha,
}

/// Build settings that are not part of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// Build time in seconds since the epoch (SOURCE_DATE_EPOCH when set).
    pub build_time: u64,
}

/// Content of one boot-partition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Rendered bytes.
    Bytes(Vec<u8>),
    /// A file on the build machine, copied as is (airgap files, overlay extras).
    Host(PathBuf),
}

impl Content {
    /// The bytes (reads host files).
    pub fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>, CardError> {
        match self {
            Content::Bytes(b) => Ok(std::borrow::Cow::Borrowed(b)),
            Content::Host(p) => {
                std::fs::read(p)
                    .map(std::borrow::Cow::Owned)
                    .map_err(|e| CardError::HostFile {
                        path: p.clone(),
                        message: e.to_string(),
                    })
            }
        }
    }
}

/// Everything one node's boot partition gets.
#[derive(Debug, Clone)]
pub struct Card {
    /// Node name.
    pub node: String,
    /// Profile name.
    pub profile: String,
    /// Cluster name.
    pub cluster: String,
    /// The OS the card was rendered for.
    pub os: Os,
    /// The agent's configuration (also in `files` as [`contract::NODE_CONFIG_FILE`]).
    pub node_config: NodeConfig,
    /// The agent's secrets (also in `files` as [`contract::SECRETS_FILE`]).
    pub secrets: CardSecrets,
    /// Files to write, by boot-partition path (sorted: stable order).
    pub files: BTreeMap<String, Content>,
    /// The cmdline.txt edit.
    pub cmdline: CmdlineEdit,
    /// The config.txt edit.
    pub config_txt: ConfigEdit,
    /// SHA-256 of every template, by name.
    pub template_hashes: BTreeMap<String, String>,
    /// Build time (seconds since the epoch).
    pub build_time: u64,
}

/// Why a card could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// A template failed to parse or render.
    #[error("template {name}: {message}")]
    Template {
        /// Template (path) name.
        name: String,
        /// Handlebars' complaint.
        message: String,
    },
    /// The overlay directory or one of its files is unusable.
    #[error("overlay {}: {message}", path.display())]
    Overlay {
        /// The offending path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file to bundle could not be read.
    #[error("{}: {message}", path.display())]
    HostFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A required airgap file is missing.
    #[error(
        "k3s.airgap_dir {}: {file} is missing; download it from the k3s release {version} (hint: k3s-arm64, install.sh, optionally k3s-airgap-images-arm64.tar.zst)",
        dir.display()
    )]
    AirgapMissing {
        /// The airgap directory.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
        /// The pinned k3s version.
        version: String,
    },
    /// A rendered config.txt snippet is malformed.
    #[error("template common/config.txt.hbs: {0}")]
    ConfigSnippet(#[from] ConfigTxtError),
    /// A rendered cmdline snippet is malformed.
    #[error("template {name}: {message}")]
    CmdlineSnippet {
        /// Template name.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An overlay boot file would replace a file piimg manages.
    #[error(
        "overlay boot file {dest:?} would replace a file piimg writes itself; rename it (piimg/, cmdline.txt, config.txt and the cloud-init files are managed)"
    )]
    ExtraCollides {
        /// Destination on the boot partition.
        dest: String,
    },
    /// An overlay boot file has a path that cannot be on a FAT partition.
    #[error("overlay boot file {dest:?}: {message}")]
    ExtraPath {
        /// Destination on the boot partition.
        dest: String,
        /// What is wrong.
        message: String,
    },
}

/// Renders `plan`'s card for `os` with `templates`, embedding `agent` (the
/// first-boot binary), the node's `secrets` and its HA part (`ha`).
pub fn render(
    plan: &NodePlan,
    secrets: &NodeSecrets,
    ha: &NodeHa,
    os: &Os,
    templates: &Templates,
    agent: &[u8],
    opts: RenderOptions,
) -> Result<Card, CardError> {
    let template_hashes = templates.hashes()?;
    let mut values = CardValues::new(plan);
    let instance_id = instance_id(plan, secrets, ha, &template_hashes, agent, opts.build_time);
    if os.first_boot == FirstBoot::CloudInit {
        values.instance_id = instance_id.clone();
    }
    let data = TemplateData { plan, card: values };
    let r = |name: &str| templates.render(name, &data);

    let mut files: BTreeMap<String, Content> = BTreeMap::new();
    let mut root_files = vec![
        RootFile {
            path: format!("/etc/systemd/system/{AGENT_UNIT}"),
            mode: 0o644,
            content: r("common/piimg-firstboot.service.hbs")?,
            owner: None,
        },
        RootFile {
            path: SSHD_DROP_IN.into(),
            mode: 0o644,
            content: r("common/sshd-piimg.conf.hbs")?,
            owner: None,
        },
    ];

    let cgroup = snippet_args("common/cmdline.txt.hbs", &r("common/cmdline.txt.hbs")?)?;
    let own_hook_prefix = format!("systemd.run={}", data.card.agent_path);
    // Our Wi-Fi country replaces any the base (or an earlier tool) set, as Imager
    // and raspi-config's do_wifi_country put it on cmdline.txt.
    let regdom_arg = &crate::upstream::facts().wifi.regdom_cmdline_arg;
    let regdom: Vec<String> = cgroup
        .iter()
        .any(|a| a.starts_with(regdom_arg.as_str()))
        .then(|| regdom_arg.clone())
        .into_iter()
        .collect();
    let mut secret_files = secrets.files.clone();
    let (boot, cmdline) = match os.first_boot {
        FirstBoot::SystemdRun => {
            let hook = snippet_args(
                "bookworm/cmdline-hook.txt.hbs",
                &r("bookworm/cmdline-hook.txt.hbs")?,
            )?;
            let keyfile = RootFile {
                path: format!("{NM_KEYFILE_DIR}/{}.nmconnection", data.card.keyfile_id),
                mode: 0o600,
                content: r("bookworm/network.nmconnection.hbs")?,
                owner: None,
            };
            // A Wi-Fi keyfile holds the PSK: it travels with the secrets, which the
            // agent moves into the root file system and scrubs from the card.
            if plan.network.wifi.is_some() {
                secret_files.push(keyfile);
            } else {
                root_files.push(keyfile);
            }
            let mut replace = hook.clone();
            replace.push(own_hook_prefix);
            replace.extend(regdom.iter().cloned());
            (
                BootHook::SystemdRun {
                    cmdline_args: hook.clone(),
                },
                CmdlineEdit {
                    append: cgroup.into_iter().chain(hook).collect(),
                    replace_prefixes: replace,
                },
            )
        }
        FirstBoot::CloudInit => {
            files.insert("user-data".into(), bytes(r("trixie/user-data.hbs")?));
            files.insert("meta-data".into(), bytes(r("trixie/meta-data.hbs")?));
            files.insert(
                "network-config".into(),
                bytes(r("trixie/network-config.hbs")?),
            );
            let ds = format!("ds=nocloud;i={instance_id}");
            (
                BootHook::CloudInit {
                    instance_id: instance_id.clone(),
                },
                CmdlineEdit {
                    append: cgroup.into_iter().chain([ds]).collect(),
                    replace_prefixes: [vec!["ds=nocloud".into(), own_hook_prefix], regdom].concat(),
                },
            )
        }
    };
    let config_txt = ConfigEdit::parse(&r("common/config.txt.hbs")?)?;

    if let (Some(ca), Some(path)) = (
        plan.k3s
            .etcd_s3
            .as_ref()
            .and_then(|s| s.endpoint_ca.as_ref()),
        data.card.etcd_s3_endpoint_ca,
    ) {
        let pem = std::fs::read_to_string(ca).map_err(|e| CardError::HostFile {
            path: ca.clone(),
            message: format!("k3s.etcd_s3.endpoint_ca: {e}"),
        })?;
        root_files.push(RootFile {
            path: path.to_string(),
            mode: 0o644,
            content: pem,
            owner: None,
        });
    }

    let airgap = match &plan.k3s.airgap_dir {
        None => None,
        Some(dir) => Some(airgap(dir, &plan.k3s.version, &mut files)?),
    };

    let node_config = NodeConfig {
        contract_version: CONTRACT_VERSION,
        cluster: plan.cluster.clone(),
        node_name: plan.name.clone(),
        domain: plan.domain.clone(),
        role: plan.role,
        bootstrap: plan.bootstrap,
        servers: plan
            .servers
            .iter()
            .map(|(name, ip)| ServerRef {
                name: name.clone(),
                ip: *ip,
            })
            .collect(),
        vip: plan.k3s.vip,
        network: plan.network.clone(),
        admin: Admin {
            user: plan.access.admin_user.clone(),
            ssh_authorized_keys: plan.access.ssh_authorized_keys.clone(),
            password_login: plan.access.password_login,
        },
        k3s: K3s {
            version: plan.k3s.version.clone(),
            config_yaml: r("common/k3s-config.yaml.hbs")?,
            airgap,
        },
        boot,
        files: root_files
            .into_iter()
            .chain(ha.root_files.iter().cloned())
            .collect(),
        ha: ha.ha.clone(),
        storage: plan.storage.card.clone(),
        customize: plan.customize.clone(),
    };
    let card_secrets = CardSecrets {
        contract_version: CONTRACT_VERSION,
        token: secrets.token.clone(),
        agent_token: secrets.agent_token.clone(),
        node_password: secrets.node_password.clone(),
        files: secret_files,
        password_hash: plan.access.password_hash.clone(),
    };
    files.insert(
        piimg_contract::NODE_CONFIG_FILE.into(),
        bytes(node_config.to_json() + "\n"),
    );
    files.insert(
        piimg_contract::SECRETS_FILE.into(),
        bytes(card_secrets.to_json() + "\n"),
    );
    files.insert(AGENT_FILE.into(), Content::Bytes(agent.to_vec()));
    // The agent's status slots, allocated now so the agent only ever overwrites them
    // in place (no cluster allocation or rename on the node: power-cut safe).
    files.insert(
        status_slots::STATUS_SLOTS_FILE.into(),
        Content::Bytes(vec![0; status_slots::SLOTS_FILE_SIZE]),
    );

    for extra in templates.boot_extras() {
        check_extra_path(&extra.dest)?;
        if files.contains_key(&extra.dest) || is_managed(&extra.dest) {
            return Err(CardError::ExtraCollides {
                dest: extra.dest.clone(),
            });
        }
        let content = if extra.template {
            bytes(templates.render_extra(extra, &data)?)
        } else {
            Content::Host(extra.source.clone())
        };
        files.insert(extra.dest.clone(), content);
    }

    Ok(Card {
        node: plan.name.clone(),
        profile: plan.profile.clone(),
        cluster: plan.cluster.clone(),
        os: os.clone(),
        node_config,
        secrets: card_secrets,
        files,
        cmdline,
        config_txt,
        template_hashes,
        build_time: opts.build_time,
    })
}

fn bytes(s: String) -> Content {
    Content::Bytes(s.into_bytes())
}

/// Paths on the boot partition that piimg manages (overlay extras may not use them).
fn is_managed(dest: &str) -> bool {
    let lower = dest.to_ascii_lowercase();
    lower.starts_with("piimg/")
        || lower == "piimg"
        || [
            CMDLINE_TXT,
            CONFIG_TXT,
            "user-data",
            "meta-data",
            "network-config",
        ]
        .contains(&lower.as_str())
}

fn check_extra_path(dest: &str) -> Result<(), CardError> {
    let bad = |m: &str| {
        Err(CardError::ExtraPath {
            dest: dest.to_string(),
            message: m.to_string(),
        })
    };
    if dest.is_empty() || dest.starts_with('/') {
        return bad("must be a relative path");
    }
    if dest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("empty, `.` or `..` path components are not allowed");
    }
    if dest
        .chars()
        .any(|c| c.is_control() || "\"*:<>?\\|".contains(c))
    {
        return bad("contains a character FAT does not allow (\" * : < > ? \\ |)");
    }
    Ok(())
}

/// Arguments of a rendered cmdline snippet (one line of whitespace-separated args).
fn snippet_args(name: &'static str, text: &str) -> Result<Vec<String>, CardError> {
    if text.lines().filter(|l| !l.trim().is_empty()).count() > 1 {
        return Err(CardError::CmdlineSnippet {
            name,
            message: "must render to one line (cmdline.txt is one line)".into(),
        });
    }
    Ok(text.split_whitespace().map(String::from).collect())
}

fn airgap(
    dir: &std::path::Path,
    version: &str,
    files: &mut BTreeMap<String, Content>,
) -> Result<Airgap, CardError> {
    let mut present = Vec::new();
    for (name, required) in AIRGAP_FILES {
        let p = dir.join(name);
        if p.is_file() {
            files.insert(format!("{AIRGAP_DIR}/{name}"), Content::Host(p));
            present.push(name);
        } else if required {
            return Err(CardError::AirgapMissing {
                dir: dir.to_path_buf(),
                file: name,
                version: version.to_string(),
            });
        }
    }
    Ok(Airgap {
        binary: format!("{AIRGAP_DIR}/{}", AIRGAP_FILES[0].0),
        install_script: format!("{AIRGAP_DIR}/{}", AIRGAP_FILES[1].0),
        images: present
            .contains(&AIRGAP_FILES[2].0)
            .then(|| format!("{AIRGAP_DIR}/{}", AIRGAP_FILES[2].0)),
    })
}

/// The cloud-init instance id: `piimg-<node>-<12 hex>`, a hash of everything that
/// goes on the card plus the build time. The same inputs and SOURCE_DATE_EPOCH give
/// the same id (reproducible builds); a new build time gives a new id, so cloud-init
/// treats a re-imaged card as a new machine.
pub fn instance_id(
    plan: &NodePlan,
    secrets: &NodeSecrets,
    ha: &NodeHa,
    template_hashes: &BTreeMap<String, String>,
    agent: &[u8],
    build_time: u64,
) -> String {
    let mut h = Sha256::new();
    h.update(b"piimg instance-id v1\0");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(b"\0");
    h.update(serde_json::to_string(plan).unwrap_or_default().as_bytes());
    h.update(b"\0");
    h.update(secrets.token.as_bytes());
    h.update(b"\0");
    if let Some(agent) = &secrets.agent_token {
        h.update(agent.as_bytes());
        h.update(b"\0");
    }
    h.update(secrets.node_password.as_deref().unwrap_or("").as_bytes());
    for f in secrets.files.iter().chain(&ha.root_files) {
        h.update(f.path.as_bytes());
        h.update(f.content.as_bytes());
    }
    h.update(serde_json::to_string(&ha.ha).unwrap_or_default().as_bytes());
    for (k, v) in template_hashes {
        h.update(k.as_bytes());
        h.update(v.as_bytes());
    }
    h.update(Sha256::digest(agent));
    h.update(build_time.to_le_bytes());
    let hex = hex::encode(h.finalize());
    format!("piimg-{}-{}", plan.name, &hex[..12])
}

#[cfg(test)]
pub(crate) mod tests;
