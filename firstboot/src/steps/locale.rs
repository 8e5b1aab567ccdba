//! Step `locale`: time zone, locale and keyboard layout, set the way Raspberry Pi
//! OS's raspi-config (`do_change_timezone`, `do_change_locale`,
//! `do_configure_keyboard`) and Imager's customisation (which calls it) set them,
//! by writing the files those read, so the same code works on Bookworm and Trixie:
//!
//! - time zone: `/etc/localtime` → `/usr/share/zoneinfo/<tz>`, and `/etc/timezone`
//!   where the release still has it (Bookworm; Trixie's tzdata no longer ships it);
//! - locale: its line from `/usr/share/i18n/SUPPORTED` enabled in `/etc/locale.gen`,
//!   `LANG=` in `/etc/default/locale`, `locale-gen` run (live system);
//! - keyboard: `XKBLAYOUT=` in `/etc/default/keyboard` and console-setup's cached
//!   keymaps removed, so `keyboard-setup.service` builds the new one on the next boot.

use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use crate::runner::Cmd;
use piimg_contract::customize::Locale;
use std::time::Duration;

/// The time zone database on the node.
pub const ZONEINFO: &str = "/usr/share/zoneinfo";
/// glibc's list of locales the node can generate.
pub const SUPPORTED: &str = "/usr/share/i18n/SUPPORTED";
/// The locales `locale-gen` generates.
pub const LOCALE_GEN: &str = "/etc/locale.gen";
/// The system locale (`update-locale`'s file).
pub const DEFAULT_LOCALE: &str = "/etc/default/locale";
/// The keyboard configuration (keyboard-configuration's file).
pub const DEFAULT_KEYBOARD: &str = "/etc/default/keyboard";
/// The program that generates the enabled locales.
pub const LOCALE_GEN_BIN: &str = "/usr/sbin/locale-gen";
/// Longest `locale-gen` may run: one locale takes seconds to a minute on a Pi; a
/// bound so a stuck run (a card whose writes crawl, a wedged localedef) fails the
/// step, which the next run retries, instead of holding up the node.
pub const LOCALE_GEN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Applies `locale` (nothing when the card has no `[locale]`).
pub fn apply(locale: Option<&Locale>, fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    let Some(l) = locale else {
        return Ok("no [locale] on the card: the image's settings stay".into());
    };
    let mut done = Vec::new();
    if let Some(tz) = &l.timezone {
        done.push(timezone(tz, fs)?);
    }
    if let Some(name) = &l.locale {
        done.push(system_locale(name, fs, exec)?);
    }
    if let Some(kb) = &l.keyboard {
        done.push(keyboard(kb, fs)?);
    }
    Ok(done.join("; "))
}

/// A name that is safe inside a path or a shell-style assignment.
fn plain(what: &str, v: &str) -> Result<(), Error> {
    let ok = !v.is_empty()
        && !v.starts_with(['/', '.', '-'])
        && !v.split('/').any(|c| c.is_empty() || c == "..")
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "node.json: customize.locale.{what} {v:?} is not a plain name"
        )))
    }
}

fn timezone(tz: &str, fs: &NodeFs) -> Result<String, Error> {
    plain("timezone", tz)?;
    let zone = format!("{ZONEINFO}/{tz}");
    if !fs.path(&zone).is_file() {
        return Err(Error::failed(format!(
            "[locale] timezone {tz}: {zone} does not exist on this node (is tzdata installed?)"
        )));
    }
    fs.link(&zone, "/etc/localtime")?;
    let mut msg = format!("time zone {tz} (/etc/localtime -> {zone}");
    if fs.exists("/etc/timezone") {
        fs.put_like("/etc/timezone", format!("{tz}\n").as_bytes(), 0o644)?;
        msg.push_str(", /etc/timezone");
    }
    msg.push(')');
    Ok(msg)
}

/// `name`'s line in SUPPORTED (`en_GB.UTF-8 UTF-8`); without the file (a root with
/// no `locales` package) the UTF-8 line is derived from the name.
fn supported_line(name: &str, fs: &NodeFs) -> Result<String, Error> {
    match fs.read(SUPPORTED)? {
        Some(list) => list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .ok_or_else(|| {
                Error::failed(format!(
                    "[locale] locale {name}: not in this node's {SUPPORTED}"
                ))
            }),
        None if name.ends_with(".UTF-8") => Ok(format!("{name} UTF-8")),
        None => Err(Error::failed(format!(
            "[locale] locale {name}: {SUPPORTED} is missing (package locales) and only .UTF-8 names can be derived"
        ))),
    }
}

