//! Day-one customisation in the profile: `[locale]`, `[packages]`, `[[files]]` and
//! `[[run_once]]` — their validation (every problem at once, each named) and what
//! reaches the card's node.json through the plan.

use piimg::card::{self, Content, FirstBoot, NodeHa, NodeSecrets, Os, RenderOptions, Templates};
use piimg::plan;
use piimg::profile::secrets::ClusterState;
use piimg::profile::{self, Profile};
use piimg_contract::NodeConfig;
use piimg_contract::customize::{FileOwner, Locale, RunOnce};
use std::path::PathBuf;

mod support;

/// The reference profile with its key file in a generated HOME, not this machine's.
fn reference_text() -> String {
    support::reference::text()
}

/// The reference profile plus `extra`, written into a temp dir (for `source` files).
fn profile_with(extra: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Profile) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path: PathBuf = dir.path().join("lab.toml");
    std::fs::write(&path, format!("{}\n{extra}", reference_text())).unwrap();
    let p = profile::load(&path).unwrap();
    (dir, p)
}

fn errors(p: &Profile) -> Vec<String> {
    profile::validate(p)
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect()
}

const GOOD: &str = r#"
[locale]
timezone = "Europe/Berlin"
locale = "de_DE.UTF-8"
keyboard = "de"

[packages]
install = ["open-iscsi", "nfs-common"]

[[files]]
path = "/etc/motd"
content = "welcome\n"

[[files]]
path = "/home/admin/.config/app.toml"
mode = "0640"
owner = "admin"
source = "app.toml"

[[run_once]]
name = "hello"
script = "echo hello > /var/tmp/hello\n"

[[run_once]]
name = "from-file"
source = "setup.sh"
timeout_secs = 600
"#;

#[test]
fn a_good_customisation_validates_and_reaches_the_card_in_order() {
    let (_dir, p) = profile_with(
        GOOD,
        &[("app.toml", "k = 1\n"), ("setup.sh", "#!/bin/sh\ntrue\n")],
    );
    assert!(errors(&p).is_empty(), "{:#?}", errors(&p));
    let plans = plan::plan_with(&p, &ClusterState::default(), vec![]).unwrap();
    let c = &plans[0].customize;
    assert_eq!(
        c.locale,
        Some(Locale {
            timezone: Some("Europe/Berlin".into()),
            locale: Some("de_DE.UTF-8".into()),
            keyboard: Some("de".into()),
        })
    );
    assert_eq!(c.packages, ["open-iscsi", "nfs-common"]);
    assert_eq!(c.files.len(), 2);
    assert_eq!(
        (
            c.files[0].path.as_str(),
            c.files[0].mode,
            c.files[0].owner.clone()
        ),
        ("/etc/motd", 0o644, None)
    );
    assert_eq!(c.files[1].content, "k = 1\n");
    assert_eq!(c.files[1].mode, 0o640);
    assert_eq!(
        c.files[1].owner,
        Some(FileOwner {
            user: "admin".into(),
            group: None
        })
    );
    assert_eq!(
        c.run_once,
        [
            RunOnce {
                name: "hello".into(),
                script: "echo hello > /var/tmp/hello\n".into(),
                timeout_secs: None,
            },
            RunOnce {
                name: "from-file".into(),
                script: "#!/bin/sh\ntrue\n".into(),
                timeout_secs: Some(600),
            },
        ]
    );
    // Every node gets the same customisation.
    assert!(plans.iter().all(|pl| &pl.customize == c));

    // The card's node.json carries it, and the agent's parser reads it back equal.
    let rendered = card::render(
        &plans[0],
        &NodeSecrets {
            token: "K10abc::server:s3cret".into(),
            ..Default::default()
        },
        &NodeHa::default(),
        &Os {
            codename: "trixie".into(),
            first_boot: FirstBoot::CloudInit,
        },
        &Templates::builtin(),
        b"agent",
        RenderOptions {
            build_time: 1_700_000_000,
        },
    )
    .unwrap();
    let Content::Bytes(json) = &rendered.files[piimg_contract::NODE_CONFIG_FILE] else {
        panic!("node.json is not rendered bytes");
    };
    let cfg = NodeConfig::from_json(std::str::from_utf8(json).unwrap()).unwrap();
    assert_eq!(&cfg.customize, c);
    // Built-in root files carry no owner key (the cards of before read the same).
    let text = String::from_utf8(json.clone()).unwrap();
    assert_eq!(text.matches("\"owner\"").count(), 1, "{text}");
    // The user's files are not mixed into the agent's own files (laid before the user exists).
    assert!(cfg.files.iter().all(|f| f.path != "/etc/motd"));
}

