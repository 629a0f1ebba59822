#!/usr/bin/env bash
# The project's test command. Run as root on a Debian 12 machine: integration
# tests create network namespaces and run the plugins inside them.
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian packages the tests use. Add new ones here, one per line.
PACKAGES=(
    nftables
    iproute2
    iputils-ping
    netcat-openbsd
    socat
    dnsutils
    knot-dnsutils # kdig: the DNS conformance battery (TCP pipelining, EDNS options)
    iperf3
    containernetworking-plugins # reference plugins in /usr/lib/cni
    busybox-static # the root filesystem of the podman tests' containers
    podman # the runtime of the end-to-end tests (its CNI backend)
    runc # podman's OCI runtime on hosts with hybrid cgroups
    iptables # the reference portmap and firewall plugins program it
    tcpdump # reads nflog: the firewall's denied-packet log
    dnsmasq-base # the upstream resolver netsvc-dnsd forwards to in tests
    util-linux # unshare: a container-private resolv.conf for getent
    procps # pgrep, ps: the DNS daemon tests look for its process
    wireguard-go # netsvc-vpn's userspace backend (this kernel has no WireGuard)
    wireguard-tools # wg: the hand-configured peers the VPN tests talk to
    etcd-server # the cluster store the etcd backend and multi-node tests run against
    etcd-client # etcdctl: inspecting that store by hand
    protobuf-compiler # protoc: etcd-client builds its gRPC protocol with it
    libprotobuf-dev # the protobuf well-known types etcd's protocol imports
    openssl # the throwaway CA and certificates of the etcd TLS tests
    fonts-dejavu-core # the font the benchmark report's charts are drawn with
)

step() { printf '\n==> %s\n' "$*"; }

installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

install_missing_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        return
    fi
    step "installing ${missing[*]}"
    if ((EUID != 0)); then
        echo "missing packages and not root: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

ensure_nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        step "installing cargo-nextest"
        cargo install cargo-nextest --locked
    fi
}

# The reference patterns book's builder, from crates.io (no search index,
# no live server: only what `mdbook build` needs).
MDBOOK_VERSION=0.5.4

ensure_mdbook() {
    if ! mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
        step "installing mdbook $MDBOOK_VERSION"
        cargo install mdbook --locked --no-default-features --version "$MDBOOK_VERSION"
    fi
}

# mdbook only warns about a file an {{#include}} cannot find: any warning fails.
build_book() {
    local log
    log=$(mdbook build docs 2>&1) || { echo "$log"; return 1; }
    echo "$log"
    if grep -qE 'WARN|ERROR' <<<"$log"; then
        echo "the book built with warnings" >&2
        return 1
    fi
}

install_missing_packages
ensure_nextest
ensure_mdbook

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# Integration tests execute the plugin binaries from target/debug.
step "cargo build --bins"
cargo build --workspace --bins

step "cargo nextest run"
cargo nextest run --workspace

step "doc tests"
cargo test --workspace --doc

step "mdbook build docs"
build_book

step "all tests passed"
