#!/usr/bin/env bash
# Writes a message of the day into the bake's working directory (recipe sandbox-demo).
set -euo pipefail

etc_dir="{{ workdir }}/etc"
mkdir -p "${etc_dir}"

# The greeting is quoted by the `sh` filter: written as it is, whatever it holds.
printf '%s\n' {{ params.greeting | sh }} \
  {{ "This is " ~ image.name ~ " " ~ image.version ~ " (" ~ image.platform ~ "/" ~ image.architecture ~ "), baked by bakery for target " ~ target.name ~ "." | sh }} \
  >"${etc_dir}/motd.tmp"
mv -f "${etc_dir}/motd.tmp" "${etc_dir}/motd"
chmod 0644 "${etc_dir}/motd"

cat "${etc_dir}/motd"
