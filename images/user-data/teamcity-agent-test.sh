#!/bin/bash
# Test user data of {{ image.name }} {{ image.version }}: what a TeamCity EC2 cloud profile hands an
# agent at launch (its name and the server's URL), written into buildAgent.properties, then the agent
# restarted to pick them up. bakery's test checks look for that name on the fresh instance.
set -euo pipefail
conf={{ recipes["teamcity-agent"].agent_dir_linux | sh }}/conf/buildAgent.properties
sed -i -e '/^[[:space:]]*name[[:space:]]*[=:]/d' -e '/^[[:space:]]*serverUrl[[:space:]]*[=:]/d' "$conf"
printf '%s\n' {{ "name=bakery-test-" ~ image.name | sh }} {{ "serverUrl=" ~ recipes["teamcity-agent"].server_url | trim_end_matches(pat="/") | sh }} >>"$conf"
systemctl restart buildagent
