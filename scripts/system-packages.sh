#!/usr/bin/env bash
# Installs the Debian packages ModelDeck's GUI and test suite need (idempotent; uses sudo when not root).
set -euo pipefail
PKGS=(python3-venv python3-dev libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
      libxcb-cursor0 fonts-dejavu-core wrk prometheus openssh-server openssh-client docker.io debootstrap docker-registry)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
