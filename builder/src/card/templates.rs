//! The overlay templates: built into the binary from `overlays/`, overridable file by
//! file from a profile's overlay directory, rendered with handlebars in strict mode
//! and without HTML escaping.

use super::CardError;
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../overlays/", $name)))),*]
    };
}

/// The templates shipped in the binary: (name relative to `overlays/`, text).
pub const BUILTIN: &[(&str, &str)] = builtin!(
    "common/cmdline.txt.hbs",
    "common/config.txt.hbs",
    "common/k3s-config.yaml.hbs",
    "common/piimg-firstboot.service.hbs",
    "common/sshd-piimg.conf.hbs",
    "bookworm/cmdline-hook.txt.hbs",
    "bookworm/network.nmconnection.hbs",
    "trixie/user-data.hbs",
    "trixie/meta-data.hbs",
    "trixie/network-config.hbs",
    "manifests/node-cleaner-rbac.yaml",
    "manifests/kube-vip-rbac.yaml",
    "manifests/kube-vip.yaml",
    "manifests/cert-manager.yaml",
    "manifests/kube-prometheus-stack.yaml",
    "manifests/values/cert-manager.yaml",
    "manifests/values/kube-prometheus-stack.yaml",
);

/// Directory of an overlay that holds extra files for the boot partition.
pub const OVERLAY_BOOT_DIR: &str = "boot";

/// Where a template's text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built into the binary from `overlays/`.
    Builtin,
    /// Read from a profile's overlay directory.
    Overlay(PathBuf),
}

#[derive(Debug, Clone)]
struct Source {
    text: String,
    origin: Origin,
}

/// A file an overlay adds to the boot partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootExtra {
    /// Path on the boot partition (`/`-separated, relative).
    pub dest: String,
    /// File in the overlay directory.
    pub source: PathBuf,
    /// True for `.hbs` files, which are rendered (the suffix is dropped from `dest`).
    pub template: bool,
}

/// The set of templates a build renders with.
#[derive(Debug, Clone)]
pub struct Templates {
    sources: BTreeMap<String, Source>,
    boot_extras: Vec<BootExtra>,
}

impl Templates {
    /// Only the built-in templates.
    pub fn builtin() -> Self {
        let sources = BUILTIN
            .iter()
            .map(|(name, text)| {
                (
                    name.to_string(),
                    Source {
                        text: text.to_string(),
                        origin: Origin::Builtin,
                    },
                )
            })
            .collect();
        Self {
            sources,
            boot_extras: Vec::new(),
        }
    }

