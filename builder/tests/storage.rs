//! Storage on the card: every storage mode of a profile (SD, USB and NVMe boot, a
//! data disk, SD-wear on and off, `[k3s.etcd_s3]`) planned and rendered the way
//! `piimg build` does it, then read back: `node.json` with the contract's parser,
//! config.txt after the edit split into its `[section]`s, k3s's config as YAML, and
//! what each card's `secrets.json` carries.

use piimg::card::{self, Card, Content, FirstBoot, NodeHa, NodeSecrets, Os, RenderOptions};
use piimg::pki::{ClusterCa, HaOptions, files_for_node};
use piimg::plan::NodePlan;
use piimg::profile::secrets::{ClusterState, S3Credentials};
use piimg_contract::storage::{BootDevice, DataDisk, DiskBus, SdWear, Storage};
use piimg_contract::{CardSecrets, NodeConfig};
use std::collections::BTreeMap;
use std::path::Path;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2kP1KCNa0EvSf0y8lD5Y0uV6fw7q1w0b6fPpC5xr0X test";

/// Three servers (NVMe boot, USB boot, SD with an NVMe data disk) and four agents
/// (SD on a Pi 4, USB boot on a Pi 4, SD with a USB data disk, SD on a Pi 5).
fn profile_text(extra: &str) -> String {
    format!(
        r#"
[cluster]
name = "lab"
[network]
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
[k3s]
version = "v1.31.4+k3s1"
{extra}
[access]
admin_user = "ops"
ssh_keys = ["{KEY}"]
[[nodes]]
name = "s-nvme"
ip = "10.0.0.11"
role = "server"
hardware = "pi5-8gb"
storage = "nvme"
[[nodes]]
name = "s-usb"
ip = "10.0.0.12"
role = "server"
hardware = "pi5-8gb"
storage = "usb"
[[nodes]]
name = "s-data"
ip = "10.0.0.13"
role = "server"
hardware = "pi5-8gb"
data_disk = "nvme"
[[nodes]]
name = "w-sd"
ip = "10.0.0.21"
role = "agent"
hardware = "pi4-2gb"
[[nodes]]
name = "w-usb"
ip = "10.0.0.22"
role = "agent"
hardware = "pi4-4gb"
storage = "usb"
[[nodes]]
name = "w-data"
ip = "10.0.0.23"
role = "agent"
hardware = "pi4-4gb"
data_disk = "usb"
[[nodes]]
name = "w-pi5"
ip = "10.0.0.24"
role = "agent"
hardware = "pi5-4gb"
"#
    )
}

fn plan_all(text: &str, dir: &Path) -> BTreeMap<String, NodePlan> {
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).expect("write profile");
    let profile = piimg::profile::load(&path).expect("profile loads");
    let findings = piimg::profile::validate(&profile);
    assert!(findings.is_ok(), "{:?}", findings.errors);
    piimg::plan::plan_with(&profile, &ClusterState::default(), vec![KEY.into()])
        .expect("plans")
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect()
}

fn render(plan: &NodePlan, secrets: &NodeSecrets) -> Card {
    card::render(
        plan,
        secrets,
        &NodeHa::default(),
        &Os {
            codename: "bookworm".into(),
            first_boot: FirstBoot::SystemdRun,
        },
        &card::Templates::builtin(),
        b"agent",
        RenderOptions { build_time: 1 },
    )
    .expect("card renders")
}

fn text(card: &Card, path: &str) -> String {
    match &card.files[path] {
        Content::Bytes(b) => String::from_utf8(b.clone()).expect("utf-8"),
        Content::Host(p) => panic!("{path} is a host file {}", p.display()),
    }
}

/// A Raspberry Pi OS config.txt as pi-gen ships it (with the 2026 `[pi5]` section).
const CONFIG_TXT: &str = "dtparam=audio=on\ncamera_auto_detect=1\nauto_initramfs=1\narm_boost=1\n\n[cm4]\notg_mode=1\n\n[cm5]\ndtoverlay=dwc2,dr_mode=host\n\n[pi5]\ndtoverlay=nospi10\n\n[all]\n";

