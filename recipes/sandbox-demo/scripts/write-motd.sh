#!/usr/bin/env bash
# Writes a message of the day into the bake's working directory (recipe sandbox-demo).
set -euo pipefail

etc_dir="{{ workdir }}/etc"
mkdir -p "${etc_dir}"

# Quoted here-document: the rendered values are written as they are, without shell expansion.
cat > "${etc_dir}/motd.tmp" <<'MOTD'
{{ params.greeting }}
This is {{ image.name }} {{ image.version }} ({{ image.platform }}/{{ image.architecture }}), baked by bakery for target {{ target.name }}.
MOTD
mv -f "${etc_dir}/motd.tmp" "${etc_dir}/motd"
chmod 0644 "${etc_dir}/motd"

cat "${etc_dir}/motd"
