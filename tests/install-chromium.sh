#!/usr/bin/env bash
# The UI test drives Debian's Chromium (a test tool's own browser download does not work offline).
# Installs it when it is missing; does nothing when it is there.
set -euo pipefail
command -v chromium >/dev/null && exit 0
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq chromium >/dev/null
