#!/usr/bin/env bash
# Removes per-instance state before capture, so that instances launched from the image start fresh (recipe linux-cleanup).
set -euo pipefail

# cloud-init: forget this instance (state, seed data, logs); the next boot is a first boot again.
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init clean --logs --seed
  echo "cloud-init state, seed and logs removed"
fi

# SSH host keys: every instance generates its own on first boot (cloud-init, or sshd-keygen).
rm -f /etc/ssh/ssh_host_*
echo "SSH host keys removed"

# Authorized keys of the build key pair: cloud-init installs the launch key pair's key on each instance.
for home in /root /home/*; do
  if [[ -f "${home}/.ssh/authorized_keys" ]]; then
    rm -f "${home}/.ssh/authorized_keys"
    echo "removed ${home}/.ssh/authorized_keys"
  fi
done

# machine-id: an empty file makes systemd generate a new id on first boot.
if [[ -e /etc/machine-id ]]; then
  truncate -s 0 /etc/machine-id
fi
if [[ -e /var/lib/dbus/machine-id && ! -L /var/lib/dbus/machine-id ]]; then
  rm -f /var/lib/dbus/machine-id
  ln -s /etc/machine-id /var/lib/dbus/machine-id
fi
echo "machine-id cleared"

# Shell history.
unset HISTFILE
rm -f /root/.bash_history /home/*/.bash_history
echo "shell history removed"

# Temporary files. Kept: the bake's own working directory (this script runs from it) and the
# private /tmp directories of running systemd services.
workdir="$(readlink -f "{{ workdir }}")"
for tmp in /tmp /var/tmp; do
  if [[ "${workdir}" == "${tmp}" ]]; then
    echo "skipping ${tmp}: it is the bake's working directory"
    continue
  fi
  find "${tmp}" -mindepth 1 -maxdepth 1 ! -name 'systemd-private-*' -print0 |
    while IFS= read -r -d '' entry; do
      case "${workdir}/" in
        "${entry}"/*) continue ;;
      esac
      rm -rf -- "${entry}"
    done
done
echo "temporary files removed"

# Package manager caches.
if command -v dnf >/dev/null 2>&1; then
  dnf clean all
  rm -rf /var/cache/dnf/*
elif command -v yum >/dev/null 2>&1; then
  yum clean all
  rm -rf /var/cache/yum/*
fi
if command -v apt-get >/dev/null 2>&1; then
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi
echo "package caches removed"

sync