#[test]
fn without_the_sections_the_card_carries_an_empty_customisation() {
    let (_dir, p) = profile_with("", &[]);
    let plans = plan::plan_with(&p, &ClusterState::default(), vec![]).unwrap();
    assert!(plans[0].customize.is_empty());
}

#[test]
fn every_problem_is_reported_at_once_naming_its_field() {
    let bad = r#"
[locale]
timezone = "Europe/Berln"
locale = "en_GB.utf8"
keyboard = "uk"

[packages]
install = ["vim", "Vim", "vim", "nginx=1.22"]

[[files]]
path = "etc/motd"
content = "x"

[[files]]
path = "/boot/firmware/config.txt"
content = "x"

[[files]]
path = "/etc/../shadow"
content = "x"

[[files]]
path = "/etc/a.conf"
mode = "0999"
owner = "Bad User"
content = "x"
source = "a.conf"

[[files]]
path = "/etc/b.conf"

[[files]]
path = "/etc/localtime"
source = "missing.txt"

[[files]]
path = "/var/lib/piimg/state.json"
content = "{}"

[[run_once]]
name = "has space"
script = "true"
timeout_secs = 0

[[run_once]]
name = "twice"
script = "true"
timeout_secs = 86401

[[run_once]]
name = "twice"
script = ""
"#;
    let (_dir, p) = profile_with(bad, &[("a.conf", "x")]);
    let e = errors(&p);
    let expect = [
        "locale.timezone: \"Europe/Berln\" is not a known time zone (tz database name); did you mean \"Europe/Berlin\"?",
        "locale.locale: \"en_GB.utf8\" is not a known locale (glibc's SUPPORTED list); did you mean \"en_GB.UTF-8\"?",
        "locale.keyboard: \"uk\" is not a known keyboard layout (XKB layout code);",
        "packages.install[1]: \"Vim\" is not a Debian package name",
        "packages.install[2]: \"vim\" is already packages.install[0]",
        "packages.install[3]: \"nginx=1.22\" is not a Debian package name",
        "files[0].path: \"etc/motd\" is not an absolute path",
        "files[1].path: \"/boot/firmware/config.txt\" is under /boot/firmware",
        "files[2].path: \"/etc/../shadow\" is not a normalised file path",
        "files[3].mode: \"0999\" is not an octal permission mode",
        "files[3].owner: \"Bad User\" is not a user or group name",
        "files[3].source: give either content or source, not both",
        "files[4].content: missing; give content = \"...\" or source = \"FILE\"",
        "files[5].path: \"/etc/localtime\" is written by the agent from [locale]",
        "files[5].source: cannot read",
        "files[6].path: \"/var/lib/piimg/state.json\" is under /var/lib/piimg",
        "run_once[0].name: \"has space\" is not a script name",
        "run_once[2].name: \"twice\" is already run_once[1]",
        "run_once[2].script: the script is empty",
        "run_once[0].timeout_secs: 0 is not 1..=86400 seconds; leave it out for the default 1800 (30 min)",
        "run_once[1].timeout_secs: 86401 is not 1..=86400 seconds",
    ];
    for want in expect {
        assert!(
            e.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");
    // A plan of an invalid profile refuses with the same list.
    let msg = plan::plan_with(&p, &ClusterState::default(), vec![])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!("the profile has {} error(s)", expect.len())),
        "{msg}"
    );
}

#[test]
fn size_bounds_and_secret_looking_modes_are_reported() {
    let big = "x".repeat(300 * 1024);
    let (_dir, p) = profile_with(
        r#"
[[files]]
path = "/etc/big"
source = "big"

[[files]]
path = "/etc/secret.conf"
mode = "0600"
content = "password=x"
"#,
        &[("big", &big)],
    );
    let f = profile::validate(&p);
    let e: Vec<String> = f.errors.iter().map(|e| e.to_string()).collect();
    assert!(
        e.iter()
            .any(|m| m.starts_with("files[0].source: cannot read")
                && m.contains("bytes, more than the 262144")),
        "{e:#?}"
    );
    let w: Vec<String> = f.warnings.iter().map(|e| e.to_string()).collect();
    assert!(
        w.iter()
            .any(|m| m.starts_with("files[1].mode: /etc/secret.conf is not world-readable")),
        "{w:#?}"
    );
}

#[test]
fn an_unknown_key_in_the_new_sections_names_the_nearest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.toml");
    std::fs::write(
        &path,
        format!("{}\n[locale]\ntimezon = \"UTC\"\n", reference_text()),
    )
    .unwrap();
    let e = profile::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("unknown key `timezon`") && e.contains("timezone"),
        "{e}"
    );
}
