#!/usr/bin/env bash
# Prepares a Debian machine (as root) for the SSH integration tests, which start their
# own sshd through tests/support/sshd/. Installs only what the tests can't set up
# themselves: OpenSSH's server and client, useradd/chpasswd, pgrep. Idempotent; it
# skips apt when everything is already there.
#
# The tests create the rest themselves (/run/sshd, keys, configs, the csmtest user and
# its password). This script also creates the user up front, so parallel test
# processes don't all race to run useradd.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "ci-setup-ssh.sh: must run as root" >&2
    exit 1
fi

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
{ [ -x /usr/bin/ssh ] && [ -x /usr/bin/ssh-keygen ] && [ -x /usr/bin/ssh-keyscan ]; } ||
    need+=(openssh-client)
{ [ -x /usr/sbin/useradd ] && [ -x /usr/sbin/chpasswd ]; } || need+=(passwd)
command -v pgrep >/dev/null || need+=(procps)

if [ "${#need[@]}" -gt 0 ]; then
    # The tests run their own sshd on loopback: keep the package from starting the
    # system one on port 22 (policy-rc.d exit 101 = "don't start services").
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

install -d -m 0755 /run/sshd
id csmtest >/dev/null 2>&1 || useradd -m -s /bin/bash csmtest

/usr/sbin/sshd -V 2>&1 | head -n 1
