#!/usr/bin/env bash
# Creates bin/hello in the bake's working directory and runs it once (recipe sandbox-demo).
set -euo pipefail

bin_dir="{{ workdir }}/bin"
mkdir -p "${bin_dir}"

# Quoted here-document: the script's variables are expanded when it runs, not now.
cat > "${bin_dir}/hello.tmp" <<'HELLO'
#!/usr/bin/env bash
# hello: prints the message of the day and the image this working directory was baked for.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cat "${root}/etc/motd"
grep -E '^image_(name|version)=' "${root}/app/app.conf"
HELLO
chmod 0755 "${bin_dir}/hello.tmp"
mv -f "${bin_dir}/hello.tmp" "${bin_dir}/hello"

"${bin_dir}/hello"
