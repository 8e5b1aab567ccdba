# Checks of the day-one customisation (tests/e2e/profile.toml's [locale], [[files]]
# and [[run_once]] block), sourced by scripts/e2e; uses its g/check/soft_check.
# Packages are not set: the guest has no network to reach a mirror (a host test in
# firstboot/tests/customize.rs covers apt with a stand-in apt-get).

CUSTOM_TZ=Europe/Berlin
CUSTOM_LOCALE=de_DE.UTF-8
CUSTOM_KEYBOARD=de
CUSTOM_FILE=/etc/piimg-e2e/admin.conf
CUSTOM_FILE_SHA=$(printf 'owned by the admin\n' | sha256sum | cut -d' ' -f1)
CUSTOM_RUN_LOG=/var/lib/piimg-e2e/run-once.log

# Before the first boot, on this run's card: the Bookworm stand-in root lacks the
# `locales` package Raspberry Pi OS ships (pi-gen stage0/01-locale/00-packages). Its
# files (Architecture: all; the version of the root's libc-bin, fetched with apt once
# into the cache) are unpacked onto the card copy's root, so the agent's locale step
# generates the locale as on a real image. The cached roots are not touched.
customize_prepare_card() { # customize_prepare_card CARD
  [ "$release" = bookworm ] || return 0
  local card="$1" debs="${PIIMG_E2E_CACHE:-/var/cache/piimg-e2e}/debs" start mnt ver deb rc=0
  start=$(partx -g -o START -n 2 "$card") || fail "partx cannot read $card's root partition"
  mnt=$(mktemp -d)
  mount -o loop,offset=$((start * 512)) "$card" "$mnt" || { rmdir "$mnt"; fail "cannot loop-mount $card's root partition"; }
  ver=$(awk '/^Package: libc-bin$/{f=1} f&&/^Version:/{print $2; exit}' "$mnt/var/lib/dpkg/status")
  deb="$debs/locales_${ver}_all.deb"
  if [ ! -s "$deb" ]; then
    mkdir -p "$debs"
    (cd "$debs" && apt-get download -q "locales=$ver" >/dev/null 2>&1) || rc=$?
  fi
  if [ "$rc" = 0 ] && [ -s "$deb" ]; then
    dpkg-deb -x "$deb" "$mnt" || rc=$?
  else
    rc=1
  fi
  umount "$mnt"; rmdir "$mnt"
  if [ "$rc" = 0 ]; then
    ok "unpacked locales $ver (as Raspberry Pi OS ships it) onto this card's Bookworm root"
  else
    echo "  info: could not fetch locales=$ver with apt: the locale will not be generated on this run" >&2
  fi
}

# After provisioning, over SSH.
customize_checks_ssh() {
  check "/etc/localtime links to $CUSTOM_TZ's zone file" \
    test "$(g readlink /etc/localtime)" = "/usr/share/zoneinfo/$CUSTOM_TZ"
  local zone; zone="$(g date +%Z)"
  check "date +%Z is CET or CEST ($zone)" test "$zone" = CET -o "$zone" = CEST
  if [ "$release" = bookworm ]; then
    check "/etc/timezone says $CUSTOM_TZ (Bookworm keeps the file)" test "$(g cat /etc/timezone)" = "$CUSTOM_TZ"
  fi
  check "/etc/default/locale sets LANG=$CUSTOM_LOCALE" grep -qx "LANG=$CUSTOM_LOCALE" <<<"$(g cat /etc/default/locale)"
  check "/etc/locale.gen enables '$CUSTOM_LOCALE UTF-8'" grep -qx "$CUSTOM_LOCALE UTF-8" <<<"$(g cat /etc/locale.gen)"
  if g test -x /usr/sbin/locale-gen; then
    check "the locale was generated (locale -a lists de_DE.utf8)" grep -qix 'de_DE.utf8' <<<"$(g locale -a)"
    check "programs can use it (LC_ALL=$CUSTOM_LOCALE locale charmap says UTF-8)" \
      test "$(g "LC_ALL=$CUSTOM_LOCALE locale charmap 2>/dev/null")" = UTF-8
  else
    # No `locales` on this root (customize_prepare_card could not fetch it): the
    # agent must say so instead of failing.
    echo "  info: no locale-gen on this root: generation not checked" >&2
    check "the agent's locale step says the locale was not generated (no locale-gen)" \
      python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if any(r["name"]=="locale" and "not generated" in r["message"] for r in s["records"]) else 1)' "$(g sudo cat /var/lib/piimg/state.json)"
  fi
  check "/etc/default/keyboard sets XKBLAYOUT=\"$CUSTOM_KEYBOARD\"" grep -qx "XKBLAYOUT=\"$CUSTOM_KEYBOARD\"" <<<"$(g cat /etc/default/keyboard)"
  check "$CUSTOM_FILE is 640 $ADMIN:$ADMIN (owner resolved on the node)" \
    test "$(g "sudo stat -c '%a %U:%G' $CUSTOM_FILE")" = "640 $ADMIN:$ADMIN"
  check "$CUSTOM_FILE has the profile's content" \
    test "$(g "sudo sha256sum $CUSTOM_FILE" | cut -d' ' -f1)" = "$CUSTOM_FILE_SHA"
  local runs; runs="$(g "sudo cat $CUSTOM_RUN_LOG")"
  check "the run-once script ran exactly once ($(wc -l <<<"$runs") line(s) in $CUSTOM_RUN_LOG)" test "$(grep -c '^ran ' <<<"$runs")" = 1
  check "the run-once script ran as root before k3s was installed" grep -qx 'ran uid=0 k3s=absent' <<<"$runs"
  check "the agent's state records the script as done" \
    python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]).get("run_once_done")==["e2e-hello"] else 1)' "$(g sudo cat /var/lib/piimg/state.json)"
}

# On the card's status (read with mtools after power-off).
customize_checks_card() {
  check "card status lists run-once:e2e-hello with exit 0 and its output" \
    python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if any(r["name"]=="run-once:e2e-hello" and r["result"]=="ok" and r["message"]=="exit 0: hello from e2e" for r in s["steps"]) else 1)' "$1"
  check "card status lists the locale, user-files and run-once steps as ok" \
    python3 -c 'import json,sys; s=json.loads(sys.argv[1]); ok={r["name"] for r in s["steps"] if r["result"]=="ok"}; sys.exit(0 if {"locale","user-files","packages","run-once"} <= ok else 1)' "$1"
}

# After the extra reboot: nothing ran again.
customize_checks_reboot() {
  soft_check "the run-once script did not run again on the re-boot" \
    test "$(g "sudo grep -c '^ran ' $CUSTOM_RUN_LOG")" = 1
  soft_check "/etc/localtime still links to $CUSTOM_TZ" \
    test "$(g readlink /etc/localtime)" = "/usr/share/zoneinfo/$CUSTOM_TZ"
}
