#!/usr/bin/env bash
# Prepares a Debian machine (as root) for tests/store_templates.rs, which run the templates
# in examples/templates/ against loopback stand-ins of the stores' APIs. Installs what the
# templates call at test time: curl (>= 7.75, for --aws-sigv4), jq, coreutils' base64,
# pass with GnuPG (the test makes a throwaway key), and openssl (the test's CA and
# certificates for CyberArk's client-certificate authentication). Idempotent; it skips apt
# when everything is already there.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "ci-setup-stores.sh: must run as root" >&2
    exit 1
fi

need=()
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v base64 >/dev/null || need+=(coreutils)
command -v pass >/dev/null || need+=(pass)
{ command -v gpg >/dev/null && command -v gpgconf >/dev/null && command -v gpg-agent >/dev/null; } ||
    need+=(gnupg)
command -v openssl >/dev/null || need+=(openssl)
# curl's --aws-sigv4 needs TLS-less HTTP to loopback only; certificates for https hosts
# need ca-certificates, which the templates use in production.
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)

if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

curl --version | head -n 1
