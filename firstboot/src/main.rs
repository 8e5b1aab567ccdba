//! `piimg-firstboot`: the on-card agent. Thin: parse, run, report.

use piimg_contract::STATUS_FILE;
use piimg_contract::status_slots::{self, STATUS_SLOTS_FILE};
use piimg_firstboot::agent::{self, Outcome};
use piimg_firstboot::cli::{self, Command};
use piimg_firstboot::ha_join::HaJoin;
use piimg_firstboot::http::DefaultProbe;
use piimg_firstboot::log;
use piimg_firstboot::runner::SystemRunner;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("piimg-firstboot: {e}");
            std::process::exit(2);
        }
    };
    let code = match cmd {
        Command::Help => {
            print!("{}", cli::USAGE);
            0
        }
        Command::Version => {
            println!("piimg-firstboot {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Status(opts) => {
            match agent::load_state(&opts) {
                Ok(st) => println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default()),
                Err(e) => log::error(&e.to_string()),
            }
            match std::fs::read(opts.boot.join(STATUS_SLOTS_FILE)) {
                Ok(bytes) => {
                    let slots = status_slots::read(&bytes);
                    for p in &slots.problems {
                        log::warn(&format!("card {p}"));
                    }
                    match slots.newest() {
                        Some(n) => print!("{}", String::from_utf8_lossy(&n.payload)),
                        None => log::warn(&format!("card {STATUS_SLOTS_FILE}: no report yet")),
                    }
                }
                // A card built before status slots.
                Err(e) => match std::fs::read_to_string(opts.boot.join(STATUS_FILE)) {
                    Ok(s) => print!("{s}"),
                    Err(_) => log::warn(&format!("card {STATUS_SLOTS_FILE}: {e}")),
                },
            }
            0
        }
        Command::Run(opts) => {
            let runner = SystemRunner;
            match agent::run(&opts, &runner, &DefaultProbe, &HaJoin) {
                Ok(Outcome::Complete) => {
                    log::info("provisioning complete");
                    0
                }
                Ok(Outcome::HandedOff) => {
                    log::info("phase 1 complete");
                    0
                }
                Ok(Outcome::AlreadyComplete | Outcome::DryRun) => 0,
                Err(e) => {
                    log::error(&e.to_string());
                    1
                }
            }
        }
    };
    std::process::exit(code);
}
