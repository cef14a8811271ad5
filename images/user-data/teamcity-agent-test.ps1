<powershell>
# Test user data of {{ image.name }} {{ image.version }}: what a TeamCity EC2 cloud profile hands an
# agent at launch (its name and the server's URL), written into buildAgent.properties, then the agent
# restarted to pick them up. bakery's test checks look for that name on the fresh instance.
$ErrorActionPreference = 'Stop'
$conf = Join-Path {{ recipes["teamcity-agent"].agent_dir_windows | ps }} 'conf\buildAgent.properties'
$lines = @(Get-Content -LiteralPath $conf | Where-Object { $_ -notmatch '^\s*(name|serverUrl)\s*[=:]' })
$lines += {{ "name=bakery-test-" ~ image.name | ps }}
$lines += {{ "serverUrl=" ~ recipes["teamcity-agent"].server_url | trim_end_matches(pat="/") | ps }}
Set-Content -LiteralPath $conf -Value $lines -Encoding ASCII
Restart-Service -Name BuildAgent
</powershell>
<persist>false</persist>
