//! `piimg fetch`: download, verify and cache Raspberry Pi OS Lite (64-bit).

use anyhow::Context;
use clap::Args;
use piimg::fetch::{self, FetchOptions, ReleaseChoice, Source};
use piimg::progress::Reporter;

/// Arguments of `piimg fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Which Lite arm64 release to fetch: `latest`, or a codename (`bookworm`, `trixie`).
    #[arg(long, default_value = "latest", conflicts_with = "url")]
    pub release: String,
    /// Download this `.img.xz` instead of looking in the OS list (needs --sha256).
    #[arg(long, requires = "sha256", value_name = "URL")]
    pub url: Option<String>,
    /// Import this already downloaded `.img.xz` instead (needs --sha256).
    #[arg(long, requires = "sha256", conflicts_with_all = ["url", "release"], value_name = "PATH")]
    pub file: Option<std::path::PathBuf>,
    /// sha256 of the `.img.xz` given with --url or --file.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// The image's `.bmap` (bmaptool format) for --url/--file: holes are punched only
    /// at its unmapped ranges and its range checksums are verified. Without one the
    /// cached image is dense.
    #[arg(long, value_name = "URL", conflicts_with = "release")]
    pub bmap_url: Option<String>,
    /// Raspberry Pi Imager OS list to search (for mirrors and tests).
    #[arg(long, env = "PIIMG_OS_LIST_URL", value_name = "URL",
          default_value = fetch::DEFAULT_OS_LIST_URL)]
    pub os_list: String,
    /// Use only the cache; fail, saying what is missing, instead of downloading.
    #[arg(long)]
    pub offline: bool,
}

impl FetchArgs {
    /// The library options these arguments select.
    pub fn options(&self) -> anyhow::Result<FetchOptions> {
        let mut opts = FetchOptions::from_env()?;
        opts.release = ReleaseChoice::parse(&self.release)?;
        opts.offline = self.offline;
        opts.bmap_url.clone_from(&self.bmap_url);
        opts.source = match (&self.url, &self.file, &self.sha256) {
            (Some(url), _, Some(sha256)) => Source::Direct {
                url: url.clone(),
                sha256: sha256.clone(),
            },
            (_, Some(path), Some(sha256)) => Source::File {
                path: path.clone(),
                sha256: sha256.clone(),
            },
            (None, None, Some(_)) => anyhow::bail!("--sha256 goes with --url URL or --file PATH"),
            _ => Source::OsList {
                url: self.os_list.clone(),
            },
        };
        Ok(opts)
    }
}

/// Runs `piimg fetch`.
pub fn run(args: FetchArgs, out: Reporter) -> anyhow::Result<()> {
    let opts = args.options()?;
    // Ctrl-C/SIGTERM stop between chunks: temp files go, the download resumes later.
    piimg::interrupt::install();
    let fetched = fetch::fetch(&opts, &out).context("piimg fetch")?;
    if out.is_json() {
        out.json(&fetched)?;
    } else if out.mode() == piimg::progress::OutputMode::Human {
        let img = &fetched.image;
        println!("{}", img.path.display());
        eprintln!(
            "{} {} ({}), sha256 {}{}",
            img.name,
            img.release,
            img.release_date,
            img.sha256,
            if fetched.downloaded {
                ""
            } else {
                " (already cached)"
            }
        );
    }
    Ok(())
}
