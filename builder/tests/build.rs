//! `piimg build`: the card's text files checked with independent tools (cloud-init,
//! Python's configparser), and whole images built from generated Raspberry Pi
//! OS-shaped bases checked with fsck.vfat, e2fsck, mtools and bmaptool.

mod support;

use piimg::card::{
    self, Card, Content, FirstBoot, NodeHa, NodeSecrets, Os, RenderOptions, Templates,
};
use piimg::plan::NodePlan;
use piimg_contract::Role;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The reference cluster's bootstrap server alone (a single-server cluster), with
/// the resolvers, SANs, config.txt and key the card checks look for.
fn plan() -> NodePlan {
    let mut p = support::plan::node_plan("pi5-master-1", Role::Server, true, None);
    p.domain = Some("lan".into());
    p.network.address = Some("192.168.86.31".parse().unwrap());
    p.network.dns = vec!["192.168.86.1".parse().unwrap(), "9.9.9.9".parse().unwrap()];
    p.network.search = vec!["lan".into()];
    p.hardware.config_txt = vec!["kernel=kernel8.img".into()];
    p.hardware.config_txt_all = vec![
        "dtoverlay=disable-wifi".into(),
        "dtoverlay=disable-bt".into(),
    ];
    p.access.ssh_authorized_keys =
        vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly admin@laptop".into()];
    p.k3s.disable = vec!["servicelb".into()];
    p.servers.truncate(1);
    p
}

fn os(fb: FirstBoot) -> Os {
    Os {
        codename: if fb == FirstBoot::CloudInit {
            "trixie"
        } else {
            "bookworm"
        }
        .into(),
        first_boot: fb,
    }
}

fn render(p: &NodePlan, fb: FirstBoot) -> Card {
    card::render(
        p,
        &NodeSecrets {
            token: "K10abc::server:s3cret".into(),
            node_password: None,
            ..Default::default()
        },
        &NodeHa::default(),
        &os(fb),
        &Templates::builtin(),
        b"agent",
        RenderOptions {
            build_time: 1_700_000_000,
        },
    )
    .unwrap()
}

fn file_text(c: &Card, path: &str) -> String {
    match &c.files[path] {
        Content::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
        Content::Host(p) => std::fs::read_to_string(p).unwrap(),
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parses a NetworkManager keyfile with Python's configparser (independent of us)
/// and prints the fields that matter as `key=value` lines: address, prefix,
/// gateway (from `addressN=ip/len,gw` or a default `routeN`), dns, dns-search.
fn nm_fields(keyfile: &Path) -> String {
    let script = r#"
import configparser, sys
c = configparser.ConfigParser(interpolation=None)
c.optionxform = str
c.read(sys.argv[1])
v4 = c["ipv4"]
assert v4["method"] == "manual", v4["method"]
addr = v4["address1"].split(",")
ip, plen = addr[0].split("/")
gw = addr[1] if len(addr) > 1 else None
for k, v in v4.items():
    if k.startswith("route") and v.split(",")[0] in ("0.0.0.0/0", "default"):
        gw = v.split(",")[1]
if "gateway" in v4:
    gw = v4["gateway"]
print("address=" + ip)
print("prefix=" + plen)
print("gateway=" + str(gw))
print("dns=" + ";".join(x for x in v4.get("dns", "").split(";") if x))
print("search=" + ";".join(x for x in v4.get("dns-search", "").split(";") if x))
print("type=" + c["connection"]["type"])
"#;
    run(Command::new("python3").args(["-c", script]).arg(keyfile))
}

const EXPECTED_NET: &str = "address=192.168.86.31\nprefix=24\ngateway=192.168.86.1\ndns=192.168.86.1;9.9.9.9\nsearch=lan\ntype=ethernet\n";

#[test]
fn trixie_user_data_passes_cloud_init_schema() {
    let dir = tempfile::tempdir().unwrap();
    for password_login in [false, true] {
        let mut p = plan();
        p.access.password_login = password_login;
        let c = render(&p, FirstBoot::CloudInit);
        let ud = dir.path().join("user-data");
        std::fs::write(&ud, file_text(&c, "user-data")).unwrap();
        let out = run(Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&ud));
        assert!(out.contains("Valid cloud-config"), "{out}");
    }
}

#[test]
fn cloud_init_schema_catches_a_broken_user_data_overlay() {
    // The check above can fail: an overlay with a wrong type is rejected.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trixie")).unwrap();
    std::fs::write(
        dir.path().join("trixie/user-data.hbs"),
        "#cloud-config\nssh_pwauth: [not, a, boolean]\n",
    )
    .unwrap();
    let t = Templates::with_overlay(dir.path()).unwrap();
    let c = card::render(
        &plan(),
        &NodeSecrets::default(),
        &NodeHa::default(),
        &os(FirstBoot::CloudInit),
        &t,
        b"a",
        RenderOptions { build_time: 1 },
    )
    .unwrap();
    let ud = dir.path().join("user-data");
    std::fs::write(&ud, file_text(&c, "user-data")).unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&ud)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn trixie_network_config_converts_to_a_keyfile_with_the_static_address() {
    let dir = tempfile::tempdir().unwrap();
    let c = render(&plan(), FirstBoot::CloudInit);
    let nc = dir.path().join("network-config");
    std::fs::write(&nc, file_text(&c, "network-config")).unwrap();
    let out = dir.path().join("out");
    run(Command::new("cloud-init")
        .args([
            "devel",
            "net-convert",
            "-k",
            "yaml",
            "-D",
            "debian",
            "-O",
            "network-manager",
        ])
        .arg("-p")
        .arg(&nc)
        .arg("-d")
        .arg(&out));
    let keyfile = out.join("etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection");
    assert_eq!(nm_fields(&keyfile), EXPECTED_NET);
}

#[test]
fn bookworm_keyfile_matches_what_cloud_init_would_render() {
    let dir = tempfile::tempdir().unwrap();
    let c = render(&plan(), FirstBoot::SystemdRun);
    let kf = c
        .node_config
        .files
        .iter()
        .find(|f| {
            f.path
                .starts_with("/etc/NetworkManager/system-connections/")
        })
        .unwrap();
    assert_eq!(kf.mode, 0o600);
    let p = dir.path().join("piimg-eth0.nmconnection");
    std::fs::write(&p, &kf.content).unwrap();
    assert_eq!(nm_fields(&p), EXPECTED_NET);
    assert!(kf.content.contains("interface-name=eth0\n"));
}

#[test]
fn node_json_on_the_card_is_what_the_agent_parses() {
    let c = render(&plan(), FirstBoot::SystemdRun);
    let cfg =
        piimg_contract::NodeConfig::from_json(&file_text(&c, piimg_contract::NODE_CONFIG_FILE))
            .unwrap();
    assert_eq!(cfg.node_name, "pi5-master-1");
    assert_eq!(cfg.network.address, Some("192.168.86.31".parse().unwrap()));
}

// ---------------------------------------------------------------------------
// Day one: Wi-Fi, DHCP and the password hash on the card.
// ---------------------------------------------------------------------------

const SSID: &str = "lab net";
const PASSPHRASE: &str = "correct horse";
const HASH: &str = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$GmcwIgvdUC9qLWcKCi6gklUa1dM3ziD43YxYNURLKy0";

/// wpa_supplicant's own derivation (`wpa_passphrase SSID PASSPHRASE`'s `psk=` line).
fn wpa_passphrase(ssid: &str, pass: &str) -> String {
    let out = run(Command::new("wpa_passphrase").args([ssid, pass]));
    out.lines()
        .find_map(|l| l.trim().strip_prefix("psk="))
        .filter(|p| p.len() == 64)
        .unwrap_or_else(|| panic!("no hex psk in {out}"))
        .to_string()
}

/// `plan()` on Wi-Fi (wlan0, country GB, hidden) with the PSK derived by piimg,
/// taking its address from DHCP when `dhcp`, and with the admin's password hash.
fn wifi_plan(dhcp: bool) -> NodePlan {
    let mut p = plan();
    p.network.interface = "wlan0".into();
    p.network.wifi = Some(piimg_contract::Wifi {
        ssid: SSID.into(),
        country: "GB".into(),
        hidden: true,
    });
    p.wifi_psk = Some(piimg::profile::wifi::psk_hex(SSID, PASSPHRASE).unwrap());
    if dhcp {
        p.role = Role::Agent;
        p.network.address = None;
    }
    p.access.password_hash = Some(HASH.into());
    p
}

/// Every text file of the card (boot files and node.json's root files) joined.
fn public_text(c: &Card) -> String {
    let mut all = String::new();
    for (path, content) in &c.files {
        if path == piimg_contract::SECRETS_FILE || path == "network-config" {
            continue;
        }
        if let Content::Bytes(b) = content {
            all.push_str(&String::from_utf8_lossy(b));
        }
    }
    all
}

/// Parses a Wi-Fi keyfile with configparser and prints its Wi-Fi and IPv4 fields.
fn nm_wifi_fields(keyfile: &Path) -> String {
    let script = r#"
import configparser, sys
c = configparser.ConfigParser(interpolation=None)
c.optionxform = str
c.read(sys.argv[1])
print("type=" + c["connection"]["type"])
print("interface=" + c["connection"].get("interface-name", ""))
print("ssid=" + c["wifi"]["ssid"])
print("hidden=" + c["wifi"].get("hidden", "false"))
print("key-mgmt=" + c["wifi-security"]["key-mgmt"])
print("psk=" + c["wifi-security"]["psk"])
print("method=" + c["ipv4"]["method"])
"#;
    run(Command::new("python3").args(["-c", script]).arg(keyfile))
}

#[test]
fn psk_matches_wpa_passphrase() {
    for (ssid, pass) in [(SSID, PASSPHRASE), ("IEEE", "password"), ("x", "12345678")] {
        assert_eq!(
            piimg::profile::wifi::psk_hex(ssid, pass).unwrap(),
            wpa_passphrase(ssid, pass),
            "{ssid}/{pass}"
        );
    }
}

#[test]
fn bookworm_wifi_keyfile_travels_with_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let psk = wpa_passphrase(SSID, PASSPHRASE);
    for dhcp in [false, true] {
        let c = render(&wifi_plan(dhcp), FirstBoot::SystemdRun);
        // Not in node.json: the keyfile holds the PSK.
        assert!(
            !c.node_config
                .files
                .iter()
                .any(|f| f.path.starts_with("/etc/NetworkManager/")),
            "keyfile in node.json"
        );
        let kf = c
            .secrets
            .files
            .iter()
            .find(|f| f.path == "/etc/NetworkManager/system-connections/piimg-wlan0.nmconnection")
            .expect("the keyfile is a secret file");
        assert_eq!(kf.mode, 0o600);
        let p = dir.path().join("piimg-wlan0.nmconnection");
        std::fs::write(&p, &kf.content).unwrap();
        let method = if dhcp { "auto" } else { "manual" };
        assert_eq!(
            nm_wifi_fields(&p),
            format!(
                "type=wifi\ninterface=wlan0\nssid={SSID}\nhidden=true\nkey-mgmt=wpa-psk\npsk={psk}\nmethod={method}\n"
            )
        );
        if !dhcp {
            let f = nm_fields(&p);
            assert!(
                f.starts_with("address=192.168.86.31\nprefix=24\ngateway=192.168.86.1\n"),
                "{f}"
            );
        }
        // The regulatory domain is on the kernel command line, as Imager puts it.
        let base = b"console=tty1 root=PARTUUID=abcd-02 rootwait cfg80211.ieee80211_regdom=US\n";
        let cmdline = c.cmdline.apply(base).unwrap();
        assert!(
            cmdline.contains(" cfg80211.ieee80211_regdom=GB"),
            "{cmdline}"
        );
        assert!(!cmdline.contains("regdom=US"), "{cmdline}");
        // Neither the PSK, the passphrase nor the password hash on the card outside
        // secrets.json; the hash is in it.
        let public = public_text(&c);
        for secret in [psk.as_str(), PASSPHRASE, HASH] {
            assert!(!public.contains(secret), "{secret} outside secrets.json");
        }
        let secrets = file_text(&c, piimg_contract::SECRETS_FILE);
        let parsed = piimg_contract::CardSecrets::from_json(&secrets).unwrap();
        assert_eq!(parsed.password_hash.as_deref(), Some(HASH));
        assert!(!secrets.contains(PASSPHRASE));
    }
}

