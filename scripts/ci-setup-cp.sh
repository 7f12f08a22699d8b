#!/usr/bin/env bash
# What the control-plane tests need: curl, for tests/dev_readme.rs (the README's walk-through
# is curl commands). Idempotent; run as root (scripts/test does).
set -euo pipefail
if command -v curl >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ci-setup-cp: curl is missing and this is not root; install curl" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null
