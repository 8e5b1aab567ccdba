//! Step `network`: turn the Wi-Fi radio on when the card joins Wi-Fi, wait (bounded)
//! for a default route — with DHCP, the lease's route on the configured interface —
//! and, on the cloud-init path, scrub the Wi-Fi PSK from the boot partition's
//! `network-config` once the network it describes is up.

use crate::error::Error;
use crate::exec::Exec;
use crate::log::would;
use crate::node_fs::NodeFs;
use crate::retry::wait_for;
use crate::runner::Cmd;
use crate::time::human;
use piimg_contract::{BootHook, Network};
use std::time::Duration;

/// NetworkManager's persistent radio switches; pi-gen writes `WirelessEnabled=false`
/// into official images built without a Wi-Fi country (RPi-Distro/pi-gen
/// stage2/02-net-tweaks/01-run.sh).
pub const NM_STATE: &str = "/var/lib/NetworkManager/NetworkManager.state";
/// systemd-rfkill's saved soft-block states, one file per radio.
pub const RFKILL_DIR: &str = "/var/lib/systemd/rfkill";
/// The NoCloud network-config on the boot partition (holds the Wi-Fi PSK).
pub const NETWORK_CONFIG: &str = "network-config";
/// What replaces the PSK line of `network-config` once applied.
pub const SCRUBBED: &str = "# password: removed by piimg once applied (netplan keeps it, 0600)";

/// True if /proc/net/route (text) has a default IPv4 route that is up; the device.
pub fn has_default_route(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
        (f.get(1) == Some(&"00000000") && flags & 1 == 1).then(|| f[0].to_string())
    })
}

/// `NetworkManager.state` with `WirelessEnabled=true` (the `[main]` section added
/// when missing).
pub fn wireless_enabled(state: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for l in state.lines() {
        if l.trim_start().starts_with("WirelessEnabled=") {
            out.push_str("WirelessEnabled=true\n");
            done = true;
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !done {
        if !out.lines().any(|l| l.trim() == "[main]") {
            out.push_str("[main]\n");
        }
        out.push_str("WirelessEnabled=true\n");
    }
    out
}

/// `network-config` with every `password:` line replaced by [`SCRUBBED`] (same
/// indentation); `None` when there is none left.
pub fn without_psk(text: &str) -> Option<String> {
    let mut changed = false;
    let out: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("password:") {
                changed = true;
                format!("{}{SCRUBBED}\n", &l[..l.len() - t.len()])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    changed.then_some(out)
}

/// Unblocks the Wi-Fi radio as raspi-config's `do_wifi_country` does: the saved
/// rfkill states and NetworkManager's switch on disk, then (live) `rfkill unblock
/// wifi` and `nmcli radio wifi on`.
fn radio_on(fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    for name in fs.files_in(RFKILL_DIR) {
        if name.ends_with(":wlan") {
            fs.put_like(&format!("{RFKILL_DIR}/{name}"), b"0\n", 0o644)?;
        }
    }
    if let Some(state) = fs.read(NM_STATE)? {
        fs.put_like(NM_STATE, wireless_enabled(&state).as_bytes(), 0o644)?;
    }
    // Best effort: the radio may already be on, and nmcli needs NetworkManager up.
    for cmd in [
        Cmd::new("rfkill", &["unblock", "wifi"]),
        Cmd::new("nmcli", &["radio", "wifi", "on"]),
    ] {
        if let Err(e) = exec.run_ok_live(&cmd) {
            crate::log::info(&format!("{e} (continuing)"));
        }
    }
    Ok("Wi-Fi radio on".into())
}

/// Waits for a default route (the unit is ordered after network-online.target too);
/// with DHCP (`net.address` is `None`) for one through the configured interface, the
/// lease's. `net` is the card's network (named in the error), `limit` the bound on
/// waiting; `boot` says whether a cloud-init `network-config` holds a PSK to scrub.
pub fn wait(
    net: &Network,
    boot: &BootHook,
    limit: Duration,
    fs: &NodeFs,
    exec: &Exec,
) -> Result<String, Error> {
    let mut notes = Vec::new();
    if net.wifi.is_some() {
        notes.push(radio_on(fs, exec)?);
    }
    let iface = net.interface.clone();
    let dhcp = net.address.is_none();
    if fs.dry() {
        would(&format!(
            "wait up to {} for {}",
            human(limit),
            if dhcp {
                format!("a DHCP lease on {iface}")
            } else {
                "a default route".into()
            }
        ));
        return Ok("dry run".into());
    }
    let path = fs.path("/proc/net/route");
    let gw = net.gateway;
    let dev = wait_for(limit, || {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("/proc/net/route: {e}"))?;
        match has_default_route(&text) {
            Some(d) if dhcp && d != iface => Err(format!("the default route is via {d}")),
            Some(d) => Ok(Some(d)),
            None => Err("no default route in /proc/net/route".into()),
        }
    })
    .map_err(|last| {
        let check = match (&net.wifi, dhcp) {
            (Some(w), _) => format!(
                "check the SSID {:?}, the PSK and the country {} in the profile's [wifi], and that the network is in range",
                w.ssid, w.country
            ),
            (None, true) => "check the cable and that the LAN's DHCP server answers".into(),
            (None, false) => "check the NetworkManager keyfile and the cable".into(),
        };
        let what = if dhcp {
            format!("no DHCP lease on {iface}")
        } else {
            format!("no default route (expected via {gw} on {iface})")
        };
        Error::failed(format!("{what} after {}; {check}: {last}", human(limit)))
    })?;
    notes.insert(
        0,
        if dhcp {
            format!("DHCP lease on {dev} (default route)")
        } else {
            format!("default route via {dev}")
        },
    );
    if net.wifi.is_some() && matches!(boot, BootHook::CloudInit { .. }) {
        if let Some(text) = fs.read_card(NETWORK_CONFIG)? {
            if let Some(scrubbed) = without_psk(&text) {
                // Zeroed in place first, as the card's secrets are: a rename alone
                // would leave the PSK in the FAT's freed clusters. A crash between
                // the two leaves no network-config, which cloud-init no longer reads.
                fs.scrub_card(NETWORK_CONFIG)?;
                fs.put_card(NETWORK_CONFIG, scrubbed.as_bytes())?;
                notes.push(format!(
                    "Wi-Fi PSK scrubbed from the card's {NETWORK_CONFIG}"
                ));
            }
        }
    }
    Ok(notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wireless_switch_is_turned_on() {
        assert_eq!(
            wireless_enabled("[main]\nNetworkingEnabled=true\nWirelessEnabled=false\n"),
            "[main]\nNetworkingEnabled=true\nWirelessEnabled=true\n"
        );
        assert_eq!(wireless_enabled(""), "[main]\nWirelessEnabled=true\n");
    }

    #[test]
    fn psk_lines_are_replaced_keeping_indentation() {
        let t = "      access-points:\n        \"lab\":\n          password: \"00ff\"\n";
        let s = without_psk(t).unwrap();
        assert!(!s.contains("00ff"), "{s}");
        assert!(s.contains(&format!("          {SCRUBBED}\n")), "{s}");
        assert_eq!(without_psk(&s), None);
    }
}