#[test]
fn trixie_wifi_network_config_renders_through_netplan_to_networkmanager() {
    let dir = tempfile::tempdir().unwrap();
    let psk = wpa_passphrase(SSID, PASSPHRASE);
    for dhcp in [false, true] {
        let d = dir.path().join(format!("dhcp-{dhcp}"));
        std::fs::create_dir_all(&d).unwrap();
        let c = render(&wifi_plan(dhcp), FirstBoot::CloudInit);
        let nc = d.join("network-config");
        std::fs::write(&nc, file_text(&c, "network-config")).unwrap();
        assert!(!file_text(&c, "network-config").contains(PASSPHRASE));
        // cloud-init → netplan (what Raspberry Pi OS Trixie does).
        let out = d.join("out");
        run(Command::new("cloud-init")
            .args([
                "devel",
                "net-convert",
                "-k",
                "yaml",
                "-D",
                "debian",
                "-O",
                "netplan",
            ])
            .arg("-p")
            .arg(&nc)
            .arg("-d")
            .arg(&out));
        let netplan = out.join("etc/netplan/50-cloud-init.yaml");
        let yaml = std::fs::read_to_string(&netplan).unwrap();
        assert!(yaml.contains("regulatory-domain: GB"), "{yaml}");
        // netplan → NetworkManager keyfile, with netplan's own generator.
        let root = d.join("root");
        std::fs::create_dir_all(root.join("etc/netplan")).unwrap();
        let dest = root.join("etc/netplan/50-cloud-init.yaml");
        std::fs::copy(&netplan, &dest).unwrap();
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        run(Command::new("netplan")
            .args(["generate", "--root-dir"])
            .arg(&root));
        let kf = root.join(format!(
            "run/NetworkManager/system-connections/netplan-wlan0-{}.nmconnection",
            SSID.replace(' ', "%20")
        ));
        let method = if dhcp { "auto" } else { "manual" };
        assert_eq!(
            nm_wifi_fields(&kf),
            format!(
                "type=wifi\ninterface=wlan0\nssid={SSID}\nhidden=true\nkey-mgmt=wpa-psk\npsk={psk}\nmethod={method}\n"
            )
        );
        if !dhcp {
            let f = nm_fields(&kf);
            assert!(
                f.starts_with("address=192.168.86.31\nprefix=24\ngateway=192.168.86.1\n"),
                "{f}"
            );
        }
        // netplan sets the regulatory domain with iw before the radio is used.
        let regdom =
            std::fs::read_to_string(root.join("run/systemd/system/netplan-regdom.service"))
                .unwrap();
        assert!(regdom.contains("iw reg set GB"), "{regdom}");
        let cmdline = c
            .cmdline
            .apply(b"console=tty1 root=PARTUUID=abcd-02 rootwait\n")
            .unwrap();
        assert!(
            cmdline.contains(" cfg80211.ieee80211_regdom=GB"),
            "{cmdline}"
        );
        // user-data stays valid and the secrets stay out of it.
        let ud = d.join("user-data");
        std::fs::write(&ud, file_text(&c, "user-data")).unwrap();
        let out = run(Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&ud));
        assert!(out.contains("Valid cloud-config"), "{out}");
        let public = public_text(&c);
        for secret in [psk.as_str(), PASSPHRASE, HASH] {
            assert!(
                !public.contains(secret),
                "{secret} outside secrets.json/network-config"
            );
        }
    }
}

#[test]
fn dhcp_agent_cards_ask_for_a_lease_and_name_no_node_ip() {
    let mut p = plan();
    p.role = Role::Agent;
    p.network.address = None;
    // Trixie: cloud-init's own NetworkManager renderer.
    let dir = tempfile::tempdir().unwrap();
    let c = render(&p, FirstBoot::CloudInit);
    let nc = dir.path().join("network-config");
    std::fs::write(&nc, file_text(&c, "network-config")).unwrap();
    let out = dir.path().join("out");
    run(Command::new("cloud-init")
        .args([
            "devel",
            "net-convert",
            "-k",
            "yaml",
            "-D",
            "debian",
            "-O",
            "network-manager",
        ])
        .arg("-p")
        .arg(&nc)
        .arg("-d")
        .arg(&out));
    let kf = std::fs::read_to_string(
        out.join("etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection"),
    )
    .unwrap();
    assert!(kf.contains("method=auto"), "{kf}");
    assert!(!kf.contains("address1="), "{kf}");
    // Bookworm: our keyfile.
    let c = render(&p, FirstBoot::SystemdRun);
    let kf = c
        .node_config
        .files
        .iter()
        .find(|f| {
            f.path
                .starts_with("/etc/NetworkManager/system-connections/")
        })
        .unwrap();
    assert!(
        kf.content.contains("[ipv4]\nmethod=auto\n"),
        "{}",
        kf.content
    );
    assert!(!kf.content.contains("address1="), "{}", kf.content);
    // k3s picks the lease's address itself: no node-ip.
    let cfg = &c.node_config.k3s.config_yaml;
    assert!(!cfg.contains("node-ip"), "{cfg}");
    assert!(cfg.contains("node-name: \"pi5-master-1\""), "{cfg}");
    let parsed =
        piimg_contract::NodeConfig::from_json(&file_text(&c, piimg_contract::NODE_CONFIG_FILE))
            .unwrap();
    assert_eq!(parsed.network.address, None);
}

