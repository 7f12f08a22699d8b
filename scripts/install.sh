#!/usr/bin/env bash
# Installs csm-agent on a systemd host without the Debian package: the binary, the service
# users, /etc/csm-agent/ (config 0640 root:csm-agent, token files 0600 root), the hardened
# units, the man pages and the shell completions; then enables csm-agent.service.
# Idempotent: a second run upgrades the binary, units, man pages and completions, and
# keeps the configuration and the tokens. `--uninstall` removes what it installed but
# keeps /etc/csm-agent and the users; `--uninstall --purge` removes those too (never the
# control plane's data, /var/lib/csm-manager).
#
#   scripts/install.sh [--binary FILE] [--prefix DIR] [--now]
#   scripts/install.sh --uninstall [--purge] [--prefix DIR]
#
#   --binary FILE  the csm-agent binary (default: target/release/csm-agent of this checkout)
#   --prefix DIR   where the binary, man pages and completions go (default: /usr/local)
#   --now          also start (or restart) csm-agent.service; do it once the manager URL is
#                  in /etc/csm-agent/agent.toml and the token in /etc/csm-agent/token
#
# The units go to /etc/systemd/system/, with ExecStart pointing at PREFIX/bin/csm-agent.
# Run as root. tests/ship_systemd.rs runs it, twice, and --uninstall, under a real systemd.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

binary="$here/target/release/csm-agent"
prefix=/usr/local
uninstall=0
purge=0
now=0
while [ $# -gt 0 ]; do
    case "$1" in
    --binary) binary=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --now) now=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h | --help) sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

bindir="$prefix/bin"
mandir="$prefix/share/man/man1"
bashdir="$prefix/share/bash-completion/completions"
zshdir="$prefix/share/zsh/site-functions"
fishdir="$prefix/share/fish/vendor_completions.d"
unitdir=/etc/systemd/system
etc=/etc/csm-agent
units=(csm-agent.service csm-manager.service)

# systemctl only where systemd runs (not in a chroot or an image build).
have_systemd() { [ -d /run/systemd/system ]; }

if [ "$uninstall" -eq 1 ]; then
    if have_systemd; then
        for u in "${units[@]}"; do
            systemctl disable --now "$u" >/dev/null 2>&1 || true
        done
    fi
    for u in "${units[@]}"; do rm -f "$unitdir/$u"; done
    have_systemd && systemctl daemon-reload
    rm -f "$bindir/csm-agent" "$mandir"/csm-agent.1 "$mandir"/csm-agent-*.1 \
        "$bashdir/csm-agent" "$zshdir/_csm-agent" "$fishdir/csm-agent.fish"
    if [ "$purge" -eq 1 ]; then
        rm -rf "$etc" /var/lib/csm-agent /var/lib/private/csm-agent /run/csm-agent
        for u in csm-agent csm-manager; do
            if getent passwd "$u" >/dev/null; then userdel "$u"; fi
            if getent group "$u" >/dev/null; then groupdel "$u"; fi
        done
        [ -d /var/lib/csm-manager ] &&
            echo "install.sh: left /var/lib/csm-manager (the control plane's data); remove it by hand" >&2
    else
        echo "install.sh: kept $etc and the users csm-agent, csm-manager (--purge removes them)" >&2
    fi
    echo "install.sh: csm-agent uninstalled" >&2
    exit 0
fi

[ -x "$binary" ] || {
    echo "install.sh: no binary at $binary: cargo build --release --locked, or --binary FILE" >&2
    exit 1
}

# The binary: copied next to its destination, then renamed, so a running agent keeps its
# old file and a failed copy leaves nothing half-written.
install -d -m 0755 "$bindir"
install -m 0755 "$binary" "$bindir/.csm-agent.new"
mv -f "$bindir/.csm-agent.new" "$bindir/csm-agent"
bin="$bindir/csm-agent"

# One dedicated system user per service, as the Debian package's postinst does.
for u in csm-agent csm-manager; do
    getent group "$u" >/dev/null || groupadd --system "$u"
    getent passwd "$u" >/dev/null ||
        useradd --system --gid "$u" --home-dir "/var/lib/$u" --no-create-home \
            --shell /usr/sbin/nologin --comment "$u service" "$u"
done

# The agent's home and state directory, with ~/.ssh for known_hosts and SSH keys.
install -d -m 0700 -o csm-agent -g csm-agent /var/lib/csm-agent /var/lib/csm-agent/.ssh

# The configuration: the agent's to read, nobody else's. Existing files are kept.
install -d -m 0750 -o root -g csm-agent "$etc"
chown root:csm-agent "$etc"
chmod 0750 "$etc"
[ -e "$etc/agent.toml" ] || install -m 0640 "$here/packaging/agent.toml" "$etc/agent.toml"
chown root:csm-agent "$etc/agent.toml"
chmod 0640 "$etc/agent.toml"
[ -e "$etc/manager.env" ] || install -m 0640 -o root -g root "$here/packaging/manager.env" "$etc/manager.env"
# The token files stay root's (0600): systemd hands them to the services as credentials.
for f in token agent-tokens api-keys; do
    [ -e "$etc/$f" ] || install -m 0600 -o root -g root /dev/null "$etc/$f"
    chown root:root "$etc/$f"
    chmod 0600 "$etc/$f"
done

# The units, pointing at this binary.
for u in "${units[@]}"; do
    sed "s#/usr/bin/csm-agent#$bin#g" "$here/systemd/$u" >"$unitdir/.$u.new"
    chmod 0644 "$unitdir/.$u.new"
    mv -f "$unitdir/.$u.new" "$unitdir/$u"
done

# Man pages and completions, generated by the binary itself.
install -d -m 0755 "$mandir" "$bashdir" "$zshdir" "$fishdir"
"$bin" man --dir "$mandir"
chmod 0644 "$mandir"/csm-agent.1 "$mandir"/csm-agent-*.1
"$bin" completions bash >"$bashdir/csm-agent"
"$bin" completions zsh >"$zshdir/_csm-agent"
"$bin" completions fish >"$fishdir/csm-agent.fish"
chmod 0644 "$bashdir/csm-agent" "$zshdir/_csm-agent" "$fishdir/csm-agent.fish"

if have_systemd; then
    systemctl daemon-reload
    systemctl enable csm-agent.service >/dev/null 2>&1
    if [ "$now" -eq 1 ]; then
        systemctl restart csm-agent.service
    fi
    echo "install.sh: csm-agent.service enabled$([ "$now" -eq 1 ] && echo " and started")" >&2
else
    echo "install.sh: systemd is not running here; enable csm-agent.service later" >&2
fi
if [ "$now" -eq 0 ]; then
    echo "install.sh: write the manager URL to $etc/agent.toml and the token to $etc/token," \
        "then: systemctl start csm-agent" >&2
fi
