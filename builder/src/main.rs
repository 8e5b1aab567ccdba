//! `piimg`: thin entry point — parse, dispatch, print errors.

use clap::Parser;
use piimg::progress::OutputMode;

mod cli;

fn main() {
    let args = cli::Cli::parse();
    let mode = args.global.output_mode();
    if let Err(err) = cli::run(args) {
        if mode == OutputMode::Json {
            let doc = serde_json::json!({ "error": format!("{err:#}") });
            println!("{doc}");
        }
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