/// `locale.gen` with `line` enabled (uncommented or appended), everything else kept.
pub fn enable_in_locale_gen(text: &str, line: &str) -> String {
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            let bare = l.trim_start_matches('#').trim();
            if bare.split_whitespace().collect::<Vec<_>>().join(" ") == line {
                found = true;
                line.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(line.to_string());
    }
    out.join("\n") + "\n"
}

/// `text` (a `KEY=value` file) with `key` set to `value`, other lines kept.
pub fn set_var(text: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key}=");
    let mut out: Vec<String> = Vec::new();
    let mut placed = false;
    for l in text.lines() {
        if l.trim_start().starts_with(&prefix) {
            if !placed {
                out.push(format!("{key}={value}"));
                placed = true;
            }
        } else {
            out.push(l.to_string());
        }
    }
    if !placed {
        out.push(format!("{key}={value}"));
    }
    out.join("\n") + "\n"
}

fn system_locale(name: &str, fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    plain("locale", name)?;
    let line = supported_line(name, fs)?;
    let enabled = fs.read(LOCALE_GEN)?.unwrap_or_default();
    fs.put_like(
        LOCALE_GEN,
        enable_in_locale_gen(&enabled, &line).as_bytes(),
        0o644,
    )?;
    let current = fs.read(DEFAULT_LOCALE)?.unwrap_or_default();
    fs.put_like(
        DEFAULT_LOCALE,
        set_var(&current, "LANG", name).as_bytes(),
        0o644,
    )?;
    let generated = if !fs.exists(LOCALE_GEN_BIN) && !fs.dry() {
        format!("not generated: {LOCALE_GEN_BIN} is missing (package locales)")
    } else if exec.run_ok_live(&Cmd::new(LOCALE_GEN_BIN, &[]).timeout(LOCALE_GEN_TIMEOUT))? {
        "generated".to_string()
    } else {
        "locale-gen left for the live system".to_string()
    };
    Ok(format!(
        "locale {name} ({LOCALE_GEN}, LANG in {DEFAULT_LOCALE}; {generated})"
    ))
}

/// pi-gen's /etc/default/keyboard (stage1 keyboard-configuration debconf: pc105,
/// no variant or options) with `layout`.
fn default_keyboard(layout: &str) -> String {
    format!(
        "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"{layout}\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\n\nBACKSPACE=\"guess\"\n"
    )
}

fn keyboard(layout: &str, fs: &NodeFs) -> Result<String, Error> {
    plain("keyboard", layout)?;
    if layout.contains('/') {
        return Err(Error::failed(format!(
            "node.json: customize.locale.keyboard {layout:?} is not an XKB layout code"
        )));
    }
    let text = match fs.read(DEFAULT_KEYBOARD)? {
        // A variant belongs to the old layout: reset it as raspi-config's GUI path does.
        Some(t) => set_var(
            &set_var(&t, "XKBLAYOUT", &format!("\"{layout}\"")),
            "XKBVARIANT",
            "\"\"",
        ),
        None => default_keyboard(layout),
    };
    fs.put_like(DEFAULT_KEYBOARD, text.as_bytes(), 0o644)?;
    let mut removed = 0;
    for name in fs.files_in("/etc/console-setup") {
        if name.starts_with("cached_") && fs.rm(&format!("/etc/console-setup/{name}"))? {
            removed += 1;
        }
    }
    Ok(format!(
        "keyboard {layout} ({DEFAULT_KEYBOARD}; {removed} cached console keymap(s) removed, the console picks it up on the next boot)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_gen_lines_are_enabled_once_and_others_kept() {
        let enabled = "# en_GB.UTF-8 UTF-8\n# de_DE.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n";
        let out = enable_in_locale_gen(enabled, "de_DE.UTF-8 UTF-8");
        assert_eq!(
            out,
            "# en_GB.UTF-8 UTF-8\nde_DE.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n"
        );
        assert_eq!(enable_in_locale_gen(&out, "de_DE.UTF-8 UTF-8"), out);
        assert_eq!(enable_in_locale_gen("", "C.UTF-8 UTF-8"), "C.UTF-8 UTF-8\n");
    }

    #[test]
    fn variables_are_replaced_in_place_or_appended() {
        assert_eq!(
            set_var("LANG=en_GB.UTF-8\n", "LANG", "de_DE.UTF-8"),
            "LANG=de_DE.UTF-8\n"
        );
        assert_eq!(set_var("# c\n", "LANG", "C.UTF-8"), "# c\nLANG=C.UTF-8\n");
        assert_eq!(
            set_var(
                "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"gb\"\n",
                "XKBLAYOUT",
                "\"de\""
            ),
            "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"de\"\n"
        );
    }
}