/// config.txt after the card's edit, as (section, lines) in file order; lines before
/// any filter count as `[all]`, as the firmware reads them.
fn sections(card: &Card) -> Vec<(String, Vec<String>)> {
    let edited = card.config_txt.apply(CONFIG_TXT.as_bytes()).expect("edit");
    let mut out = vec![("all".to_string(), Vec::new())];
    for l in edited.lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            Some(name) => out.push((name.to_string(), Vec::new())),
            None => out.last_mut().expect("a section").1.push(l.to_string()),
        }
    }
    out
}

/// The sections `line` is in.
fn sections_with(card: &Card, line: &str) -> Vec<String> {
    sections(card)
        .into_iter()
        .filter(|(_, lines)| lines.iter().any(|l| l == line))
        .map(|(name, _)| name)
        .collect()
}

fn yaml(card: &Card) -> serde_yaml_ng::Mapping {
    serde_yaml_ng::from_str(&card.node_config.k3s.config_yaml).expect("k3s config is YAML")
}

fn kubelet_args(card: &Card) -> Vec<String> {
    yaml(card)
        .get("kubelet-arg")
        .and_then(|v| v.as_sequence())
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn each_storage_mode_reaches_node_json_and_config_txt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plans = plan_all(&profile_text(""), dir.path());
    let want = |boot, data: Option<DiskBus>, sd_wear| Storage {
        boot_device: boot,
        data_disk: data.map(|bus| DataDisk {
            bus,
            label: "piimg-data".into(),
            mount_point: "/var/lib/rancher/k3s".into(),
        }),
        sd_wear,
    };
    let cases = [
        ("s-nvme", want(BootDevice::Nvme, None, SdWear::Off), true),
        ("s-usb", want(BootDevice::Usb, None, SdWear::Off), false),
        (
            "s-data",
            want(BootDevice::Sd, Some(DiskBus::Nvme), SdWear::Minimal),
            true,
        ),
        ("w-sd", want(BootDevice::Sd, None, SdWear::Minimal), false),
        ("w-usb", want(BootDevice::Usb, None, SdWear::Off), false),
        (
            "w-data",
            want(BootDevice::Sd, Some(DiskBus::Usb), SdWear::Minimal),
            false,
        ),
        ("w-pi5", want(BootDevice::Sd, None, SdWear::Minimal), false),
    ];
    for (name, storage, pcie) in cases {
        let c = render(&plans[name], &NodeSecrets::default());
        let cfg = NodeConfig::from_json(&text(&c, piimg_contract::NODE_CONFIG_FILE))
            .expect("node.json parses with the contract");
        assert_eq!(cfg.storage, storage, "{name}");
        let pciex1 = sections_with(&c, "dtparam=pciex1");
        if pcie {
            assert_eq!(pciex1, ["pi5"], "{name}: PCIe on, only under [pi5]");
        } else {
            assert!(pciex1.is_empty(), "{name}: {:?}", sections(&c));
        }
        assert!(
            sections_with(&c, "dtparam=pciex1_gen=3").is_empty(),
            "{name}: Gen 3 is opt-in"
        );
        // Nothing else changes for a disk boot: the same image layout, the same
        // cmdline (root=PARTUUID= finds the root on any disk).
        assert_eq!(
            c.cmdline,
            render(&plans["w-pi5"], &NodeSecrets::default()).cmdline,
            "{name}"
        );
        // The image's own [pi5] lines stay, piimg's land beside them.
        assert_eq!(sections_with(&c, "dtoverlay=nospi10"), ["pi5"], "{name}");
    }
}

#[test]
fn pcie_gen3_and_sd_wear_off_are_the_profiles_choice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plans = plan_all(
        &profile_text("[storage]\nsd_wear = \"off\"\npcie_gen3 = true\n"),
        dir.path(),
    );
    let nvme = render(&plans["s-nvme"], &NodeSecrets::default());
    assert_eq!(sections_with(&nvme, "dtparam=pciex1_gen=3"), ["pi5"]);
    let sd = render(&plans["w-sd"], &NodeSecrets::default());
    assert_eq!(sd.node_config.storage.sd_wear, SdWear::Off);
    assert!(
        !kubelet_args(&sd).iter().any(|a| a.starts_with("image-gc-")),
        "{:?}",
        kubelet_args(&sd)
    );
}

