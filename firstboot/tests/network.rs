//! The `network` step: with DHCP it waits for the lease's default route on the
//! configured interface (not any route); with Wi-Fi it turns the radio on (saved
//! rfkill state, NetworkManager's switch) and, on the cloud-init path, scrubs the
//! PSK from the card's network-config once the network is up.

use piimg_contract::*;
use piimg_firstboot::steps::network::{NM_STATE, SCRUBBED};
use piimg_test_support::*;
use std::fs;

/// The agent binary under test.
const AGENT: &str = env!("CARGO_BIN_EXE_piimg-firstboot");

const PSK: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const ROUTE_HEAD: &str =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

/// A DHCP agent card on Wi-Fi, cloud-init flavour.
fn wifi_dhcp_cfg() -> NodeConfig {
    let mut c = node_config(Role::Agent, false, cloud_init_hook());
    c.network.interface = "wlan0".into();
    c.network.address = None;
    c.network.wifi = Some(Wifi {
        ssid: "lab net".into(),
        country: "GB".into(),
        hidden: false,
    });
    c
}

fn network_step(f: &Fixture) -> StepRecord {
    f.status()
        .steps
        .into_iter()
        .find(|s| s.name == "network")
        .expect("network step reached")
}

fn fixture(route_iface: &str) -> Fixture {
    let f = Fixture::new(AGENT.as_ref(), &wifi_dhcp_cfg());
    fs::write(
        f.path("/proc/net/route"),
        format!(
            "{ROUTE_HEAD}{route_iface}\t00000000\t0156A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        ),
    )
    .unwrap();
    fs::create_dir_all(f.path("/var/lib/systemd/rfkill")).unwrap();
    fs::write(
        f.path("/var/lib/systemd/rfkill/platform-107d50c000.serial:bluetooth"),
        "0\n",
    )
    .unwrap();
    fs::write(
        f.path("/var/lib/systemd/rfkill/platform-1001100000.mmc:wlan"),
        "1\n",
    )
    .unwrap();
    fs::create_dir_all(f.path("/var/lib/NetworkManager")).unwrap();
    fs::write(f.path(NM_STATE), "[main]\nWirelessEnabled=false\n").unwrap();
    fs::write(
        f.boot.join("network-config"),
        format!("network:\n  version: 2\n  wifis:\n    wlan0:\n      access-points:\n        \"lab net\":\n          password: \"{PSK}\"\n      dhcp4: true\n"),
    )
    .unwrap();
    f
}

#[test]
fn wifi_dhcp_waits_for_the_lease_turns_the_radio_on_and_scrubs_the_psk() {
    let f = fixture("wlan0");
    // Phase 1, then phase 2 up to the network step (later steps may fail here).
    let _ = f.run(&[]);
    let _ = f.run(&[]);
    let step = network_step(&f);
    assert_eq!(step.result, StepResult::Ok, "{step:?}");
    assert!(
        step.message.starts_with("DHCP lease on wlan0"),
        "{}",
        step.message
    );
    assert_eq!(
        f.read("/var/lib/systemd/rfkill/platform-1001100000.mmc:wlan"),
        "0\n"
    );
    assert_eq!(
        f.read("/var/lib/systemd/rfkill/platform-107d50c000.serial:bluetooth"),
        "0\n"
    );
    assert_eq!(f.read(NM_STATE), "[main]\nWirelessEnabled=true\n");
    let nc = fs::read_to_string(f.boot.join("network-config")).unwrap();
    assert!(!nc.contains(PSK), "{nc}");
    assert!(nc.contains(&format!("          {SCRUBBED}\n")), "{nc}");
    assert!(nc.contains("      dhcp4: true\n"), "{nc}");
}

#[test]
fn a_default_route_on_another_interface_is_not_the_lease() {
    let f = fixture("eth0");
    let _ = f.run(&[]);
    let out = f.run(&[]);
    assert!(!out.status.success());
    let step = network_step(&f);
    assert_eq!(step.result, StepResult::Error);
    assert!(
        step.message
            == "no DHCP lease on wlan0 after 2 s; check the SSID \"lab net\", the PSK and the country GB in the profile's [wifi], and that the network is in range: the default route is via eth0",
        "{}",
        step.message
    );
    // Not applied: the PSK stays where cloud-init can still read it.
    assert!(
        fs::read_to_string(f.boot.join("network-config"))
            .unwrap()
            .contains(PSK)
    );
}
