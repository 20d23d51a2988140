#!/usr/bin/env bash
# Install what building and testing Ferry needs on a fresh Debian machine:
# Debian packages (only those missing), and a check that Rust and Go are usable.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[install-deps] %s\n' "$*" >&2; }

# Build deps of git2/libgit2 + what the tests run (listed in scripts/test-deps.txt).
pkgs=(git pkg-config libssl-dev gcc make)
if [ -f scripts/test-deps.txt ]; then
  while read -r p; do [ -n "$p" ] && [ "${p#\#}" = "$p" ] && pkgs+=("$p"); done < scripts/test-deps.txt
fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  # Installing openssh-server must not start a system sshd listening on all
  # interfaces; the tests run their own on 127.0.0.1.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: install Rust >= 1.85 with rustup (Debian's cargo is too old for edition 2024)"
  exit 1
fi
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  log "go not found; installing Debian's golang-go (GOTOOLCHAIN=auto then fetches the Go the build needs from the Go module proxy)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-go >/dev/null
fi
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

# s3s-fs: the S3-compatible server (with SigV4 checks) that tests/mover_s3.rs runs
# against. Built once from crates.io into a cache outside the repo (a few minutes).
S3S_VERSION=0.14.1
S3S_ROOT="${FERRY_S3S_ROOT:-$HOME/.cache/ferry/s3s-fs}"
if ! "$S3S_ROOT/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_VERSION"; then
  log "cargo install s3s-fs@$S3S_VERSION into $S3S_ROOT (once; takes a few minutes)"
  cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$S3S_ROOT" >&2
fi
