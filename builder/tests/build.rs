//! `piimg build`: the card's text files checked with independent tools (cloud-init,
//! Python's configparser), and whole images built from generated Raspberry Pi
//! OS-shaped bases checked with fsck.vfat, e2fsck, mtools and bmaptool.

use piimg::card::{self, Card, Content, FirstBoot, NodeSecrets, Os, RenderOptions, Templates};
use piimg::plan::{Access, FirstBootAction, Hardware, NodeK3s, NodeNetwork, NodePlan};
use piimg_firstboot::contract::{self, Role};
use std::path::Path;
use std::process::Command;

fn plan() -> NodePlan {
    NodePlan {
        cluster: "homelab".into(),
        profile: "homelab".into(),
        name: "pi5-master-1".into(),
        domain: Some("lan".into()),
        role: Role::Server,
        bootstrap: true,
        first_boot: FirstBootAction::InitCluster,
        network: NodeNetwork {
            interface: "eth0".into(),
            mac: None,
            address: "192.168.86.31".parse().unwrap(),
            prefix_len: 24,
            gateway: "192.168.86.1".parse().unwrap(),
            dns: vec!["192.168.86.1".parse().unwrap(), "9.9.9.9".parse().unwrap()],
            search: vec!["lan".into()],
        },
        hardware: Hardware {
            class: "pi5-8gb".into(),
            board: "pi5".into(),
            ram_mb: 8192,
            config_txt: vec!["kernel=kernel8.img".into()],
            config_txt_all: vec![
                "dtoverlay=disable-wifi".into(),
                "dtoverlay=disable-bt".into(),
            ],
            kubelet_args: vec![],
        },
        access: Access {
            admin_user: "admin".into(),
            ssh_authorized_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly admin@laptop".into(),
            ],
            password_login: false,
        },
        k3s: NodeK3s {
            version: "v1.31.4+k3s1".into(),
            vip: None,
            tls_san: vec![],
            disable: vec!["servicelb".into()],
            etcd_snapshot_schedule: None,
            etcd_snapshot_retention: None,
            labels: Default::default(),
            taints: vec![],
            extra_args: vec![],
            kubelet_args: vec![],
            airgap_dir: None,
        },
        servers: vec![("pi5-master-1".into(), "192.168.86.31".parse().unwrap())],
        overlay_dir: None,
    }
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
            files: vec![],
        },
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
    let cfg = contract::NodeConfig::from_json(&file_text(&c, contract::NODE_CONFIG_FILE)).unwrap();
    assert_eq!(cfg.node_name, "pi5-master-1");
    assert_eq!(cfg.network.address.to_string(), "192.168.86.31");
}