#[test]
fn sd_nodes_get_image_gc_thresholds_disk_nodes_and_profile_overrides_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plans = plan_all(&profile_text(""), dir.path());
    let sd = kubelet_args(&render(&plans["w-sd"], &NodeSecrets::default()));
    assert!(
        sd.contains(&"image-gc-high-threshold=70".to_string())
            && sd.contains(&"image-gc-low-threshold=50".to_string()),
        "{sd:?}"
    );
    // The small board's reservations are still there.
    assert!(
        sd.iter().any(|a| a.starts_with("system-reserved=")),
        "{sd:?}"
    );
    let nvme = kubelet_args(&render(&plans["s-nvme"], &NodeSecrets::default()));
    assert!(!nvme.iter().any(|a| a.starts_with("image-gc-")), "{nvme:?}");
    let own = plan_all(
        &profile_text("kubelet_args = [\"image-gc-high-threshold=90\"]"),
        dir.path(),
    );
    let sd = kubelet_args(&render(&own["w-sd"], &NodeSecrets::default()));
    assert!(
        sd.contains(&"image-gc-high-threshold=90".to_string()),
        "{sd:?}"
    );
    assert!(
        !sd.contains(&"image-gc-high-threshold=70".to_string()),
        "{sd:?}"
    );
    assert!(
        sd.contains(&"image-gc-low-threshold=50".to_string()),
        "{sd:?}"
    );
}

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

fn s3_profile(dir: &Path) -> String {
    std::fs::write(dir.join("minio-ca.pem"), CA_PEM).expect("ca");
    profile_text(
        "[k3s.etcd_s3]\nendpoint = \"minio.lan:9000\"\nbucket = \"lab-etcd\"\nfolder = \"lab\"\nendpoint_ca = \"minio-ca.pem\"\n",
    )
}

#[test]
fn etcd_s3_settings_go_to_server_configs_and_the_keys_only_into_server_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plans = plan_all(&s3_profile(dir.path()), dir.path());
    let ca = ClusterCa::create(&dir.path().join("secrets"), "lab").expect("ca");
    let creds = S3Credentials {
        access_key: "AKIAEXAMPLE".into(),
        secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCY".into(),
    };
    let opts = HaOptions {
        etcd_s3: Some(creds.clone()),
        agent_token_secret: Some("ag3nt".into()),
        ..HaOptions::default()
    };
    for (name, plan) in &plans {
        let nf = files_for_node(plan, &ca, "s3cret", &opts).expect("node files");
        let secrets = NodeSecrets {
            token: nf.token,
            agent_token: nf.agent_token,
            node_password: Some(nf.node_password),
            files: nf.secret_files,
        };
        let c = card::render(
            plan,
            &secrets,
            &NodeHa {
                root_files: nf.files,
                ha: nf.ha,
            },
            &Os {
                codename: "trixie".into(),
                first_boot: FirstBoot::CloudInit,
            },
            &card::Templates::builtin(),
            b"agent",
            RenderOptions { build_time: 1 },
        )
        .expect("card");
        // Nothing but secrets.json (scrubbed by the agent) holds the keys.
        for (path, content) in &c.files {
            if path == piimg_contract::SECRETS_FILE {
                continue;
            }
            if let Content::Bytes(b) = content {
                let t = String::from_utf8_lossy(b);
                assert!(
                    !t.contains(&creds.secret_key) && !t.contains(&creds.access_key),
                    "{name}: {path} carries an S3 key"
                );
            }
        }
        let secrets =
            CardSecrets::from_json(&text(&c, piimg_contract::SECRETS_FILE)).expect("secrets");
        let drop_in = secrets
            .files
            .iter()
            .find(|f| f.path.starts_with("/etc/rancher/k3s/config.yaml.d/"));
        let y = yaml(&c);
        let ca_file = c
            .node_config
            .files
            .iter()
            .find(|f| f.path == "/etc/rancher/k3s/etcd-s3-ca.pem");
        if plan.role == piimg_contract::Role::Server {
            let f = drop_in.unwrap_or_else(|| panic!("{name}: no S3 credentials drop-in"));
            assert_eq!(f.mode, 0o600, "{name}");
            assert!(f.path.ends_with(".yaml"), "{}", f.path);
            let keys: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&f.content).expect("yaml");
            assert_eq!(keys["etcd-s3-access-key"].as_str(), Some("AKIAEXAMPLE"));
            assert_eq!(
                keys["etcd-s3-secret-key"].as_str(),
                Some(creds.secret_key.as_str())
            );
            assert_eq!(y["etcd-s3"].as_bool(), Some(true), "{name}");
            assert_eq!(y["etcd-s3-endpoint"].as_str(), Some("minio.lan:9000"));
            assert_eq!(y["etcd-s3-bucket"].as_str(), Some("lab-etcd"));
            assert_eq!(y["etcd-s3-folder"].as_str(), Some("lab"));
            assert_eq!(y["etcd-s3-region"].as_str(), Some("us-east-1"));
            assert_eq!(
                y["etcd-s3-endpoint-ca"].as_str(),
                Some("/etc/rancher/k3s/etcd-s3-ca.pem")
            );
            assert!(y.get("etcd-s3-insecure").is_none() && y.get("etcd-s3-access-key").is_none());
            let ca_file = ca_file.unwrap_or_else(|| panic!("{name}: no CA bundle"));
            assert_eq!(ca_file.content, CA_PEM);
            assert_eq!(ca_file.mode, 0o644);
        } else {
            assert!(drop_in.is_none(), "{name}: an agent carries S3 keys");
            assert!(
                !y.keys()
                    .any(|k| k.as_str().is_some_and(|k| k.starts_with("etcd-s3"))),
                "{name}: {y:?}"
            );
            assert!(ca_file.is_none(), "{name}");
        }
    }
}

