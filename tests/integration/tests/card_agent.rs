//! The builder's card output read back with the agent's own parsers: what `piimg
//! build` writes for the reference cluster (profiles/homelab.toml) is what the agent
//! expects to undo and to extend.

use piimg::card::{
    Card, Content, FirstBoot, NodeHa, NodeSecrets, Os, RenderOptions, Templates, render,
};
use piimg::profile::secrets::ClusterState;
use piimg_contract::{BootHook, NODE_CONFIG_FILE, NodeConfig};
use piimg_firstboot::join::Join;
use piimg_firstboot::steps::{boot_hook, k3s};
use std::path::PathBuf;

/// The reference cluster's bootstrap server, planned from profiles/homelab.toml.
fn reference_plan() -> piimg::plan::NodePlan {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../profiles/homelab.toml");
    let profile = piimg::profile::load(&path).expect("profiles/homelab.toml loads");
    let plans = piimg::plan::plan_with(
        &profile,
        &ClusterState::default(),
        vec![piimg_test_support::KEY.into()],
    )
    .expect("the reference profile plans");
    plans
        .into_iter()
        .find(|p| p.name == "pi5-master-1")
        .expect("pi5-master-1 is in the reference profile")
}

fn card(first_boot: FirstBoot) -> Card {
    let os = Os {
        codename: match first_boot {
            FirstBoot::SystemdRun => "bookworm".into(),
            FirstBoot::CloudInit => "trixie".into(),
        },
        first_boot,
    };
    let secrets = NodeSecrets {
        token: piimg_test_support::TOKEN.into(),
        node_password: Some("00ff".into()),
        ..Default::default()
    };
    render(
        &reference_plan(),
        &secrets,
        &NodeHa::default(),
        &os,
        &Templates::builtin(),
        b"agent",
        RenderOptions { build_time: 1 },
    )
    .expect("the reference card renders")
}

#[test]
fn the_agents_unhook_removes_exactly_the_hook_the_builder_added() {
    let c = card(FirstBoot::SystemdRun);
    let BootHook::SystemdRun { cmdline_args } = &c.node_config.boot else {
        panic!("{:?}", c.node_config.boot)
    };
    let base = b"console=tty1 root=PARTUUID=0ddba11e-02 rootwait quiet\n";
    let once = c.cmdline.apply(base).expect("cmdline edit applies");
    // The agent's own unhook leaves the flags and the OS's arguments.
    let unhooked = boot_hook::strip_args(&once, cmdline_args);
    assert_eq!(
        unhooked,
        "console=tty1 root=PARTUUID=0ddba11e-02 rootwait quiet cgroup_memory=1 cgroup_enable=memory\n"
    );
}

#[test]
fn the_agent_accepts_the_k3s_config_the_builder_rendered() {
    let c = card(FirstBoot::SystemdRun);
    let Content::Bytes(json) = &c.files[NODE_CONFIG_FILE] else {
        panic!("{NODE_CONFIG_FILE} is not rendered bytes")
    };
    let cfg = NodeConfig::from_json(&String::from_utf8_lossy(json)).expect("node.json parses");
    // The agent accepts the rendered k3s config (no keys it owns).
    k3s::render_config(&cfg.k3s.config_yaml, "t", Some("a"), &Join::ClusterInit)
        .expect("the agent accepts the builder's config.yaml");
}
