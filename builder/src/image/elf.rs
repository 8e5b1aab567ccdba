//! Which CPU architecture an ELF binary is built for, from its header.

/// A Debian architecture as far as piimg cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit ARM (Raspberry Pi OS Lite arm64): the only supported one.
    Arm64,
    /// 32-bit ARM (Raspberry Pi OS armhf/armel).
    Armhf,
    /// 64-bit x86.
    Amd64,
    /// 32-bit x86.
    I386,
}

impl Arch {
    /// The Debian name (`arm64`, `armhf`, `amd64`, `i386`).
    pub fn debian_name(&self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
            Arch::Amd64 => "amd64",
            Arch::I386 => "i386",
        }
    }

    /// From a Debian architecture name.
    pub fn from_debian(name: &str) -> Option<Self> {
        match name.trim() {
            "arm64" => Some(Arch::Arm64),
            "armhf" | "armel" => Some(Arch::Armhf),
            "amd64" => Some(Arch::Amd64),
            "i386" => Some(Arch::I386),
            _ => None,
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.debian_name())
    }
}

/// What an ELF header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfMachine {
    /// A known architecture.
    Known(Arch),
    /// Another `e_machine` value.
    Unknown(u16),
}

/// Reads the architecture from the first bytes of an ELF file; `None` if `head` is not
/// an ELF header.
pub fn machine(head: &[u8]) -> Option<ElfMachine> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let e_machine = match head[5] {
        1 => u16::from_le_bytes([head[18], head[19]]),
        2 => u16::from_be_bytes([head[18], head[19]]),
        _ => return None,
    };
    Some(match e_machine {
        183 => ElfMachine::Known(Arch::Arm64),
        40 => ElfMachine::Known(Arch::Armhf),
        62 => ElfMachine::Known(Arch::Amd64),
        3 => ElfMachine::Known(Arch::I386),
        other => ElfMachine::Unknown(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn machines() {
        assert_eq!(machine(&header(183)), Some(ElfMachine::Known(Arch::Arm64)));
        assert_eq!(machine(&header(40)), Some(ElfMachine::Known(Arch::Armhf)));
        assert_eq!(machine(&header(62)), Some(ElfMachine::Known(Arch::Amd64)));
        assert_eq!(machine(&header(243)), Some(ElfMachine::Unknown(243)));
        assert_eq!(machine(b"#!/bin/sh\n echo hello there"), None);
    }
}
