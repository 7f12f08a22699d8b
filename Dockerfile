# csm-agent as a Docker sidecar: a runtime image around a release binary built on the host.
# No Rust image is needed (none can be pulled where this is tested); Debian 12 builds the
# binary and this image runs it, with the same glibc. docs/sidecar.md has the details.
#
#   cargo build --release --locked --bin csm-agent
#   docker build -t csm-agent .          # or: podman build --format docker -t csm-agent .
#
# The image runs as uid 10001 and works with a read-only root filesystem, with commandPath
# on a tmpfs at /tmp. It is configured by CSM_* environment variables alone, and its
# HEALTHCHECK asks the agent's /healthz. tests/ship_sidecar.rs builds it with podman and runs
# it read-only, as non-root, against a real manager.
FROM debian:bookworm-slim

# What scripts use. Installed only when missing, so that a base image that has them already
# (tests/ship_sidecar.rs builds one with mmdebstrap) needs no network.
RUN set -eu; missing=""; \
    for p in bash coreutils curl jq openssh-client ca-certificates; do \
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi

# A non-root user. Its ~/.ssh is where a mounted known_hosts goes; /var/lib/csm-agent keeps
# the agent id (mount a volume there to keep it across container replacements).
RUN groupadd --system --gid 10001 csm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/csm --create-home \
        --shell /usr/sbin/nologin csm \
    && install -d -m 0700 -o 10001 -g 10001 /home/csm/.ssh /var/lib/csm-agent

# The binary; another path with --build-arg BINARY=...
ARG BINARY=target/release/csm-agent
COPY ${BINARY} /usr/local/bin/csm-agent

# Configuration is the environment's: CSM_MANAGER and CSM_TOKEN (or CSM_TOKEN_FILE) are
# required; every CSM_* variable of docs/operations.md works. These are the defaults.
ENV CSM_STATE_DIR=/var/lib/csm-agent \
    CSM_METRICS_LISTEN=127.0.0.1:9464 \
    CSM_LOG=info \
    CSM_LOG_FORMAT=json \
    CSM_POLICY_COMMAND_PATH_PREFIXES=/tmp
VOLUME ["/var/lib/csm-agent"]
USER 10001:10001
WORKDIR /home/csm

# SIGTERM drains: running tasks finish and their results are delivered, then exit 0. Give
# `docker stop -t` (compose: stop_grace_period) more than policy.max_timeout_secs + 30 s.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD curl -fsS "http://${CSM_METRICS_LISTEN}/healthz" >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/csm-agent"]
CMD ["run"]