#[test]
fn a_server_card_without_s3_credentials_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plans = plan_all(&s3_profile(dir.path()), dir.path());
    let ca = ClusterCa::create(&dir.path().join("secrets"), "lab").expect("ca");
    let err = files_for_node(&plans["s-usb"], &ca, "s3cret", &HaOptions::default())
        .expect_err("no credentials")
        .to_string();
    assert!(err.contains("[k3s.etcd_s3]"), "{err}");
    assert!(files_for_node(&plans["w-sd"], &ca, "s3cret", &HaOptions::default()).is_ok());
}

/// (field, message) of each finding.
type Pairs = Vec<(String, String)>;

/// Validation of `text` written as `dir/lab.toml`: (field, message) of every error
/// and warning.
fn findings(text: &str, dir: &Path) -> (Pairs, Pairs) {
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).expect("write profile");
    let profile = piimg::profile::load(&path).expect("profile loads");
    let f = piimg::profile::validate(&profile);
    let pairs = |v: &[piimg::profile::Finding]| {
        v.iter()
            .map(|f| (f.field.clone(), f.message.clone()))
            .collect::<Vec<_>>()
    };
    (pairs(&f.errors), pairs(&f.warnings))
}

/// The one finding of `list` whose field is `field`.
fn one<'a>(list: &'a [(String, String)], field: &str) -> &'a str {
    let hits: Vec<&(String, String)> = list.iter().filter(|(f, _)| f == field).collect();
    assert_eq!(hits.len(), 1, "{field}: {list:#?}");
    &hits[0].1
}

