#!/usr/bin/env bash
# Hands the agent home to the agent account and enables the buildagent unit without starting it (recipe teamcity-agent).
set -euo pipefail

agent_dir="${AGENT_DIR:?AGENT_DIR is not set}"
agent_dir="${agent_dir%/}"
agent_user="${AGENT_USER:?AGENT_USER is not set}"
work_dir="${AGENT_WORK_DIR:-}"

# The agent rewrites conf/buildAgent.properties on first start and upgrades itself in place.
chown -R "${agent_user}:" "${agent_dir}"
if [[ -n "${work_dir}" ]]; then
  chown -R "${agent_user}:" "${work_dir}"
fi

systemctl daemon-reload
systemctl enable buildagent.service
# Stopped in the image: an agent that ran here would have registered this build instance with the server.
systemctl stop buildagent.service

echo "buildagent.service: $(systemctl is-enabled buildagent.service), $(systemctl is-active buildagent.service || true)"
