#!/usr/bin/env bash
# What the shipping tests need (tests/ship_systemd.rs, tests/ship_sidecar.rs) and the
# exposure check of .ci/run: podman and runc (containers; see
# /work/shared/notes/containers-and-systemd.md), mmdebstrap (base images from Debian's own
# packages: no registry is reachable), systemd-analyze, binutils (cargo-deb strips the
# binary), python3-yaml (the compose file of docs/sidecar.md must parse), and cargo-deb
# (the Debian package). Idempotent: apt runs only for what is missing, and cargo-deb is
# compiled only when absent (a few minutes, once). Run as root (scripts/test does).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "ci-setup-ship.sh: must run as root" >&2
    exit 1
fi

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v strip >/dev/null || need+=(binutils)
/usr/bin/python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)

if [ "${#need[@]}" -gt 0 ]; then
    # Installing systemd on a host that runs without it must not try to start anything.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo-deb >/dev/null; then
    cargo install --locked cargo-deb >&2
fi
cargo deb --version