#[test]
fn validation_knows_which_board_boots_what() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The profile as written: no error; the one SD server without a data disk is none
    // (s-data keeps etcd on its NVMe disk), so no etcd-on-SD warning.
    let (errors, warnings) = findings(&profile_text(""), dir.path());
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        !warnings
            .iter()
            .any(|(_, m)| m.contains("embedded etcd on SD")),
        "{warnings:#?}"
    );
    let text = profile_text("")
        .replace(
            "name = \"w-usb\"\nip = \"10.0.0.22\"\nrole = \"agent\"\nhardware = \"pi4-4gb\"\nstorage = \"usb\"",
            "name = \"w-usb\"\nip = \"10.0.0.22\"\nrole = \"agent\"\nhardware = \"pi4-4gb\"\nstorage = \"nvme\"",
        )
        .replace("data_disk = \"usb\"", "data_disk = \"nvme\"")
        .replace(
            "name = \"s-usb\"\nip = \"10.0.0.12\"\nrole = \"server\"\nhardware = \"pi5-8gb\"\nstorage = \"usb\"",
            "name = \"s-usb\"\nip = \"10.0.0.12\"\nrole = \"server\"\nhardware = \"pi5-8gb\"\nstorage = \"usb\"\ndata_disk = \"usb\"",
        );
    let (errors, _) = findings(&text, dir.path());
    assert_eq!(
        one(&errors, "nodes[4] (w-usb).storage"),
        "a Raspberry Pi 4 cannot boot from NVMe (only a Raspberry Pi 5 has the PCIe connector); put the SSD in a USB adapter and use storage = \"usb\""
    );
    assert_eq!(
        one(&errors, "nodes[5] (w-data).data_disk"),
        "a Raspberry Pi 4 has no PCIe connector for an NVMe SSD; put it in a USB adapter and use data_disk = \"usb\""
    );
    assert_eq!(
        one(&errors, "nodes[1] (s-usb).data_disk"),
        "this node boots from its USB disk, which already holds k3s's data; data_disk is for nodes that boot from their SD card (remove one of the two)"
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");
    // An unknown bus is a parse error naming the line and the choices.
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        profile_text("").replace("data_disk = \"usb\"", "data_disk = \"sata\""),
    )
    .expect("write");
    let err = piimg::profile::load(&path).expect_err("sata").to_string();
    assert!(
        err.contains("bad.toml:") && err.ends_with("unknown value `sata` (valid: usb, nvme)"),
        "{err}"
    );
}

#[test]
fn the_etcd_on_sd_warning_names_only_servers_whose_data_is_on_sd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = profile_text("").replace(
        "name = \"s-usb\"\nip = \"10.0.0.12\"\nrole = \"server\"\nhardware = \"pi5-8gb\"\nstorage = \"usb\"",
        "name = \"s-usb\"\nip = \"10.0.0.12\"\nrole = \"server\"\nhardware = \"pi5-8gb\"",
    );
    let (errors, warnings) = findings(&text, dir.path());
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        one(&warnings, "nodes"),
        "embedded etcd on SD cards (s-usb) is slow and wears the cards; boot these servers from a USB or NVMe disk (storage = \"usb\" or \"nvme\") or give them a data disk for k3s (data_disk = \"usb\" or \"nvme\")"
    );
}

#[test]
fn storage_options_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let no_nvme = profile_text("[storage]\npcie_gen3 = true\n")
        .replace("storage = \"nvme\"", "storage = \"usb\"")
        .replace("data_disk = \"nvme\"", "data_disk = \"usb\"");
    let (errors, warnings) = findings(&no_nvme, dir.path());
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        one(&warnings, "storage.pcie_gen3"),
        "no Raspberry Pi 5 node has an NVMe disk (storage or data_disk = \"nvme\"): it changes nothing"
    );
    let (_, warnings) = findings(&profile_text("[storage]\npcie_gen3 = true\n"), dir.path());
    assert!(
        !warnings.iter().any(|(f, _)| f == "storage.pcie_gen3"),
        "{warnings:#?}"
    );
    let data_dir = profile_text(
        "server_args = [\"data-dir=/srv/k3s\"]\nagent_args = [\"--data-dir=/srv/k3s\"]",
    );
    let (errors, _) = findings(&data_dir, dir.path());
    for field in ["k3s.server_args", "k3s.agent_args"] {
        assert_eq!(
            one(&errors, field),
            "data-dir moves k3s's data off the nodes' data disks (mounted at /var/lib/rancher/k3s); remove it"
        );
    }
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, profile_text("[storage]\nsd_wear = \"max\"\n")).expect("write");
    let err = piimg::profile::load(&path).expect_err("max").to_string();
    assert!(
        err.ends_with("unknown value `max` (valid: off, minimal)"),
        "{err}"
    );
}

