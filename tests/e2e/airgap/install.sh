#!/bin/sh
# STAND-IN for k3s's install.sh (piimg e2e test). Does what the real script does in
# the airgap case the agent uses (INSTALL_K3S_SKIP_DOWNLOAD=true, binary already at
# /usr/local/bin/k3s): kubectl/crictl/ctr links, killall/uninstall scripts, the
# systemd unit and its env file, `systemctl enable`, and a start unless
# INSTALL_K3S_SKIP_START=true. It records what it was given in
# /var/log/k3s-install-standin.log so the test can check how it was run.
set -eu
BIN_DIR=/usr/local/bin
LOG=/var/log/k3s-install-standin.log
{
  echo "installer args: $*"
  env | grep -E '^(INSTALL_K3S|K3S_|CONTAINERD_)' | sort || true
} >>"$LOG"

[ "${INSTALL_K3S_SKIP_DOWNLOAD:-}" = true ] || { echo "[ERROR] stand-in install.sh cannot download; set INSTALL_K3S_SKIP_DOWNLOAD=true" >&2; exit 1; }
[ -x "$BIN_DIR/k3s" ] || { echo "[ERROR] $BIN_DIR/k3s missing (airgap install needs the binary in place)" >&2; exit 1; }

set -- ${INSTALL_K3S_EXEC:-server}
case "$1" in
  server) name=k3s; type=notify ;;
  agent) name=k3s-agent; type=exec ;;
  *) echo "[ERROR] stand-in install.sh: INSTALL_K3S_EXEC must start with server or agent" >&2; exit 1 ;;
esac
exec_args="$*"

for l in kubectl crictl ctr; do [ -e "$BIN_DIR/$l" ] || ln -sf k3s "$BIN_DIR/$l"; done
cat >"$BIN_DIR/k3s-killall.sh" <<KILL
#!/bin/sh
systemctl stop $name 2>/dev/null || true
KILL
cat >"$BIN_DIR/$name-uninstall.sh" <<UNINST
#!/bin/sh
systemctl disable --now $name 2>/dev/null || true
rm -f /etc/systemd/system/$name.service /etc/systemd/system/$name.service.env $BIN_DIR/k3s $BIN_DIR/kubectl $BIN_DIR/crictl $BIN_DIR/ctr $BIN_DIR/k3s-killall.sh $BIN_DIR/$name-uninstall.sh
UNINST
chmod 755 "$BIN_DIR/k3s-killall.sh" "$BIN_DIR/$name-uninstall.sh"

umask 077
: >"/etc/systemd/system/$name.service.env"
chmod 600 "/etc/systemd/system/$name.service.env"
umask 022
# The stand-in runs as Type=exec (a shell cannot hand sd_notify readiness from its
# main process); the real unit is Type=notify for servers.
cat >"/etc/systemd/system/$name.service" <<UNIT
[Unit]
Description=Lightweight Kubernetes (STAND-IN for the piimg e2e test)
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=exec
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-/etc/systemd/system/$name.service.env
KillMode=process
Delegate=yes
Restart=always
RestartSec=5s
ExecStart=$BIN_DIR/k3s $exec_args
UNIT
echo "[INFO]  stand-in: unit /etc/systemd/system/$name.service (real: Type=$type)"

systemctl daemon-reload
systemctl enable "$name.service"
if [ "${INSTALL_K3S_SKIP_START:-}" != true ]; then
  systemctl restart "$name.service"
fi
echo "[INFO]  stand-in k3s installed as $name"
