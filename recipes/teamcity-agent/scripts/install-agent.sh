#!/usr/bin/env bash
# Creates the agent account and unpacks the TeamCity build agent fetched from the server into $AGENT_DIR (recipe teamcity-agent).
set -euo pipefail

agent_dir="${AGENT_DIR:?AGENT_DIR is not set}"
agent_dir="${agent_dir%/}"
agent_user="${AGENT_USER:?AGENT_USER is not set}"
work_dir="${AGENT_WORK_DIR:-}"
zip_sha256="$(printf '%s' "${AGENT_ZIP_SHA256:?AGENT_ZIP_SHA256 is not set}" | tr '[:upper:]' '[:lower:]')"
archive="{{ workdir }}/buildAgentFull.zip"
# Records which server build the agent home was unpacked from.
marker="${agent_dir}/.bakery-agent-zip.sha256"

if ! command -v unzip >/dev/null 2>&1; then
  if command -v dnf >/dev/null 2>&1; then
    dnf install -y unzip
  elif command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y unzip || {
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y unzip
    }
  elif command -v yum >/dev/null 2>&1; then
    yum install -y unzip
  else
    echo "unzip is missing and no supported package manager was found" >&2
    exit 1
  fi
fi

if ! id -u "${agent_user}" >/dev/null 2>&1; then
  useradd --system --create-home --home-dir "/home/${agent_user}" --shell /bin/bash \
    --comment "TeamCity build agent" "${agent_user}"
  echo "Created the ${agent_user} account"
fi

if [[ -f "${marker}" && "$(cat "${marker}")" == "${zip_sha256}" ]]; then
  echo "The agent in ${agent_dir} is already unpacked from this server build"
else
  [[ -f "${archive}" ]] || { echo "${archive} not found: the download step did not run" >&2; exit 1; }
  # Replacing an agent home: stop its service first (the unit itself stays installed).
  if systemctl is-active --quiet buildagent.service; then
    systemctl stop buildagent.service
  fi
  rm -rf "${agent_dir}"
  mkdir -p "${agent_dir}"
  # buildAgentFull.zip holds bin, conf, launcher, lib, plugins... at its root.
  unzip -q "${archive}" -d "${agent_dir}"
  printf '%s\n' "${zip_sha256}" > "${marker}"
  echo "Agent unpacked into ${agent_dir}"
fi

for required in bin/agent.sh conf launcher lib; do
  if [[ ! -e "${agent_dir}/${required}" ]]; then
    echo "${required} is missing from ${agent_dir}: is ${archive} a TeamCity buildAgentFull.zip?" >&2
    exit 1
  fi
done

# Zip archives do not reliably keep the executable bit.
chmod 0755 "${agent_dir}"/bin/*.sh

if [[ -n "${work_dir}" ]]; then
  mkdir -p "${work_dir}"
  echo "Work directory: ${work_dir}"
fi