#[test]
fn etcd_s3_settings_are_checked_and_its_absence_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (errors, warnings) = findings(&profile_text(""), dir.path());
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(
        one(&warnings, "k3s.etcd_s3"),
        "3 servers keep their etcd snapshots only on their own disks; add [k3s.etcd_s3] (an S3 or MinIO bucket) so a snapshot survives the disk that dies"
    );
    // One server: the no-HA warning says enough.
    let single = profile_text("")
        .replace(
            "role = \"server\"\nhardware = \"pi5-8gb\"\nstorage = \"usb\"",
            "role = \"agent\"\nhardware = \"pi5-8gb\"\nstorage = \"usb\"",
        )
        .replace(
            "role = \"server\"\nhardware = \"pi5-8gb\"\ndata_disk",
            "role = \"agent\"\nhardware = \"pi5-8gb\"\ndata_disk",
        );
    let (_, warnings) = findings(&single, dir.path());
    assert!(
        !warnings.iter().any(|(f, _)| f == "k3s.etcd_s3"),
        "{warnings:#?}"
    );
    // A good target: no finding about it.
    let (errors, warnings) = findings(&s3_profile(dir.path()), dir.path());
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        !warnings.iter().any(|(f, _)| f.starts_with("k3s.etcd_s3")),
        "{warnings:#?}"
    );
    let bad = profile_text(
        "server_args = [\"etcd-s3-bucket=x\"]\n[k3s.etcd_s3]\nendpoint = \"https://minio.lan:9000\"\nbucket = \"Lab_Etcd\"\nfolder = \"/lab/\"\nregion = \"\"\nendpoint_ca = \"nope.pem\"\n",
    );
    let (errors, _) = findings(&bad, dir.path());
    assert_eq!(
        one(&errors, "k3s.server_args[0]"),
        "\"etcd-s3-bucket\" comes from [k3s.etcd_s3] (its keys from the secrets directory); set it there"
    );
    assert_eq!(
        one(&errors, "k3s.etcd_s3.bucket"),
        "\"Lab_Etcd\" is not an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')"
    );
    assert_eq!(
        one(&errors, "k3s.etcd_s3.endpoint"),
        "\"https://minio.lan:9000\": give host[:port] without a scheme (k3s uses HTTPS; insecure = true for plain HTTP)"
    );
    assert_eq!(
        one(&errors, "k3s.etcd_s3.folder"),
        "\"/lab/\" is not a folder (no leading, trailing or double '/', no spaces), e.g. \"lab\""
    );
    assert_eq!(
        one(&errors, "k3s.etcd_s3.region"),
        "\"\" is not a region (like \"us-east-1\")"
    );
    let ca = one(&errors, "k3s.etcd_s3.endpoint_ca");
    assert!(
        ca.starts_with(&format!("{}: ", dir.path().join("nope.pem").display())),
        "{ca}"
    );
    assert_eq!(errors.len(), 6, "{errors:#?}");
    let spaced = profile_text("[k3s.etcd_s3]\nendpoint = \"minio lan\"\nbucket = \"lab\"\n");
    let (errors, _) = findings(&spaced, dir.path());
    assert_eq!(
        one(&errors, "k3s.etcd_s3.endpoint"),
        "\"minio lan\" is not host[:port], e.g. \"minio.lan:9000\""
    );
    std::fs::write(dir.path().join("key.pem"), "-----BEGIN PRIVATE KEY-----\n").expect("write");
    let not_ca = profile_text("[k3s.etcd_s3]\nbucket = \"lab\"\nendpoint_ca = \"key.pem\"\n");
    let (errors, _) = findings(&not_ca, dir.path());
    assert_eq!(
        one(&errors, "k3s.etcd_s3.endpoint_ca"),
        format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            dir.path().join("key.pem").display()
        )
    );
    std::fs::write(dir.path().join("ca.pem"), CA_PEM).expect("write");
    let plain = profile_text(
        "[k3s.etcd_s3]\nbucket = \"lab\"\nendpoint_ca = \"ca.pem\"\ninsecure = true\n",
    );
    let (errors, warnings) = findings(&plain, dir.path());
    assert_eq!(
        one(&errors, "k3s.etcd_s3.endpoint_ca"),
        "a CA bundle is for HTTPS, but insecure = true turns HTTPS off; remove one"
    );
    assert_eq!(
        one(&warnings, "k3s.etcd_s3.insecure"),
        "snapshots (every cluster secret in them) and the S3 keys travel over plain HTTP"
    );
    let unchecked = profile_text("[k3s.etcd_s3]\nbucket = \"lab\"\nskip_ssl_verify = true\n");
    let (_, warnings) = findings(&unchecked, dir.path());
    assert_eq!(
        one(&warnings, "k3s.etcd_s3.skip_ssl_verify"),
        "the endpoint's certificate is not checked; give its CA as endpoint_ca instead"
    );
    let both = profile_text(
        "[k3s.etcd_s3]\nbucket = \"lab\"\nendpoint_ca = \"ca.pem\"\nskip_ssl_verify = true\n",
    );
    let (_, warnings) = findings(&both, dir.path());
    assert_eq!(
        one(&warnings, "k3s.etcd_s3.skip_ssl_verify"),
        "certificates are not checked, so endpoint_ca is not used; drop skip_ssl_verify"
    );
    // A typo in the table is refused with the nearest key.
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        profile_text("[k3s.etcd_s3]\nbucket = \"lab\"\nbuckett = \"x\"\n"),
    )
    .expect("write");
    let err = piimg::profile::load(&path).expect_err("typo").to_string();
    assert!(err.contains("buckett"), "{err}");
}

