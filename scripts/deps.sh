#!/usr/bin/env bash
# Installs the Debian packages Granary needs when their commands are missing.
# Usage: scripts/deps.sh [package ...]   (default: redis-server)
# Runs `apt-get update` at most once, and only when something is missing.
set -euo pipefail
pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && pkgs=(redis-server)
declare -A cmd=([redis-server]=redis-server [redis-tools]=redis-cli
  [protobuf-compiler]=protoc [nutcracker]=nutcracker [redis-sentinel]=redis-sentinel [chromium]=chromium)
missing=()
for p in "${pkgs[@]}"; do
  c=${cmd[$p]:-$p}
  command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
