#!/usr/bin/env bash
# systemd-analyze verify deploy/syncd.service, with ExecStart pointed at this checkout's syncd
# (verify insists that the binary exists) and nothing else changed.
set -euo pipefail
cd "$(dirname "$0")/.."
syncd_bin="$(pwd)/.venv/bin/syncd"
[ -x "$syncd_bin" ] || { echo "verify-unit: $syncd_bin missing (run the install first)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/opt/syncd/bin/syncd|ExecStart=$syncd_bin|" deploy/syncd.service > "$work/syncd.service"
# The unit names /etc/syncd/api_key for LoadCredential=; verify only parses it.
output=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$work/syncd.service" 2>&1) || { echo "$output"; exit 1; }
if [ -n "$output" ]; then
  # Warnings about the machine (no D-Bus in a container) are not about the unit.
  unit_warnings=$(echo "$output" | grep -i "syncd.service" || true)
  if [ -n "$unit_warnings" ]; then echo "$unit_warnings"; exit 1; fi
fi
echo "deploy/syncd.service: ok"