fn piimg_plan(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_piimg"))
        .current_dir(dir)
        .env("HOME", dir)
        .env("COLUMNS", "80")
        .env_remove("PIIMG_PROFILE")
        .env_remove("PIIMG_GITHUB_KEYS_URL")
        .args(["plan", "-p", "lab.toml"])
        .args(args)
        .output()
        .expect("piimg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn plan_says_which_boot_order_each_disk_board_needs_and_where_snapshots_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("lab.toml"), s3_profile(dir.path())).expect("write");
    let out = piimg_plan(dir.path(), &["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let node = |name: &str| {
        doc["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    let nvme = node("s-nvme");
    assert_eq!(nvme["storage"]["boot_device"], "nvme");
    assert_eq!(nvme["boot_order"]["boot_order"], "0xf416");
    assert_eq!(
        nvme["boot_order"]["extra"],
        serde_json::json!(["PCIE_PROBE=1"])
    );
    assert_eq!(node("s-usb")["boot_order"]["boot_order"], "0xf14");
    assert_eq!(node("w-usb")["boot_order"]["boot_order"], "0xf14");
    let data = node("s-data");
    assert_eq!(data["boot_order"], serde_json::Value::Null);
    assert_eq!(data["storage_text"], "sd + nvme data");
    assert_eq!(data["storage"]["sd_wear"], "minimal");
    assert_eq!(
        doc["etcd_snapshots"]["s3"],
        "s3://lab-etcd/lab at https://minio.lan:9000 (us-east-1)"
    );
    let out = piimg_plan(dir.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    for name in ["etcd-s3-access-key", "etcd-s3-secret-key"] {
        assert!(
            err.contains(&format!(
                "lab.secrets/{name} is missing: server cards need it for [k3s.etcd_s3] and builds of them will refuse"
            )),
            "{err}"
        );
    }
    let human = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = human.lines().collect();
    let row = |name: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name}: {human}"))
    };
    assert!(row("s-nvme").trim_end().ends_with("nvme"), "{human}");
    assert!(
        row("w-data").trim_end().ends_with("sd + usb data"),
        "{human}"
    );
    let text = human.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("s-nvme (pi5): BOOT_ORDER=0xf416 (NVMe, then SD, then USB) and, for an adapter that is not a HAT+, PCIE_PROBE=1 on the node (booted once from any SD card): `sudo rpi-eeprom-config --edit`, reboot"),
        "{human}"
    );
    assert!(
        text.contains("w-usb (pi4): BOOT_ORDER=0xf14 (USB first, then SD)"),
        "{human}"
    );
    assert!(!text.contains("w-sd (pi4): BOOT_ORDER"), "{human}");
    assert!(
        text.contains("etcd snapshots (0 */6 * * *, 10 kept): on each server's own disk and in s3://lab-etcd/lab at https://minio.lan:9000 (us-east-1)"),
        "{human}"
    );
    assert!(human.lines().all(|l| l.chars().count() <= 80), "{human}");
    // With the keys in place, no such warning.
    std::fs::create_dir(dir.path().join("lab.secrets")).expect("dir");
    for name in ["etcd-s3-access-key", "etcd-s3-secret-key"] {
        std::fs::write(dir.path().join("lab.secrets").join(name), "k\n").expect("key");
    }
    let out = piimg_plan(dir.path(), &[]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("etcd-s3-access-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a target: the plan says the snapshots die with the disk.
    std::fs::write(dir.path().join("lab.toml"), profile_text("")).expect("write");
    let human = String::from_utf8(piimg_plan(dir.path(), &[]).stdout).expect("utf-8");
    let text = human.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("on each server's own disk only, lost with it (add [k3s.etcd_s3])"),
        "{human}"
    );
}

#[test]
fn restore_lets_only_the_bootstrap_card_initialise_again_with_the_same_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lab.toml");
    std::fs::write(&path, profile_text("")).expect("write");
    let profile = piimg::profile::load(&path).expect("loads");
    let issued = ClusterState {
        bootstrap_issued: true,
        issued: ["s-nvme".to_string()].into(),
        ..ClusterState::default()
    };
    let plan = |state: &ClusterState| {
        piimg::plan::plan_with(&profile, state, vec![KEY.into()]).expect("plans")
    };
    // An issued cluster: no card initialises, the bootstrap card waits for a peer.
    assert!(!plan(&issued).iter().any(|p| p.starts_cluster()));
    // --restore: the bootstrap server (the first one) initialises again, no other.
    let restored = plan(&piimg::build::restore_state(&issued, true));
    let starting: Vec<&str> = restored
        .iter()
        .filter(|p| p.starts_cluster())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(starting, ["s-nvme"]);
    assert_eq!(piimg::build::restore_state(&issued, false), issued);
    // Its card is a first bring-up with the cluster's own CA files and an init window
    // (a peer that answers is joined instead).
    let ca = ClusterCa::create(&dir.path().join("secrets"), "lab").expect("ca");
    let nf = files_for_node(&restored[0], &ca, "s3cret", &HaOptions::default()).expect("files");
    assert!(nf.ha.first_bring_up);
    assert!(nf.ha.init_window_secs > 0);
    assert!(
        nf.secret_files
            .iter()
            .any(|f| f.path == "/var/lib/rancher/k3s/server/tls/server-ca.key"),
        "the cluster's CA, not a new one"
    );
}

#[test]
fn image_gc_thresholds_kubelet_would_refuse_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A cluster-wide low of 75 is above sd_wear's high of 70 on SD nodes only
    // (kubelet's own high is 85).
    let text = profile_text("kubelet_args = [\"image-gc-low-threshold=75\"]");
    let (errors, _) = findings(&text, dir.path());
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "nodes[2] (s-data).kubelet_args",
            "nodes[3] (w-sd).kubelet_args",
            "nodes[5] (w-data).kubelet_args",
            "nodes[6] (w-pi5).kubelet_args",
        ],
        "{errors:#?}"
    );
    assert_eq!(
        errors[1].1,
        "this node's kubelet would get image-gc-high-threshold=70 and image-gc-low-threshold=75 (last set in k3s.kubelet_args, over sd_wear = \"minimal\"'s 70/50); kubelet refuses to start unless 0 <= low < high <= 100"
    );
    // A node's own high fixes it for that node.
    let fixed = text.replace(
        "name = \"w-sd\"\nip = \"10.0.0.21\"\nrole = \"agent\"\nhardware = \"pi4-2gb\"\n",
        "name = \"w-sd\"\nip = \"10.0.0.21\"\nrole = \"agent\"\nhardware = \"pi4-2gb\"\nkubelet_args = [\"image-gc-high-threshold=90\"]\n",
    );
    let (errors, _) = findings(&fixed, dir.path());
    assert!(
        !errors.iter().any(|(f, _)| f.contains("w-sd")),
        "{errors:#?}"
    );
    // Against kubelet's own defaults (85/80) on a disk-booting node.
    let text = profile_text("").replace(
        "storage = \"nvme\"\n",
        "storage = \"nvme\"\nkubelet_args = [\"image-gc-low-threshold=101\"]\n",
    );
    let (errors, _) = findings(&text, dir.path());
    assert_eq!(
        one(&errors, "nodes[0] (s-nvme).kubelet_args"),
        "this node's kubelet would get image-gc-high-threshold=85 and image-gc-low-threshold=101 (last set in kubelet_args); kubelet refuses to start unless 0 <= low < high <= 100"
    );
}
