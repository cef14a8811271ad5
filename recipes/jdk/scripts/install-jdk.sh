#!/usr/bin/env bash
# Installs Eclipse Temurin $JDK_VERSION from the tarball fetched by the download step into $JDK_INSTALL_DIR
# and sets JAVA_HOME and PATH machine-wide (recipe jdk).
set -euo pipefail

version="${JDK_VERSION:?JDK_VERSION is not set}"
install_dir="${JDK_INSTALL_DIR:?JDK_INSTALL_DIR is not set}"
install_dir="${install_dir%/}"
archive="{{ workdir }}/temurin-jdk.tar.gz"

# Temurin's release file names the exact build: IMPLEMENTOR_VERSION="Temurin-21.0.5+11".
if grep -Fqs "IMPLEMENTOR_VERSION=\"Temurin-${version}\"" "${install_dir}/release"; then
  echo "Temurin ${version} is already installed in ${install_dir}"
else
  [[ -f "${archive}" ]] || { echo "${archive} not found: the download step did not run" >&2; exit 1; }
  parent="$(dirname "${install_dir}")"
  mkdir -p "${parent}"
  # Unpack next to the target (same file system), then swap it in; leftovers of an interrupted run go first.
  rm -rf "${parent}"/.jdk-staging.*
  staging="$(mktemp -d "${parent}/.jdk-staging.XXXXXX")"
  # The archive holds a single directory, e.g. jdk-21.0.5+11.
  tar -xzf "${archive}" -C "${staging}" --strip-components=1 --no-same-owner
  rm -rf "${install_dir}"
  mv "${staging}" "${install_dir}"
  chmod 0755 "${install_dir}"
  echo "Temurin ${version} installed in ${install_dir}"
fi

"${install_dir}/bin/java" --version

# Login shells.
cat > /etc/profile.d/temurin-jdk.sh <<PROFILE
# Eclipse Temurin ${version}, written by bakery (recipe jdk).
export JAVA_HOME="${install_dir}"
case ":\${PATH}:" in
  *":\${JAVA_HOME}/bin:"*) ;;
  *) export PATH="\${JAVA_HOME}/bin:\${PATH}" ;;
esac
PROFILE
chmod 0644 /etc/profile.d/temurin-jdk.sh

# PAM sessions and systemd units that read /etc/environment (EnvironmentFile=).
touch /etc/environment
sed -i '/^JAVA_HOME=/d' /etc/environment
printf 'JAVA_HOME=%s\n' "${install_dir}" >> /etc/environment

# Non-login shells and services with the default PATH: /usr/local/bin comes before /usr/bin.
for tool in "${install_dir}"/bin/*; do
  ln -sfn "${tool}" "/usr/local/bin/$(basename "${tool}")"
done

echo "JAVA_HOME=${install_dir}"
