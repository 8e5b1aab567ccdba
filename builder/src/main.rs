//! `piimg`: thin entry point — parse, dispatch, print errors.

use clap::FromArgMatches;

mod cli;

fn main() {
    cli::pipe::restore_default_sigpipe();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json = cli::json_error::json_requested(&argv);
    let args = match cli::command()
        .try_get_matches_from(&argv)
        .and_then(|m| cli::Cli::from_arg_matches(&m))
    {
        Ok(a) => a,
        Err(e) => std::process::exit(cli::json_error::usage(&e, json)),
    };
    if let Err(err) = cli::run(args) {
        std::process::exit(cli::json_error::report(&err, json));
    }
}