// ---------------------------------------------------------------------------
// Whole images, built by the `piimg` binary from generated bases.
// ---------------------------------------------------------------------------

mod images {
    use super::run;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};
    use std::sync::OnceLock;

    const EPOCH: &str = "1700000000";

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    /// A generated base of `release` (made once per test run, shared read-only).
    pub fn base(release: &'static str) -> PathBuf {
        static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
        let _g = LOCK.lock().unwrap();
        let p = dir.path().join(format!("{release}.img"));
        if !p.exists() {
            run(Command::new(repo().join("scripts/mkimage"))
                .args(["--release", release, "--out"])
                .arg(&p));
        }
        p
    }

    /// A temp dir with a two-node profile (server + agent), its cache and out/.
    pub struct Env {
        pub dir: tempfile::TempDir,
    }

    impl Env {
        pub fn new() -> Env {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("lab.toml"),
                crate::support::lab_profile(&["192.168.86.1", "9.9.9.9"], "pi4-2gb"),
            )
            .unwrap();
            Env { dir }
        }

        pub fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        pub fn piimg(&self) -> Command {
            let mut c = Command::new(env!("CARGO_BIN_EXE_piimg"));
            c.current_dir(self.dir.path())
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .env("PIIMG_CACHE", self.path("cache"))
                .env_remove("PIIMG_PROFILE");
            c
        }

        /// `piimg build --profile lab.toml --offline --base BASE ARGS...`.
        pub fn build(&self, base: &Path, args: &[&str]) -> Output {
            self.piimg()
                .args([
                    "--quiet",
                    "build",
                    "--profile",
                    "lab.toml",
                    "--offline",
                    "--base",
                ])
                .arg(base)
                .args(args)
                .output()
                .unwrap()
        }

        /// `piimg --json plan --profile lab.toml`, which must succeed: its JSON and
        /// its whole output (stderr holds the warnings).
        pub fn plan_json(&self) -> (serde_json::Value, Output) {
            let out = self
                .piimg()
                .args(["--json", "plan", "--profile", "lab.toml"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (serde_json::from_slice(&out.stdout).unwrap(), out)
        }

        pub fn build_ok(&self, base: &Path, args: &[&str]) {
            let out = self.build(base, args);
            assert!(
                out.status.success(),
                "build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// (start, size) in bytes of partition `n` (1-based), from sfdisk.
    pub fn partition(img: &Path, n: usize) -> (u64, u64) {
        let out = run(Command::new("sfdisk").arg("-J").arg(img));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let p = &v["partitiontable"]["partitions"][n - 1];
        (
            p["start"].as_u64().unwrap() * 512,
            p["size"].as_u64().unwrap() * 512,
        )
    }

    /// A partition's bytes.
    pub fn partition_bytes(img: &Path, n: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let (start, size) = partition(img, n);
        let mut buf = vec![0u8; size as usize];
        std::fs::File::open(img)
            .unwrap()
            .read_exact_at(&mut buf, start)
            .unwrap();
        buf
    }

    /// A boot-partition file read with mtools (independent of our FAT code).
    pub fn mtype(img: &Path, path: &str) -> String {
        let (start, _) = partition(img, 1);
        run(Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@{start}", img.display()))
            .arg(format!("::/{path}")))
    }

    /// A boot-partition file's bytes, read with mtools.
    pub fn mtype_bytes(img: &Path, path: &str) -> Vec<u8> {
        let (start, _) = partition(img, 1);
        let out = Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@{start}", img.display()))
            .arg(format!("::/{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "mtype {path}");
        out.stdout
    }

    /// fsck.vfat -n on the boot partition and e2fsck -fn on the root, both clean.
    pub fn fsck_clean(img: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot.part");
        std::fs::write(&boot, partition_bytes(img, 1)).unwrap();
        run(Command::new("fsck.vfat").arg("-n").arg(&boot));
        let root = dir.path().join("root.part");
        std::fs::write(&root, partition_bytes(img, 2)).unwrap();
        run(Command::new("e2fsck").arg("-fn").arg(&root));
    }

    pub fn sha(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }
}

use images::{Env, base, fsck_clean, mtype, mtype_bytes, partition_bytes, sha};
use std::os::unix::fs::PermissionsExt;

const FLAGS: [&str; 2] = ["cgroup_memory=1", "cgroup_enable=memory"];

fn count(hay: &str, needle: &str) -> usize {
    hay.split_whitespace().filter(|a| *a == needle).count()
}

#[test]
fn bookworm_image_is_clean_and_only_the_boot_partition_changed() {
    let env = Env::new();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    let img = env.path("out/pi5-master-1.img");
    fsck_clean(&img);
    assert_eq!(
        sha(&partition_bytes(&img, 2)),
        sha(&partition_bytes(&b, 2)),
        "root partition changed"
    );
    let mode = std::fs::metadata(&img).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let cmdline = mtype(&img, "cmdline.txt");
    assert_eq!(cmdline.lines().count(), 1, "{cmdline}");
    for f in FLAGS {
        assert_eq!(count(&cmdline, f), 1, "{cmdline}");
    }
    assert_eq!(
        count(&cmdline, "systemd.run=/boot/firmware/piimg/piimg-firstboot"),
        1,
        "{cmdline}"
    );
    assert!(cmdline.contains("root=PARTUUID="), "{cmdline}");
    let config = mtype(&img, "config.txt");
    assert!(config.contains("[pi5]\n"), "{config}");
    assert_eq!(config.matches("kernel=kernel8.img").count(), 1, "{config}");
    let node = piimg_contract::NodeConfig::from_json(&mtype(&img, "piimg/node.json")).unwrap();
    assert_eq!(node.node_name, "pi5-master-1");
    let secrets =
        piimg_contract::CardSecrets::from_json(&mtype(&img, "piimg/secrets.json")).unwrap();
    assert!(!secrets.token.is_empty());
    // The manifest is the one `piimg inspect` reads.
    let manifest =
        piimg::manifest::Manifest::from_json(&mtype(&img, "piimg/manifest.json")).unwrap();
    assert_eq!(manifest.node, "pi5-master-1");
    assert_eq!(manifest.built_at, "2023-11-14T22:13:20Z");
    assert_eq!(manifest.template_hashes["common/cmdline.txt.hbs"].len(), 64);
    assert!(mtype_bytes(&img, "piimg/piimg-firstboot") == piimg::agent::AGENT_BINARY);
}

#[test]
fn building_twice_and_from_a_built_image_keeps_one_copy_of_each_flag() {
    let env = Env::new();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    let first = env.path("out/pi5-master-1.img");
    let again = env.path("again.img");
    std::fs::copy(&first, &again).unwrap();
    env.build_ok(&again, &["--node", "pi5-master-1", "--out", "out2"]);
    let img = env.path("out2/pi5-master-1.img");
    let cmdline = mtype(&img, "cmdline.txt");
    for f in FLAGS.iter().chain(&[
        "systemd.run=/boot/firmware/piimg/piimg-firstboot",
        "systemd.run_success_action=reboot",
    ]) {
        assert_eq!(count(&cmdline, f), 1, "{f} in {cmdline}");
    }
    let config = mtype(&img, "config.txt");
    assert_eq!(config.matches("kernel=kernel8.img").count(), 1, "{config}");
    assert_eq!(
        config.matches("# piimg: begin").count(),
        config.matches("# piimg: end").count()
    );
    fsck_clean(&img);
    // Same inputs, same epoch: rebuilding a built image gives the same card.
    assert_eq!(mtype(&img, "cmdline.txt"), mtype(&first, "cmdline.txt"));
}

#[test]
fn trixie_image_carries_a_cloud_init_seed_matching_the_cmdline() {
    let env = Env::new();
    let b = base("trixie");
    env.build_ok(&b, &["--node", "pi4-worker-1"]);
    let img = env.path("out/pi4-worker-1.img");
    fsck_clean(&img);
    assert_eq!(sha(&partition_bytes(&img, 2)), sha(&partition_bytes(&b, 2)));
    let meta = mtype(&img, "meta-data");
    let id = meta
        .lines()
        .find_map(|l| l.strip_prefix("instance-id: "))
        .unwrap()
        .to_string();
    assert!(id.starts_with("piimg-pi4-worker-1-"), "{meta}");
    let cmdline = mtype(&img, "cmdline.txt");
    assert_eq!(
        count(&cmdline, &format!("ds=nocloud;i={id}")),
        1,
        "{cmdline}"
    );
    assert_eq!(cmdline.matches("ds=nocloud").count(), 1, "{cmdline}");
    for f in FLAGS {
        assert_eq!(count(&cmdline, f), 1, "{cmdline}");
    }
    assert!(!cmdline.contains("systemd.run="), "{cmdline}");
    let dir = tempfile::tempdir().unwrap();
    let ud = dir.path().join("user-data");
    std::fs::write(&ud, mtype(&img, "user-data")).unwrap();
    let out = run(Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&ud));
    assert!(out.contains("Valid cloud-config"), "{out}");
    let nc = mtype(&img, "network-config");
    assert!(nc.contains("- 192.168.86.41/24"), "{nc}");
    // Pi 4 class: no [pi5] kernel line.
    assert!(!mtype(&img, "config.txt").contains("kernel=kernel8.img"));
}

#[test]
fn same_inputs_and_epoch_give_byte_identical_images() {
    let env = Env::new();
    let b = base("trixie");
    env.build_ok(&b, &["--node", "pi4-worker-1", "--out", "a"]);
    env.build_ok(&b, &["--node", "pi4-worker-1", "--out", "b"]);
    let a = std::fs::read(env.path("a/pi4-worker-1.img")).unwrap();
    let bb = std::fs::read(env.path("b/pi4-worker-1.img")).unwrap();
    assert!(a == bb, "images differ");
    assert_eq!(
        std::fs::read(env.path("a/pi4-worker-1.img.bmap")).unwrap(),
        std::fs::read(env.path("b/pi4-worker-1.img.bmap")).unwrap()
    );
    // A different build time gives a new cloud-init instance id (a re-imaged card
    // is a new machine to cloud-init).
    let out = env
        .piimg()
        .env("SOURCE_DATE_EPOCH", "1700000001")
        .args([
            "--quiet",
            "build",
            "--profile",
            "lab.toml",
            "--offline",
            "--out",
            "c",
            "--node",
            "pi4-worker-1",
            "--base",
        ])
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        mtype(&env.path("a/pi4-worker-1.img"), "meta-data"),
        mtype(&env.path("c/pi4-worker-1.img"), "meta-data")
    );
}

#[test]
fn bmaptool_copies_the_image_from_its_bmap() {
    let env = Env::new();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi4-worker-1"]);
    let img = env.path("out/pi4-worker-1.img");
    let target = env.path("target.img");
    run(Command::new("bmaptool")
        .args(["copy", "--bmap"])
        .arg(env.path("out/pi4-worker-1.img.bmap"))
        .arg(&img)
        .arg(&target));
    // The .bmap maps what the file systems need, not the file's non-zero bytes:
    // the target holds the image on every mapped range, and its file systems are
    // clean (free blocks may differ), and the flash module's parser accepts it.
    let map = piimg::bmap::Bmap::load(&env.path("out/pi4-worker-1.img.bmap")).unwrap();
    assert_equal_on_map(&map, &img, &target);
    fsck_clean(&target);
}

/// `a` and `b` hold the same bytes on every range `map` maps.
fn assert_equal_on_map(map: &piimg::bmap::Bmap, a: &Path, b: &Path) {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    for (off, len) in map.extents() {
        let r = off as usize..(off + len) as usize;
        assert!(a[r.clone()] == b[r], "bytes {off}+{len} differ");
    }
}

#[test]
fn xz_output_decompresses_to_the_image() {
    let env = Env::new();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi4-worker-1", "--xz"]);
    let out = Command::new("xz")
        .args(["-dc"])
        .arg(env.path("out/pi4-worker-1.img.xz"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == std::fs::read(env.path("out/pi4-worker-1.img")).unwrap());
    let mode = std::fs::metadata(env.path("out/pi4-worker-1.img.xz"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn all_builds_every_node_with_a_json_summary() {
    let env = Env::new();
    let b = base("bookworm");
    let out = env
        .piimg()
        .args([
            "--json",
            "build",
            "--profile",
            "lab.toml",
            "--offline",
            "--all",
            "--base",
        ])
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for i in images {
        let path = PathBuf::from(i["path"].as_str().unwrap());
        let path = if path.is_absolute() {
            path
        } else {
            env.path(path.to_str().unwrap())
        };
        assert_eq!(
            i["sha256"].as_str().unwrap(),
            sha(&std::fs::read(&path).unwrap())
        );
        assert_eq!(i["release"], "bookworm");
        assert!(i["bmap"].as_str().unwrap().ends_with(".img.bmap"));
    }
    // The bootstrap card is recorded as issued next to the profile.
    let state = std::fs::read_to_string(env.path("lab.state.toml")).unwrap();
    assert!(state.contains("pi5-master-1"), "{state}");
}

#[test]
fn a_failed_build_keeps_the_previous_image_and_leaves_no_temp_files() {
    let env = Env::new();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi4-worker-1"]);
    let img = env.path("out/pi4-worker-1.img");
    let before = sha(&std::fs::read(&img).unwrap());
    // An overlay extra bigger than the boot partition: the card cannot fit.
    let overlay = env.path("overlay/boot");
    std::fs::create_dir_all(&overlay).unwrap();
    let big = std::fs::File::create(overlay.join("huge.bin")).unwrap();
    big.set_len(513 << 20).unwrap();
    let profile = std::fs::read_to_string(env.path("lab.toml")).unwrap();
    std::fs::write(
        env.path("lab.toml"),
        profile.replace("[cluster]\n", "[cluster]\noverlay_dir = \"overlay\"\n"),
    )
    .unwrap();
    let out = env.build(&b, &["--node", "pi4-worker-1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("pi4-worker-1"), "{err}");
    assert_eq!(sha(&std::fs::read(&img).unwrap()), before);
    let names: Vec<String> = std::fs::read_dir(env.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");
}

#[test]
fn ctrl_c_mid_build_leaves_no_new_image() {
    let env = Env::new();
    let big = env.path("big.img");
    run(
        Command::new(env!("CARGO_MANIFEST_DIR").to_string() + "/../scripts/mkimage")
            .args(["--release", "bookworm", "--fill-mib", "300", "--out"])
            .arg(&big),
    );
    std::fs::create_dir_all(env.path("out")).unwrap();
    std::fs::write(env.path("out/pi4-worker-1.img"), b"previous image").unwrap();
    let mut child = env
        .piimg()
        .args([
            "--quiet",
            "build",
            "--profile",
            "lab.toml",
            "--offline",
            "--node",
            "pi4-worker-1",
            "--base",
        ])
        .arg(&big)
        .spawn()
        .unwrap();
    // Wait until the temp output exists, then interrupt.
    let t0 = std::time::Instant::now();
    loop {
        let partial = std::fs::read_dir(env.path("out")).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        });
        if partial || t0.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(
        std::fs::read(env.path("out/pi4-worker-1.img")).unwrap(),
        b"previous image"
    );
    let names: Vec<String> = std::fs::read_dir(env.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["pi4-worker-1.img"]);
}

#[test]
fn bad_inputs_get_one_clear_line() {
    let env = Env::new();
    let b = base("bookworm");
    type Case<'a> = (Vec<&'a str>, Option<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--node", "nope"], None, "--node nope: no such node"),
        (
            vec!["--node", "pi4-worker-1"],
            Some(("SOURCE_DATE_EPOCH", "yesterday")),
            "SOURCE_DATE_EPOCH=\"yesterday\" is not a number",
        ),
    ];
    for (args, env_var, want) in cases {
        let mut c = env.piimg();
        c.args(["build", "--profile", "lab.toml", "--offline", "--base"])
            .arg(&b)
            .args(&args);
        if let Some((k, v)) = env_var {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = env.build(Path::new("missing.img"), &["--node", "pi4-worker-1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--base missing.img: no such file"), "{err}");
    std::fs::write(env.path("notes.txt"), "not an image").unwrap();
    let out = env.build(&env.path("notes.txt"), &["--node", "pi4-worker-1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("notes.txt"), "{err}");
    assert!(!env.path("out/pi4-worker-1.img").exists());
}

// ---- The cluster PKI on the cards (secure token, CA files, node passwords) ----

/// Three servers (pi5-master-1 bootstraps) and the agent.
fn ha_env() -> Env {
    let env = Env::new();
    let mut p = std::fs::read_to_string(env.path("lab.toml")).unwrap();
    for (n, ip) in [(2, 32), (3, 33)] {
        p.push_str(&format!(
            "\n[[nodes]]\nname = \"pi5-master-{n}\"\nip = \"192.168.86.{ip}\"\nrole = \"server\"\nhardware = \"pi5-8gb\"\n"
        ));
    }
    std::fs::write(env.path("lab.toml"), p).unwrap();
    env
}

/// The card's node.json and secrets.json, read back from the image with mtools.
fn card_of(env: &Env, node: &str) -> (piimg_contract::NodeConfig, piimg_contract::CardSecrets) {
    let img = env.path(&format!("out/{node}.img"));
    let cfg: piimg_contract::NodeConfig =
        serde_json::from_str(&mtype(&img, piimg_contract::NODE_CONFIG_FILE)).unwrap();
    let sec: piimg_contract::CardSecrets =
        serde_json::from_str(&mtype(&img, piimg_contract::SECRETS_FILE)).unwrap();
    (cfg, sec)
}

fn tls_files(sec: &piimg_contract::CardSecrets) -> Vec<&str> {
    sec.files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| p.starts_with("/var/lib/rancher/k3s/server/tls/"))
        .collect()
}

/// sha256 of the DER of the last certificate in a PEM bundle, by openssl + sha256sum.
fn openssl_root_hash(bundle: &str) -> String {
    let last = bundle
        .rfind("-----BEGIN CERTIFICATE-----")
        .expect("a certificate in the bundle");
    let mut child = Command::new("sh")
        .args(["-c", "openssl x509 -outform der | sha256sum"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&bundle.as_bytes()[last..])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_bootstrap_card_carries_the_secure_token_pinned_to_the_ca_in_the_secrets() {
    let env = ha_env();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi5-master-1", "--xz"]);
    let (cfg, sec) = card_of(&env, "pi5-master-1");

    let bundle = std::fs::read_to_string(env.path("lab.secrets/ca/server-ca.crt")).unwrap();
    let hash = piimg::pki::ca_hash(bundle.as_bytes()).unwrap();
    assert_eq!(
        hash,
        openssl_root_hash(&bundle),
        "k3s hashes the root's DER"
    );
    let (k10, secret) = sec.token.split_once("::server:").unwrap();
    assert_eq!(k10, format!("K10{hash}"));
    let token_file = std::fs::read_to_string(env.path("lab.secrets/k3s-token")).unwrap();
    assert!(token_file.contains(secret), "token secret is the cluster's");
    assert_eq!(cfg.ha.cluster_ca_sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(cfg.ha.cluster_ca_pem.as_deref(), Some(bundle.as_str()));
    assert!(cfg.ha.first_bring_up);

    // The first bootstrap card carries the CA, keys included, and the node-cleaner.
    let tls = tls_files(&sec);
    for f in [
        "server-ca.crt",
        "server-ca.key",
        "client-ca.crt",
        "client-ca.key",
        "service.key",
    ] {
        assert!(
            tls.contains(&format!("/var/lib/rancher/k3s/server/tls/{f}").as_str()),
            "{f} missing from {tls:?}"
        );
    }
    assert!(sec.files.iter().all(|f| f.mode == 0o600));
    let cleaner = cfg.ha.node_cleaner.as_ref().unwrap();
    assert!(sec.files.iter().any(|f| f.path == cleaner.cert));
    assert!(sec.files.iter().any(|f| f.path == cleaner.key));
    assert!(
        cfg.files.iter().any(|f| f.path
            == "/var/lib/rancher/k3s/server/manifests/piimg-node-cleaner-rbac.yaml"),
        "{:?}",
        cfg.files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
    let secret_paths: Vec<&str> = sec.files.iter().map(|f| f.path.as_str()).collect();
    assert!(
        cfg.files
            .iter()
            .all(|f| !secret_paths.contains(&f.path.as_str()))
    );
    assert_eq!(
        sec.node_password.as_deref().unwrap(),
        piimg::pki::node_password(secret, "pi5-master-1")
    );

    // Every output file holding the secrets is private; the image and .xz are 0600.
    assert_eq!(mode_of(&env.path("out/pi5-master-1.img")), 0o600);
    assert_eq!(mode_of(&env.path("out/pi5-master-1.img.xz")), 0o600);
    for e in std::fs::read_dir(env.path("out")).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        let holds_secret = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        if holds_secret {
            assert_eq!(mode_of(&p), 0o600, "{} holds the token", p.display());
        }
    }
    let state = std::fs::read_to_string(env.path("lab.state.toml")).unwrap();
    assert!(state.contains("bootstrap_issued = true"), "{state}");
}

#[test]
fn a_rebuilt_bootstrap_card_waits_for_a_peer_and_only_the_first_carries_the_ca() {
    let env = ha_env();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    let (first_cfg, first) = card_of(&env, "pi5-master-1");
    assert!(first_cfg.ha.first_bring_up);
    assert!(!tls_files(&first).is_empty());

    env.build_ok(&b, &["--node", "pi5-master-1", "--node", "pi5-master-2"]);
    let (cfg, sec) = card_of(&env, "pi5-master-1");
    assert!(
        !cfg.ha.first_bring_up,
        "a rebuilt bootstrap card must not initialise"
    );
    assert!(tls_files(&sec).is_empty(), "{:?}", tls_files(&sec));
    assert_eq!(sec.token, first.token);
    assert_eq!(cfg.ha.cluster_ca_sha256, first_cfg.ha.cluster_ca_sha256);
    // The build says so, with the first card's date from the issuance record.
    let state = std::fs::read_to_string(env.path("lab.state.toml")).unwrap();
    let at = state
        .lines()
        .find_map(|l| l.strip_prefix("bootstrap_issued_at = "))
        .unwrap_or_else(|| panic!("{state}"))
        .trim_matches('"')
        .to_string();
    let out = env
        .piimg()
        .args([
            "build",
            "--profile",
            "lab.toml",
            "--offline",
            "--node",
            "pi5-master-1",
            "--base",
        ])
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "pi5-master-1's first card was issued on {at}; this card joins the existing cluster. If that card never booted, build with --new-cluster"
        )),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(env.path("lab.state.toml"))
            .unwrap()
            .contains(&at),
        "a rebuild keeps the first card's date"
    );

    // Another server: same token, no CA keys, but the node-cleaner and the manifests.
    let (cfg2, sec2) = card_of(&env, "pi5-master-2");
    assert!(!cfg2.ha.first_bring_up);
    assert_eq!(sec2.token, first.token);
    assert!(tls_files(&sec2).is_empty());
    assert!(cfg2.ha.node_cleaner.is_some());
    let manifests = |c: &piimg_contract::NodeConfig| -> Vec<(String, String)> {
        c.files
            .iter()
            .filter(|f| f.path.starts_with("/var/lib/rancher/k3s/server/manifests/"))
            .map(|f| (f.path.clone(), f.content.clone()))
            .collect()
    };
    assert!(!manifests(&cfg2).is_empty());
    assert_eq!(
        manifests(&cfg2),
        manifests(&cfg),
        "identical on every server"
    );

    // `piimg plan` tells the same story from the same record.
    let (v, _) = env.plan_json();
    assert_eq!(v["bootstrap_issued"], true);
    let n = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "pi5-master-1")
        .unwrap();
    assert!(
        n["first_boot_text"]
            .as_str()
            .unwrap()
            .starts_with("join as server"),
        "{n}"
    );
    assert_eq!(v["worker_token"], "agent");
    assert_eq!(v["bootstrap_issued_at"].as_str(), Some(at.as_str()));
}

#[test]
fn worker_cards_carry_the_derived_node_password_and_nothing_of_the_ca() {
    let env = ha_env();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi4-worker-1"]);
    let (cfg, sec) = card_of(&env, "pi4-worker-1");
    // The agent token, never the server token: not in the secrets, not anywhere in
    // the image's bytes.
    let server_secret = std::fs::read_to_string(env.path("lab.secrets/k3s-token")).unwrap();
    let agent_secret = std::fs::read_to_string(env.path("lab.secrets/k3s-agent-token")).unwrap();
    assert_eq!(
        mode_of(&env.path("lab.secrets/k3s-agent-token")),
        0o600,
        "the agent token is a secret too"
    );
    let (k10, agent) = sec.token.split_once("::node:").unwrap();
    assert_eq!(agent, agent_secret.trim());
    assert_eq!(
        Some(k10.trim_start_matches("K10")),
        cfg.ha.cluster_ca_sha256.as_deref()
    );
    assert_eq!(sec.agent_token, None);
    let image = std::fs::read(env.path("out/pi4-worker-1.img")).unwrap();
    let holds = |needle: &str| image.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(holds(agent_secret.trim()), "the scan finds what is there");
    assert!(
        !holds(server_secret.trim()),
        "the worker image holds the server token"
    );
    let secret = server_secret.trim();
    let pw = sec.node_password.clone().unwrap();
    assert_eq!(pw, piimg::pki::node_password(secret, "pi4-worker-1"));
    assert!(sec.files.is_empty(), "{:?}", sec.files);
    assert!(cfg.ha.node_cleaner.is_none());
    assert!(!cfg.ha.first_bring_up);
    assert!(cfg.ha.cluster_ca_pem.is_some(), "workers pin the CA too");

    env.build_ok(&b, &["--node", "pi4-worker-1"]);
    let (_, again) = card_of(&env, "pi4-worker-1");
    assert_eq!(again.node_password.unwrap(), pw);
    assert_eq!(again.token, sec.token);

    // A cluster whose secrets predate the agent token (its servers run without
    // `agent-token`): workers keep the server token, and `plan` says why and how to
    // narrow it.
    let agent_file = env.path("lab.secrets/k3s-agent-token");
    std::fs::remove_file(&agent_file).unwrap();
    // Lost while the state records one: refused, never replaced.
    let out = env.build(&b, &["--node", "pi4-worker-1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("records that this cluster has an agent token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!agent_file.exists());
    // A record from before agent tokens (no fingerprint in either copy of the state).
    for f in ["lab.state.toml", "lab.secrets/state.toml"] {
        let text = std::fs::read_to_string(env.path(f)).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with("agent_token_sha256"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(kept, text, "{f} recorded the agent token");
        std::fs::write(env.path(f), kept).unwrap();
    }
    env.build_ok(&b, &["--node", "pi4-worker-1"]);
    let (_, old) = card_of(&env, "pi4-worker-1");
    assert_eq!(old.token.split_once("::server:").unwrap().1, secret);
    assert!(
        !env.path("lab.secrets/k3s-agent-token").exists(),
        "never added to a running cluster"
    );
    let (v, out) = env.plan_json();
    assert_eq!(v["worker_token"], "server");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lab.secrets/k3s-agent-token does not exist: this cluster was created before piimg made an agent token")
            && err.contains("worker cards keep carrying the server token (a rebuild changes nothing here)"),
        "{err}"
    );
}

#[test]
fn new_cluster_gives_a_fresh_token_and_a_fresh_ca() {
    let env = ha_env();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    let (cfg, sec) = card_of(&env, "pi5-master-1");
    env.build_ok(&b, &["--node", "pi5-master-1", "--new-cluster"]);
    let (cfg2, sec2) = card_of(&env, "pi5-master-1");
    let secret = |t: &str| t.split_once("::server:").unwrap().1.to_string();
    assert_ne!(secret(&sec.token), secret(&sec2.token));
    assert_ne!(cfg.ha.cluster_ca_sha256, cfg2.ha.cluster_ca_sha256);
    assert_ne!(cfg.ha.cluster_ca_pem, cfg2.ha.cluster_ca_pem);
    assert!(cfg2.ha.first_bring_up, "a new cluster is brought up again");
    assert!(!tls_files(&sec2).is_empty());
    // The old secrets, CA included, were moved aside, not lost.
    let old: Vec<PathBuf> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".old-"))
        .collect();
    assert_eq!(old.len(), 1, "{old:?}");
    let old_bundle = std::fs::read_to_string(old[0].join("ca/server-ca.crt")).unwrap();
    assert_eq!(Some(old_bundle), cfg.ha.cluster_ca_pem);
}

#[test]
fn a_failed_bootstrap_build_is_not_recorded_as_issued() {
    let env = ha_env();
    let b = base("bookworm");
    let overlay = env.path("overlay/boot");
    std::fs::create_dir_all(&overlay).unwrap();
    let big = std::fs::File::create(overlay.join("huge.bin")).unwrap();
    big.set_len(513 << 20).unwrap();
    let profile = std::fs::read_to_string(env.path("lab.toml")).unwrap();
    std::fs::write(
        env.path("lab.toml"),
        profile.replace("[cluster]\n", "[cluster]\noverlay_dir = \"overlay\"\n"),
    )
    .unwrap();
    let out = env.build(&b, &["--node", "pi5-master-1"]);
    assert!(!out.status.success());
    let state = std::fs::read_to_string(env.path("lab.state.toml")).unwrap_or_default();
    assert!(!state.contains("bootstrap_issued = true"), "{state}");
    // Once it fits, the card is still the first bring-up.
    std::fs::remove_file(overlay.join("huge.bin")).unwrap();
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    assert!(card_of(&env, "pi5-master-1").0.ha.first_bring_up);
}

#[test]
fn the_phase2_unit_retries_on_failure_and_systemd_accepts_it() {
    let c = render(&plan(), FirstBoot::SystemdRun);
    let unit = c
        .node_config
        .files
        .iter()
        .find(|f| f.path == format!("/etc/systemd/system/{}", piimg_contract::AGENT_UNIT))
        .unwrap()
        .content
        .clone();
    assert!(unit.contains("\nType=oneshot\n"), "{unit}");
    assert!(unit.contains("\nRestart=on-failure\n"), "{unit}");
    assert!(unit.contains("\nRestartSec=30\n"), "{unit}");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .to_string();
    let path = dir.path().join(piimg_contract::AGENT_UNIT);
    std::fs::write(&path, unit.replace(&exec, "/bin/true")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn profile_addons_put_their_helm_charts_on_server_cards_only() {
    let env = ha_env();
    let p = std::fs::read_to_string(env.path("lab.toml")).unwrap();
    std::fs::write(
        env.path("lab.toml"),
        p.replace(
            "[hardware]\n",
            "[addons]\ncert_manager = true\nmonitoring = false\n\n[hardware]\n",
        ),
    )
    .unwrap();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi5-master-2", "--node", "pi4-worker-1"]);
    let paths = |node: &str| -> Vec<String> {
        card_of(&env, node)
            .0
            .files
            .iter()
            .map(|f| f.path.clone())
            .collect()
    };
    let server = paths("pi5-master-2");
    let dir = "/var/lib/rancher/k3s/server/manifests";
    assert!(
        server.contains(&format!("{dir}/piimg-cert-manager.yaml")),
        "{server:?}"
    );
    assert!(!server.contains(&format!("{dir}/piimg-kube-prometheus-stack.yaml")));
    assert!(paths("pi4-worker-1").iter().all(|p| !p.starts_with(dir)));
}

#[test]
fn the_only_server_of_a_single_server_cluster_reinitialises_when_rebuilt() {
    // No peer to join: the plan (and the card) let it initialise again.
    let env = Env::new();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    let (cfg, sec) = card_of(&env, "pi5-master-1");
    assert!(cfg.ha.first_bring_up);
    assert!(!tls_files(&sec).is_empty());
}

#[test]
fn flash_node_writes_the_card_build_would_without_an_image_file() {
    let env = Env::new();
    let base = base("bookworm");
    // build first: the card state it records is what the flash composes with too.
    env.build_ok(&base, &["--node", "pi4-worker-1"]);
    let built = env.path("out/pi4-worker-1.img");
    let before = std::fs::metadata(&built).unwrap().modified().unwrap();
    let card = env.path("card.img");
    let out = env
        .piimg()
        .args([
            "--json",
            "flash",
            "--node",
            "pi4-worker-1",
            "--profile",
            "lab.toml",
            "--offline",
            "--base",
        ])
        .arg(&base)
        .args(["--force-file", "--yes"])
        .arg(&card)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flash --node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON document on stdout: flash's summary, not the build's as well.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cards"][0]["verified"], true);
    assert_eq!(v["cards"][0]["node"], "pi4-worker-1");
    // The image file was neither needed nor touched.
    assert_eq!(
        std::fs::metadata(&built).unwrap().modified().unwrap(),
        before
    );
    // Equal wherever the image's .bmap (its file systems' map) says data matters.
    let map = piimg::bmap::Bmap::load(&env.path("out/pi4-worker-1.img.bmap")).unwrap();
    assert_equal_on_map(&map, &built, &card);
    fsck_clean(&card);
    assert!(mtype(&card, "/piimg/node.json").contains("pi4-worker-1"));
}

/// `piimg flash --node pi4-worker-1 --force-file --yes CARD` with the test profile
/// and base; returns (success, stderr).
fn flash_node(env: &Env, base: &Path, card: &Path) -> (bool, String) {
    let out = env
        .piimg()
        .args([
            "flash",
            "--node",
            "pi4-worker-1",
            "--profile",
            "lab.toml",
            "--offline",
            "--base",
        ])
        .arg(base)
        .args(["--force-file", "--yes"])
        .arg(card)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn flash_node_always_writes_the_current_profiles_card() {
    let env = Env::new();
    let base = base("bookworm");
    env.build_ok(&base, &["--node", "pi4-worker-1"]);
    let card = env.path("card.img");
    let (ok, err) = flash_node(&env, &base, &card);
    assert!(ok, "{err}");
    assert!(mtype(&card, "/piimg/node.json").contains("192.168.86.41"));

    // The node's address changed in the profile: the card gets the new one (a stale
    // out/ image is irrelevant, the card is composed from the profile as it is now).
    let profile = env.path("lab.toml");
    let text = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(&profile, text.replace("192.168.86.41", "192.168.86.42")).unwrap();
    let card2 = env.path("card2.img");
    let (ok, err) = flash_node(&env, &base, &card2);
    assert!(ok, "{err}");
    let node_json = mtype(&card2, "/piimg/node.json");
    assert!(node_json.contains("192.168.86.42"), "{node_json}");
    assert!(!node_json.contains("192.168.86.41"), "{node_json}");
    fsck_clean(&card2);
}

#[test]
fn flash_image_warns_when_the_profile_no_longer_matches_its_node() {
    let env = Env::new();
    let base = base("bookworm");
    env.build_ok(&base, &["--node", "pi4-worker-1"]);
    let flash = |card: &str| {
        let out = env
            .piimg()
            .args(["flash", "--profile", "lab.toml", "out/pi4-worker-1.img"])
            .arg(env.path(card))
            .args(["--force-file", "--yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(!flash("a.img").contains("was built for node"));
    let profile = env.path("lab.toml");
    let text = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(&profile, text.replace("192.168.86.41", "192.168.86.42")).unwrap();
    let err = flash("b.img");
    assert!(
        err.contains("was built for node pi4-worker-1 from settings lab.toml no longer has"),
        "{err}"
    );
}

#[test]
fn concurrent_first_builds_create_the_secrets_once_and_all_use_them() {
    let env = Env::new();
    let base = base("bookworm");
    let runs: Vec<_> = [
        ("pi5-master-1", "o1"),
        ("pi4-worker-1", "o2"),
        ("pi4-worker-1", "o3"),
    ]
    .iter()
    .map(|(node, out)| {
        env.piimg()
            .args([
                "build",
                "--profile",
                "lab.toml",
                "--offline",
                "--node",
                node,
                "--out",
                out,
                "--base",
            ])
            .arg(&base)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    })
    .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent first build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One cluster: one secrets directory, no leftovers, every card with its token.
    let names: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("secrets"))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["lab.secrets", "lab.secrets.lock"], "{names:?}");
    let token = std::fs::read_to_string(env.path("lab.secrets/k3s-token")).unwrap();
    let agent = std::fs::read_to_string(env.path("lab.secrets/k3s-agent-token")).unwrap();
    // The server card carries the server token (and the agent token for its
    // config); worker cards the agent token only.
    for (out, want) in [
        ("o1/pi5-master-1.img", token.trim()),
        ("o1/pi5-master-1.img", agent.trim()),
        ("o2/pi4-worker-1.img", agent.trim()),
        ("o3/pi4-worker-1.img", agent.trim()),
    ] {
        let sec = mtype(&env.path(out), "/piimg/secrets.json");
        assert!(sec.contains(want), "{out} carries another token");
    }
    for out in ["o2/pi4-worker-1.img", "o3/pi4-worker-1.img"] {
        let sec = mtype(&env.path(out), "/piimg/secrets.json");
        assert!(
            !sec.contains(token.trim()),
            "{out} carries the server token"
        );
    }
    // Every build's issued card is recorded (merged, not overwritten).
    let state = std::fs::read_to_string(env.path("lab.state.toml")).unwrap();
    assert!(
        state.contains("pi5-master-1") && state.contains("pi4-worker-1"),
        "{state}"
    );
}

// ---- Storage on the image: disk boot, data disk, S3 keys, --restore ----

/// config.txt read back from the image, split into (section, lines); lines before
/// any filter count as `[all]`.
fn config_sections(img: &Path) -> Vec<(String, Vec<String>)> {
    let mut out = vec![("all".to_string(), Vec::new())];
    for l in mtype(img, "config.txt").lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            Some(name) => out.push((name.to_string(), Vec::new())),
            None => out.last_mut().unwrap().1.push(l.to_string()),
        }
    }
    out
}

#[test]
fn storage_modes_and_s3_keys_reach_the_image_as_the_profile_says() {
    let env = ha_env();
    let p = std::fs::read_to_string(env.path("lab.toml")).unwrap();
    let p = p
        .replace(
            "name = \"pi5-master-2\"\nip = \"192.168.86.32\"\nrole = \"server\"\nhardware = \"pi5-8gb\"\n",
            "name = \"pi5-master-2\"\nip = \"192.168.86.32\"\nrole = \"server\"\nhardware = \"pi5-8gb\"\nstorage = \"nvme\"\n",
        )
        .replace(
            "hardware = \"pi4-2gb\"\n",
            "hardware = \"pi4-2gb\"\ndata_disk = \"usb\"\n",
        )
        .replace(
            "[hardware]\n",
            "[k3s.etcd_s3]\nendpoint = \"minio.lan:9000\"\nbucket = \"lab-etcd\"\n\n[hardware]\n",
        );
    assert!(p.contains("storage = \"nvme\"") && p.contains("data_disk = \"usb\""));
    std::fs::write(env.path("lab.toml"), &p).unwrap();
    let b = base("bookworm");
    // The first build creates the secrets, then stops: the S3 keys are not there.
    let out = env.build(&b, &["--node", "pi5-master-2", "--node", "pi4-worker-1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "lab.secrets/etcd-s3-access-key is missing or empty, but the profile has [k3s.etcd_s3]"
        ),
        "{err}"
    );
    assert!(!env.path("out/pi5-master-2.img").exists());
    for (name, key) in [
        ("etcd-s3-access-key", "AKIAEXAMPLE"),
        ("etcd-s3-secret-key", "wJalrXUtnFEMI/K7MDENG"),
    ] {
        let f = env.path(&format!("lab.secrets/{name}"));
        std::fs::write(&f, format!("{key}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    env.build_ok(&b, &["--node", "pi5-master-2", "--node", "pi4-worker-1"]);

    let nvme = env.path("out/pi5-master-2.img");
    fsck_clean(&nvme);
    let sections = config_sections(&nvme);
    let with = |line: &str| -> Vec<String> {
        sections
            .iter()
            .filter(|(_, l)| l.iter().any(|x| x == line))
            .map(|(n, _)| n.clone())
            .collect()
    };
    assert_eq!(with("dtparam=pciex1"), ["pi5"], "{sections:?}");
    assert!(with("dtparam=pciex1_gen=3").is_empty());
    let (cfg, sec) = card_of(&env, "pi5-master-2");
    assert_eq!(
        cfg.storage.boot_device,
        piimg_contract::storage::BootDevice::Nvme
    );
    assert_eq!(cfg.storage.sd_wear, piimg_contract::storage::SdWear::Off);
    let drop_in = sec
        .files
        .iter()
        .find(|f| f.path == "/etc/rancher/k3s/config.yaml.d/50-piimg-etcd-s3.yaml")
        .expect("the server card carries the S3 keys");
    assert_eq!(drop_in.mode, 0o600);
    assert!(drop_in.content.contains("\"wJalrXUtnFEMI/K7MDENG\""));
    assert!(!mtype(&nvme, piimg_contract::NODE_CONFIG_FILE).contains("wJalrXUtnFEMI"));
    assert!(
        cfg.k3s
            .config_yaml
            .contains("etcd-s3-bucket: \"lab-etcd\"\n")
    );

    let worker = env.path("out/pi4-worker-1.img");
    assert!(
        config_sections(&worker)
            .iter()
            .all(|(_, l)| !l.iter().any(|x| x.starts_with("dtparam=pciex1")))
    );
    let (wcfg, wsec) = card_of(&env, "pi4-worker-1");
    let disk = wcfg.storage.data_disk.expect("a data disk");
    assert_eq!(disk.bus, piimg_contract::storage::DiskBus::Usb);
    assert_eq!(disk.mount_point, "/var/lib/rancher/k3s");
    assert_eq!(
        wcfg.storage.sd_wear,
        piimg_contract::storage::SdWear::Minimal
    );
    assert!(wsec.files.iter().all(|f| !f.path.contains("etcd-s3")));
    assert!(!wcfg.k3s.config_yaml.contains("etcd-s3"));
    assert!(wcfg.k3s.config_yaml.contains("image-gc-high-threshold=70"));
}

#[test]
fn restore_makes_a_rebuilt_bootstrap_card_a_first_bring_up_again() {
    let env = ha_env();
    let b = base("bookworm");
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    let (first_cfg, first) = card_of(&env, "pi5-master-1");
    env.build_ok(&b, &["--node", "pi5-master-1"]);
    assert!(!card_of(&env, "pi5-master-1").0.ha.first_bring_up);
    let out = env
        .piimg()
        .args([
            "build",
            "--profile",
            "lab.toml",
            "--offline",
            "--restore",
            "--node",
            "pi5-master-1",
            "--node",
            "pi5-master-2",
            "--base",
        ])
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "--restore: pi5-master-1's card initialises the cluster again (same token and CA)"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cfg, sec) = card_of(&env, "pi5-master-1");
    assert!(cfg.ha.first_bring_up);
    assert!(
        cfg.ha.init_window_secs > 0,
        "it still waits for its peers first"
    );
    assert_eq!(sec.token, first.token);
    assert_eq!(cfg.ha.cluster_ca_sha256, first_cfg.ha.cluster_ca_sha256);
    assert_eq!(
        tls_files(&sec),
        tls_files(&first),
        "the cluster's own CA files"
    );
    // Only the bootstrap card.
    assert!(!card_of(&env, "pi5-master-2").0.ha.first_bring_up);
}

// ---------------------------------------------------------------------------
// First run: nothing is created until the base and the keys are in hand.
// ---------------------------------------------------------------------------

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_first_build_that_cannot_get_a_base_leaves_no_secrets() {
    let env = images::Env::new();
    // Online, the OS list host unknown: fails at once, and nothing was created.
    let t = std::time::Instant::now();
    let out = env
        .piimg()
        .env(
            "PIIMG_OS_LIST_URL",
            "http://piimg-first-build.invalid/os_list.json",
        )
        .args(["build", "--profile", "lab.toml", "--all"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
    let err = stderr(&out);
    assert!(
        err.contains("does not resolve") && err.contains("--base FILE.img"),
        "{err}"
    );
    assert!(!env.path("lab.secrets").exists(), "secrets created: {err}");
    assert!(!env.path("lab.state.toml").exists());
    // Offline with an empty cache: the same.
    let out = env
        .piimg()
        .args(["build", "--profile", "lab.toml", "--all", "--offline"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!env.path("lab.secrets").exists(), "{}", stderr(&out));
}

#[test]
fn the_placeholder_key_and_an_offline_github_only_key_set_are_refused_before_any_secret() {
    let base = images::base("bookworm");
    let env = images::Env::new();
    let profile = env.path("lab.toml");
    let text = std::fs::read_to_string(&profile).unwrap();
    let placeholder = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8 REPLACE-ME-placeholder@piimg";
    let start = text.find("ssh_keys = [").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let with = |keys: &str| format!("{}{keys}{}", &text[..start], &text[end..]);

    std::fs::write(&profile, with(&format!("ssh_keys = [\"{placeholder}\"]"))).unwrap();
    let out = env.build(&base, &["--all"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("access.ssh_keys[0] is the reference profile's placeholder key (comment REPLACE-ME…): nobody can log in with it; replace it with your public key"),
        "{err}"
    );
    assert!(!env.path("lab.secrets").exists());
    assert!(!env.path("out/pi5-master-1.img").exists());
    // Online too, refused before the base is even looked for (no download).
    let out = env
        .piimg()
        .env(
            "PIIMG_OS_LIST_URL",
            "http://piimg-never-asked.invalid/os_list.json",
        )
        .args(["build", "--profile", "lab.toml", "--all"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("placeholder key") && !err.contains("cannot reach"),
        "{err}"
    );

    std::fs::write(&profile, with("github_users = [\"someone\"]")).unwrap();
    let out = env.build(&base, &["--all"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no SSH key without the network: access.github_users' keys are fetched at build time, which --offline does not do"),
        "{err}"
    );
    assert!(!env.path("lab.secrets").exists());
}

/// A scratch directory (cache, out/) holding a copy of the reference profile as
/// shipped, `homelab.toml`, whose key file is `~/.ssh/id_ed25519.pub`.
fn reference_env() -> Env {
    let env = Env::new();
    std::fs::write(env.path("homelab.toml"), support::reference::shipped_text()).unwrap();
    env
}

/// `piimg ARGS...` in `env` with `home` as HOME and nothing reachable outside
/// 127.0.0.1 (the OS list's address answers nothing).
fn piimg_at_home(env: &Env, home: &Path, args: &[&str]) -> std::process::Output {
    env.piimg()
        .env("HOME", home)
        .env_remove("XDG_CACHE_HOME")
        .env("PIIMG_OS_LIST_URL", "http://127.0.0.1:9/os_list.json")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_reference_profile_builds_with_the_key_in_home() {
    let home = support::reference::KeyHome::new();
    // The generated key is one OpenSSH itself reads (when ssh-keygen is installed).
    if let Ok(out) = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(home.path().join(".ssh/id_ed25519.pub"))
        .output()
    {
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let env = reference_env();
    let b = base("trixie");
    let b = b.to_str().unwrap();
    let out = piimg_at_home(
        &env,
        home.path(),
        &[
            "--quiet",
            "build",
            "-p",
            "homelab.toml",
            "--node",
            "pi5-master-1",
            "--offline",
            "--base",
            b,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let img = env.path("out/pi5-master-1.img");
    fsck_clean(&img);
    let node = piimg_contract::NodeConfig::from_json(&mtype(&img, "piimg/node.json")).unwrap();
    assert_eq!(
        node.admin.ssh_authorized_keys,
        std::slice::from_ref(&home.key)
    );
    assert!(env.path("homelab.secrets").is_dir());
}

#[test]
fn the_reference_profile_without_the_key_file_is_refused_before_anything() {
    let home = tempfile::tempdir().unwrap();
    let env = reference_env();
    let b = base("bookworm");
    let b = b.to_str().unwrap();
    let want = format!(
        "error: homelab.toml: access.ssh_key_files[0]: cannot read {}/.ssh/id_ed25519.pub: No such file or directory (os error 2); `ssh-keygen -t ed25519` creates ~/.ssh/id_ed25519.pub; or list another key file, an inline key (ssh_keys) or github_users in [access]",
        home.path().display()
    );
    let nothing_made = |what: &str| {
        let mut left: Vec<String> = std::fs::read_dir(env.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["homelab.toml", "lab.toml"], "{what}");
        assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0, "{what}");
    };
    let refused = |what: &str, args: &[&str]| {
        let out = piimg_at_home(&env, home.path(), args);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        nothing_made(what);
        stderr(&out)
    };
    let node = ["-p", "homelab.toml", "--node", "pi5-master-1"];
    let offline = ["--offline", "--base", b];
    // Offline from a base; online, before the OS list is asked for.
    let err = refused(
        "build --offline",
        &[&["--quiet", "build"][..], &node, &offline].concat(),
    );
    assert_eq!(err.trim_end(), want);
    let err = refused("build", &[&["--quiet", "build"][..], &node].concat());
    assert_eq!(err.trim_end(), want);
    // Without --quiet the key file is named once, by the error (no warning too).
    let err = refused(
        "build --all",
        &[
            "build",
            "-p",
            "homelab.toml",
            "--all",
            "--offline",
            "--base",
            b,
        ],
    );
    assert_eq!(err.matches("ssh_key_files").count(), 1, "{err}");
    assert!(err.trim_end().ends_with(&want), "{err}");
    // flash --node composes through the same preparation: refused the same way,
    // before any device is looked at.
    let card = env.dir.path().join("no-such-card");
    let card = card.to_str().unwrap();
    let err = refused(
        "flash --node",
        &[&["--quiet", "flash"][..], &node, &offline, &[card]].concat(),
    );
    assert_eq!(err.trim_end(), want);
    // --json: one document with the same message.
    let out = piimg_at_home(
        &env,
        home.path(),
        &[&["--json", "build"][..], &node, &offline].concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"], want.trim_start_matches("error: "));
    nothing_made("build --json");
}
