#!/usr/bin/env bash
# Installs git from the distribution's repositories: dnf (Amazon Linux 2023, Fedora, RHEL), apt (Debian, Ubuntu) or yum (recipe git).
set -euo pipefail

if command -v git >/dev/null 2>&1; then
  echo "git is already installed: $(git --version)"
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y git
elif command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y git
elif command -v yum >/dev/null 2>&1; then
  yum install -y git
else
  echo "no supported package manager found (dnf, apt-get or yum)" >&2
  exit 1
fi

git --version
