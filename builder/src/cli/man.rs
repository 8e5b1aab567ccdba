//! `piimg man`: roff man pages generated from the clap definition — `piimg.1` and
//! one `piimg-SUBCOMMAND.1` per subcommand.

use anyhow::Context;
use clap::{Args, CommandFactory};
use piimg::atomic::write_atomic;
use piimg::progress::Reporter;
use std::path::{Path, PathBuf};

/// Arguments of `piimg man`.
#[derive(Debug, Args)]
#[command(after_help = "\
Without --out, prints piimg(1) on stdout:  piimg man | man -l -
With --out, writes every page:              piimg man --out ~/.local/share/man/man1")]
pub struct ManArgs {
    /// Write piimg.1 and piimg-SUBCOMMAND.1 into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints `piimg.1`, or writes every page into `--out`.
pub fn run(args: ManArgs, out: Reporter) -> anyhow::Result<()> {
    // The clap definition without the --help ENVIRONMENT text: the pages get a
    // roff ENVIRONMENT section of their own.
    let mut cmd = super::Cli::command();
    // Built, so that each subcommand carries the global options on its own page.
    cmd.build();
    let Some(dir) = args.out else {
        return super::pipe::write_stdout(&render(&cmd, None)?);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = vec![write_page(&dir, "piimg", &cmd, None)?];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("piimg-{}", sub.get_name());
        // The sub-page's NAME and SYNOPSIS say `piimg-build`, as git's pages do.
        let page = sub.clone().name(name.clone()).bin_name(name.clone());
        written.push(write_page(&dir, &name, &page, Some(sub.get_name()))?);
    }
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    if out.is_json() {
        out.json(&serde_json::json!({ "written": names }))?;
    } else {
        for n in &names {
            out.info(n);
        }
    }
    Ok(())
}

/// The page of `cmd`, with the ENVIRONMENT section of `sub` (`None`: `piimg`)
/// before VERSION, where man-pages(7) puts it.
fn render(cmd: &clap::Command, sub: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .context("rendering the man page")?;
    let page = String::from_utf8(buf).context("the rendered man page is not UTF-8")?;
    let env = super::environment::roff_section(sub);
    let page = match page.find(".SH VERSION") {
        Some(at) => format!("{}{env}{}", &page[..at], &page[at..]),
        None => format!("{page}{env}"),
    };
    Ok(page.into_bytes())
}

fn write_page(
    dir: &Path,
    name: &str,
    cmd: &clap::Command,
    sub: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.1"));
    write_atomic(&path, &render(cmd, sub)?, 0o644)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
