#!/usr/bin/env bash
# The end-to-end test target: a built card boots under qemu-system-aarch64 and
# provisions itself (k3s is a STAND-IN shipped through the card's airgap path).
# scripts/test runs it unless PIIMG_E2E=0; it needs root and scripts/setup's
# packages. Budget: <= 20 min with a warm cache, <= 45 min cold (2 cores).
# Console logs and the run's files stay in target/e2e/<flavour>/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PIIMG_E2E:-1}" = 0 ]; then
  echo "e2e: skipped (PIIMG_E2E=0)" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "e2e: needs root (mmdebstrap --mode=root, chroot into the arm64 root); run as root or set PIIMG_E2E=0" >&2
  exit 1
fi
exec scripts/e2e "$@"
