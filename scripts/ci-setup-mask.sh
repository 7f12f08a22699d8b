#!/usr/bin/env bash
# Prepares a Debian machine (as root) for tests/mask_bash.rs, which checks masking against
# what real tools print: bash, coreutils' base64 and basenc, sed, tr, and openssl's base64.
# Only openssl may be missing from a minimal Debian 12. Idempotent; it skips apt when
# everything is already there.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "ci-setup-mask.sh: must run as root" >&2
    exit 1
fi

need=()
command -v openssl >/dev/null || need+=(openssl)
{ command -v base64 >/dev/null && command -v basenc >/dev/null && command -v tr >/dev/null; } ||
    need+=(coreutils)
command -v sed >/dev/null || need+=(sed)

if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

openssl version