    /// The built-in templates with `dir` laid over them: a file at the same relative
    /// path replaces a built-in template; files under `dir/boot/` are extra boot
    /// partition files. Any other file in `dir` is refused (it would be silently unused).
    pub fn with_overlay(dir: &Path) -> Result<Self, CardError> {
        let mut t = Self::builtin();
        let meta = std::fs::metadata(dir).map_err(|e| CardError::Overlay {
            path: dir.to_path_buf(),
            message: format!("{e}; check the profile's overlay directory"),
        })?;
        if !meta.is_dir() {
            return Err(CardError::Overlay {
                path: dir.to_path_buf(),
                message: "not a directory".into(),
            });
        }
        let mut files = Vec::new();
        walk(dir, dir, &mut files)?;
        files.sort();
        for rel in files {
            let path = dir.join(&rel);
            if let Some(boot_rel) = rel.strip_prefix(&format!("{OVERLAY_BOOT_DIR}/")) {
                let template = boot_rel.ends_with(".hbs");
                let dest = boot_rel
                    .strip_suffix(".hbs")
                    .unwrap_or(boot_rel)
                    .to_string();
                t.boot_extras.push(BootExtra {
                    dest,
                    source: path,
                    template,
                });
                continue;
            }
            if rel == "README.md" {
                continue;
            }
            if !t.sources.contains_key(&rel) {
                let known: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                return Err(CardError::Overlay {
                    path,
                    message: format!(
                        "does not override any template (known: {}; extra boot files go under {OVERLAY_BOOT_DIR}/)",
                        known.join(", ")
                    ),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(|e| CardError::Overlay {
                path: path.clone(),
                message: e.to_string(),
            })?;
            t.sources.insert(
                rel,
                Source {
                    text,
                    origin: Origin::Overlay(path),
                },
            );
        }
        Ok(t)
    }

    /// Where template `name` comes from, if it exists.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.sources.get(name).map(|s| &s.origin)
    }

    /// Extra files an overlay adds to the boot partition, sorted by destination.
    pub fn boot_extras(&self) -> &[BootExtra] {
        &self.boot_extras
    }

    /// SHA-256 (hex) of every template's text, by name (overlay boot files included
    /// as `boot/<path>`).
    pub fn hashes(&self) -> Result<BTreeMap<String, String>, CardError> {
        let mut out: BTreeMap<String, String> = self
            .sources
            .iter()
            .map(|(n, s)| (n.clone(), sha256_hex(s.text.as_bytes())))
            .collect();
        for extra in &self.boot_extras {
            let bytes = std::fs::read(&extra.source).map_err(|e| CardError::Overlay {
                path: extra.source.clone(),
                message: e.to_string(),
            })?;
            out.insert(
                format!("{OVERLAY_BOOT_DIR}/{}", extra.dest),
                sha256_hex(&bytes),
            );
        }
        Ok(out)
    }

    /// Template `name`'s text as it is (not rendered), e.g. a values file.
    pub fn text(&self, name: &str) -> Result<&str, CardError> {
        self.sources
            .get(name)
            .map(|s| s.text.as_str())
            .ok_or_else(|| CardError::Template {
                name: name.to_string(),
                message: "no such template".into(),
            })
    }

    /// Renders template `name` with `data`.
    pub fn render<T: Serialize>(&self, name: &str, data: &T) -> Result<String, CardError> {
        let src = self.sources.get(name).ok_or_else(|| CardError::Template {
            name: name.to_string(),
            message: "no such template".into(),
        })?;
        render_text(name, &src.origin, &src.text, data)
    }

    /// Renders an overlay's extra boot file template.
    pub fn render_extra<T: Serialize>(
        &self,
        extra: &BootExtra,
        data: &T,
    ) -> Result<String, CardError> {
        let text = std::fs::read_to_string(&extra.source).map_err(|e| CardError::Overlay {
            path: extra.source.clone(),
            message: e.to_string(),
        })?;
        render_text(
            &extra.dest,
            &Origin::Overlay(extra.source.clone()),
            &text,
            data,
        )
    }
}

fn render_text<T: Serialize>(
    name: &str,
    origin: &Origin,
    text: &str,
    data: &T,
) -> Result<String, CardError> {
    let shown = match origin {
        Origin::Builtin => format!("overlays/{name} (built in)"),
        Origin::Overlay(p) => p.display().to_string(),
    };
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("json", Box::new(json_helper));
    hb.register_template_string(name, text)
        .map_err(|e| CardError::Template {
            name: shown.clone(),
            message: e.to_string(),
        })?;
    hb.render(name, data).map_err(|e| CardError::Template {
        name: shown,
        message: e.to_string(),
    })
}

/// `{{json value}}`: the value as compact JSON, which is also a valid YAML flow scalar/list.
fn json_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let param = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
    let text = serde_json::to_string(param.value())
        .map_err(|e| RenderErrorReason::Other(e.to_string()))?;
    out.write(&text)?;
    Ok(())
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), CardError> {
    let err = |path: &Path, e: std::io::Error| CardError::Overlay {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    for entry in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let entry = entry.map_err(|e| err(dir, e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| err(&path, e))?;
        if ft.is_dir() {
            walk(base, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(base)
                .map_err(|_| CardError::Overlay {
                    path: path.clone(),
                    message: "outside the overlay directory".into(),
                })?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push(rel);
        }
    }
    Ok(())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_mode_names_the_template_and_the_missing_variable() {
        let err = render_text(
            "x.hbs",
            &Origin::Builtin,
            "hello {{plan.nope}}",
            &json!({"plan": {}}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("overlays/x.hbs"), "{err}");
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn no_html_escaping_and_json_helper_quotes() {
        let out = render_text(
            "x",
            &Origin::Builtin,
            "{{a}} {{json a}}",
            &json!({"a": "<&\"'>"}),
        )
        .unwrap();
        assert_eq!(out, r#"<&"'> "<&\"'>""#);
    }

    #[test]
    fn overlay_overrides_one_file_and_adds_boot_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("common")).unwrap();
        std::fs::create_dir_all(dir.path().join("boot/extra")).unwrap();
        std::fs::write(dir.path().join("common/sshd-piimg.conf.hbs"), "mine\n").unwrap();
        std::fs::write(dir.path().join("boot/extra/hello.txt"), "hi").unwrap();
        std::fs::write(dir.path().join("boot/motd.hbs"), "{{plan.name}}").unwrap();
        let t = Templates::with_overlay(dir.path()).unwrap();
        assert_eq!(
            t.render("common/sshd-piimg.conf.hbs", &json!({})).unwrap(),
            "mine\n"
        );
        assert_eq!(
            t.origin("common/k3s-config.yaml.hbs"),
            Some(&Origin::Builtin)
        );
        let dests: Vec<_> = t.boot_extras().iter().map(|e| e.dest.as_str()).collect();
        assert_eq!(dests, ["extra/hello.txt", "motd"]);
        let h = t.hashes().unwrap();
        assert_eq!(h["common/sshd-piimg.conf.hbs"], sha256_hex(b"mine\n"));
        assert_eq!(h["boot/extra/hello.txt"], sha256_hex(b"hi"));
        assert_ne!(
            h["common/k3s-config.yaml.hbs"],
            Templates::builtin().hashes().unwrap()["common/sshd-piimg.conf.hbs"]
        );
    }

    #[test]
    fn overlay_file_that_overrides_nothing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("common")).unwrap();
        std::fs::write(dir.path().join("common/sshd.conf.hbs"), "typo").unwrap();
        let err = Templates::with_overlay(dir.path()).unwrap_err().to_string();
        assert!(err.contains("common/sshd.conf.hbs"), "{err}");
        assert!(err.contains("does not override any template"), "{err}");
    }

    #[test]
    fn missing_overlay_dir_is_named() {
        let err = Templates::with_overlay(Path::new("/nonexistent/overlay"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/overlay"), "{err}");
    }

    /// The built-in Trixie user-data, rendered for the reference test plan.
    fn trixie_user_data() -> serde_yaml_ng::Value {
        let card = crate::card::render(
            &crate::card::tests::plan(),
            &crate::card::NodeSecrets::default(),
            &crate::card::NodeHa::default(),
            &crate::card::Os {
                codename: "trixie".into(),
                first_boot: crate::card::FirstBoot::CloudInit,
            },
            &Templates::builtin(),
            b"agent",
            crate::card::RenderOptions { build_time: 1 },
        )
        .unwrap();
        let crate::card::Content::Bytes(b) = &card.files["user-data"] else {
            panic!("user-data is not rendered text")
        };
        let text = String::from_utf8(b.clone()).unwrap();
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        serde_yaml_ng::from_str(&text).unwrap()
    }

    #[test]
    fn trixie_user_data_leaves_accounts_to_the_agent() {
        // cloud-init skips an existing user and never fixes its shell: the user-data
        // must not create or change accounts (the agent's user step does).
        let ud = trixie_user_data();
        for key in [
            "user",
            "users",
            "groups",
            "chpasswd",
            "ssh_authorized_keys",
            "system_info",
        ] {
            assert!(ud.get(key).is_none(), "user-data sets {key}: {ud:?}");
        }
        assert_eq!(ud["ssh_pwauth"], serde_yaml_ng::Value::Bool(false));
        // The agent may rename the default user before cloud-final's fingerprint
        // module runs, which would fail on the old name.
        assert_eq!(ud["no_ssh_fingerprints"], serde_yaml_ng::Value::Bool(true));
        // The wizard is stopped before multi-user.target (bootcmd), and the agent
        // runs from runcmd.
        let bootcmd = serde_yaml_ng::to_string(&ud["bootcmd"]).unwrap();
        assert!(
            bootcmd.contains("systemctl --no-block stop userconfig.service"),
            "{bootcmd}"
        );
        let runcmd = serde_yaml_ng::to_string(&ud["runcmd"]).unwrap();
        assert!(runcmd.contains("piimg-firstboot"), "{runcmd}");
        // Every boot re-arms runcmd until phase 1 has handed off.
        assert_eq!(
            ud["bootcmd"][1],
            serde_yaml_ng::Value::Sequence(
                [
                    "sh",
                    "-c",
                    "test -e /var/lib/piimg/phase1-done || rm -f /var/lib/cloud/instance/sem/config_runcmd /var/lib/cloud/instance/sem/config_scripts_user",
                ]
                .into_iter()
                .map(|a| serde_yaml_ng::Value::String(a.into()))
                .collect()
            )
        );
    }
}
