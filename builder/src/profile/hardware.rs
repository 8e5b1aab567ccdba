//! Hardware classes: board + RAM, and the defaults each class brings (config.txt
//! lines, kubelet reservations for small boards, placement labels).

use super::model::HardwareOptions;
use std::collections::BTreeMap;

/// A Raspberry Pi model piimg knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardwareClass {
    /// Class id used in profiles, e.g. `pi5-8gb`.
    pub id: &'static str,
    /// Board, also the config.txt section name (`pi5`, `pi4`, `pi02`).
    pub board: &'static str,
    /// RAM in MiB.
    pub ram_mb: u32,
}

/// Every known hardware class.
pub const CLASSES: &[HardwareClass] = &[
    HardwareClass {
        id: "pi5-16gb",
        board: "pi5",
        ram_mb: 16384,
    },
    HardwareClass {
        id: "pi5-8gb",
        board: "pi5",
        ram_mb: 8192,
    },
    HardwareClass {
        id: "pi5-4gb",
        board: "pi5",
        ram_mb: 4096,
    },
    HardwareClass {
        id: "pi5-2gb",
        board: "pi5",
        ram_mb: 2048,
    },
    HardwareClass {
        id: "pi4-8gb",
        board: "pi4",
        ram_mb: 8192,
    },
    HardwareClass {
        id: "pi4-4gb",
        board: "pi4",
        ram_mb: 4096,
    },
    HardwareClass {
        id: "pi4-2gb",
        board: "pi4",
        ram_mb: 2048,
    },
    HardwareClass {
        id: "pi4-1gb",
        board: "pi4",
        ram_mb: 1024,
    },
    HardwareClass {
        id: "pizero2w-512mb",
        board: "pi02",
        ram_mb: 512,
    },
];

/// Label naming the board (`pi5`, `pi4`, …).
pub const LABEL_BOARD: &str = "piimg.io/board";
/// Label naming the hardware class (`pi5-8gb`, …).
pub const LABEL_CLASS: &str = "piimg.io/hardware-class";
/// Label giving the RAM in MiB.
pub const LABEL_RAM: &str = "piimg.io/ram-mb";

/// Minimum RAM (MiB) for a control-plane server.
pub const SERVER_MIN_RAM_MB: u32 = 2048;
/// Agents below this RAM (MiB) get a warning.
pub const AGENT_WARN_RAM_MB: u32 = 1024;

/// The class called `id`.
pub fn class(id: &str) -> Option<&'static HardwareClass> {
    CLASSES.iter().find(|c| c.id == id)
}

/// All class ids, for messages.
pub fn class_ids() -> impl Iterator<Item = &'static str> {
    CLASSES.iter().map(|c| c.id)
}

impl HardwareClass {
    /// config.txt lines for this board's `[board]` section.
    pub fn config_txt(&self, opts: &HardwareOptions) -> Vec<String> {
        let mut lines = Vec::new();
        if self.board == "pi5" && opts.pi5_4k_pages {
            // Pi 5 boots kernel_2712.img with 16 KiB pages; many images (jemalloc) need 4 KiB.
            lines.push("kernel=kernel8.img".to_string());
        }
        lines
    }

    /// config.txt lines for the `[all]` section.
    pub fn config_txt_all(&self, opts: &HardwareOptions) -> Vec<String> {
        let mut lines = Vec::new();
        if opts.disable_wifi {
            lines.push("dtoverlay=disable-wifi".to_string());
        }
        if opts.disable_bluetooth {
            lines.push("dtoverlay=disable-bt".to_string());
        }
        lines
    }

    /// Kubelet reservations and eviction thresholds that keep small boards alive.
    pub fn kubelet_args(&self) -> Vec<String> {
        let (reserved, evict) = match self.ram_mb {
            0..=1024 => (
                "cpu=100m,memory=128Mi",
                "memory.available<100Mi,nodefs.available<10%",
            ),
            1025..=2048 => (
                "cpu=200m,memory=256Mi",
                "memory.available<150Mi,nodefs.available<10%",
            ),
            _ => return Vec::new(),
        };
        vec![
            format!("system-reserved={reserved}"),
            format!("kube-reserved={reserved}"),
            format!("eviction-hard={evict}"),
        ]
    }

    /// Placement labels every node of this class carries.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_BOARD.to_string(), self.board.to_string()),
            (LABEL_CLASS.to_string(), self.id.to_string()),
            (LABEL_RAM.to_string(), self.ram_mb.to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi5_gets_4k_kernel_unless_turned_off() {
        let pi5 = class("pi5-8gb").unwrap();
        let mut opts = HardwareOptions::default();
        assert_eq!(pi5.config_txt(&opts), ["kernel=kernel8.img"]);
        opts.pi5_4k_pages = false;
        assert!(pi5.config_txt(&opts).is_empty());
        assert!(
            class("pi4-2gb")
                .unwrap()
                .config_txt(&HardwareOptions::default())
                .is_empty()
        );
    }

    #[test]
    fn small_pi4_gets_reservations_big_boards_do_not() {
        let small = class("pi4-2gb").unwrap().kubelet_args();
        assert!(small.iter().any(|a| a.starts_with("system-reserved=")));
        assert!(
            small
                .iter()
                .any(|a| a.starts_with("eviction-hard=memory.available<"))
        );
        assert!(class("pi4-1gb").unwrap().kubelet_args().len() == 3);
        assert!(class("pi5-8gb").unwrap().kubelet_args().is_empty());
    }

    #[test]
    fn labels_name_board_class_and_ram() {
        let l = class("pi5-8gb").unwrap().labels();
        assert_eq!(l[LABEL_BOARD], "pi5");
        assert_eq!(l[LABEL_CLASS], "pi5-8gb");
        assert_eq!(l[LABEL_RAM], "8192");
    }

    #[test]
    fn wifi_and_bluetooth_overlays_go_to_all() {
        let opts = HardwareOptions {
            disable_wifi: true,
            disable_bluetooth: true,
            ..HardwareOptions::default()
        };
        assert_eq!(
            class("pi4-4gb").unwrap().config_txt_all(&opts),
            ["dtoverlay=disable-wifi", "dtoverlay=disable-bt"]
        );
    }
}
