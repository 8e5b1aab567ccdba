//! Every environment variable `piimg` reads, in one table: the ENVIRONMENT section
//! of `--help` and of the man pages is generated from it, and the README's table
//! lists the same variables.

/// One environment variable and the subcommands it affects.
#[derive(Debug)]
pub struct EnvVar {
    /// Its name.
    pub name: &'static str,
    /// The subcommands that read it (empty: every subcommand).
    pub used_by: &'static [&'static str],
    /// What it does.
    pub what: &'static str,
}

/// The variables, in the order the help lists them (each line fits 80 columns).
pub const VARS: &[EnvVar] = &[
    EnvVar {
        name: "PIIMG_PROFILE",
        used_by: &[],
        what: "profile if no --profile [then ./piimg.toml, profiles/*.toml]",
    },
    EnvVar {
        name: "PIIMG_CACHE",
        used_by: &["fetch", "cache", "build", "flash"],
        what: "base image cache [default: $XDG_CACHE_HOME/piimg]",
    },
    EnvVar {
        name: "XDG_CACHE_HOME",
        used_by: &["fetch", "cache", "build", "flash"],
        what: "parent of the default cache [default: ~/.cache]",
    },
    EnvVar {
        name: "PIIMG_OS_LIST_URL",
        used_by: &["fetch", "build", "flash"],
        what: "Raspberry Pi Imager OS list URL [default: Imager's]",
    },
    EnvVar {
        name: "SOURCE_DATE_EPOCH",
        used_by: &["build", "flash"],
        what: "build time in images, seconds since 1970 (reproducible)",
    },
    EnvVar {
        name: "PIIMG_GITHUB_KEYS_URL",
        used_by: &["validate", "plan", "build", "flash"],
        what: "base URL of github_users' keys [default: https://github.com]",
    },
    EnvVar {
        name: "TMPDIR",
        used_by: &["flash"],
        what: "where --node/--all compose boot partitions [default: /tmp]",
    },
    EnvVar {
        name: "PIIMG_API_PORT",
        used_by: &["kubeconfig", "status"],
        what: "the cluster's Kubernetes API port (as --api-port)",
    },
    EnvVar {
        name: "KUBECONFIG",
        used_by: &["kubeconfig"],
        what: "the kubeconfig --merge updates [default: ~/.kube/config]",
    },
    EnvVar {
        name: "HOME",
        used_by: &[],
        what: "~ in profile key paths, ~/.cache, ~/.kube/config",
    },
    EnvVar {
        name: "COLUMNS",
        used_by: &["plan"],
        what: "width of the plan table [default: the terminal's; none in a pipe]",
    },
];

/// The variables `subcommand` reads (`None`: the top-level command, all of them).
pub fn vars_for(subcommand: Option<&str>) -> impl Iterator<Item = &'static EnvVar> + '_ {
    VARS.iter().filter(move |v| match subcommand {
        None => true,
        Some(s) => v.used_by.is_empty() || v.used_by.contains(&s),
    })
}

/// The `--help` ENVIRONMENT section for `subcommand`: each name on its own line,
/// its meaning indented below (clap re-wraps long lines without a hanging indent).
pub fn section(subcommand: Option<&str>) -> String {
    let mut out = String::from("Environment:");
    for v in vars_for(subcommand) {
        out.push_str(&format!("\n  {}\n      {}", v.name, v.what));
    }
    out
}

/// The roff ENVIRONMENT section of the man page for `subcommand`.
pub fn roff_section(subcommand: Option<&str>) -> String {
    let esc = |t: &str| t.replace('\\', "\\e").replace('-', "\\-");
    let mut out = String::from(".SH ENVIRONMENT\n");
    for v in vars_for(subcommand) {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", esc(v.name), esc(v.what)));
    }
    out
}

/// `cmd` with the ENVIRONMENT section appended to its help and each subcommand's.
pub fn document(cmd: clap::Command) -> clap::Command {
    cmd.after_help(section(None)).mut_subcommands(|sub| {
        let text = section(Some(sub.get_name()));
        let help = match sub.get_after_help() {
            Some(existing) => format!("{existing}\n\n{text}"),
            None => text,
        };
        sub.after_help(help)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_fits_80_columns() {
        for line in section(None).lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
    }
}
