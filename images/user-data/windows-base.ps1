<powershell>
# User data of bakery's Windows build instances ({{ image.name }} {{ image.version }}), run once on first boot by
# EC2Launch v2. bakery provisions over SSM, so make sure the SSM agent starts at boot and is running.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$serviceName = 'AmazonSSMAgent'
$service = Get-Service -Name $serviceName -ErrorAction SilentlyContinue
if ($null -eq $service) {
    Write-Output "$serviceName is not installed: bakery cannot reach this instance"
    exit 1
}
if ($service.StartType -ne 'Automatic') {
    Set-Service -Name $serviceName -StartupType Automatic
}
if ($service.Status -ne 'Running') {
    Start-Service -Name $serviceName
    (Get-Service -Name $serviceName).WaitForStatus('Running', [TimeSpan]::FromMinutes(2))
}
Write-Output "$serviceName is running"
{% if image.communicator == "ssh" %}
# This image is provisioned over SSH: install and start OpenSSH Server (a Windows capability on
# Windows Server 2019 and later), start it at boot, and open port 22 in Windows Firewall.
$capability = Get-WindowsCapability -Online -Name 'OpenSSH.Server*' | Select-Object -First 1
if ($null -eq $capability) { throw 'OpenSSH Server is not available as a Windows capability here' }
if ($capability.State -ne 'Installed') { Add-WindowsCapability -Online -Name $capability.Name | Out-Null }
Set-Service -Name sshd -StartupType Automatic
Start-Service -Name sshd
if (-not (Get-NetFirewallRule -Name 'OpenSSH-Server-In-TCP' -ErrorAction SilentlyContinue)) {
    New-NetFirewallRule -Name 'OpenSSH-Server-In-TCP' -DisplayName 'OpenSSH Server (sshd)' -Enabled True -Direction Inbound -Protocol TCP -Action Allow -LocalPort 22 | Out-Null
}
# PowerShell as the default shell for SSH sessions.
New-ItemProperty -Path 'HKLM:\SOFTWARE\OpenSSH' -Name DefaultShell -Value "$env:SystemRoot\System32\WindowsPowerShell\v1.0\powershell.exe" -PropertyType String -Force | Out-Null

# The launch's key pair, from the instance metadata (IMDSv2), for Administrators: OpenSSH on
# Windows reads administrators_authorized_keys and ignores it unless only SYSTEM and
# Administrators may access it. Idempotent: the key is added once, the ACL set every time.
$imds = 'http://169.254.169.254/latest'
$token = Invoke-RestMethod -Method Put -Uri "$imds/api/token" -Headers @{ 'X-aws-ec2-metadata-token-ttl-seconds' = '300' } -TimeoutSec 10
$key = (Invoke-RestMethod -Uri "$imds/meta-data/public-keys/0/openssh-key" -Headers @{ 'X-aws-ec2-metadata-token' = $token } -TimeoutSec 10).Trim()
if (-not $key) { throw 'the instance metadata has no OpenSSH public key: launch it with a key pair' }
$authorized = Join-Path $env:ProgramData 'ssh\administrators_authorized_keys'
New-Item -ItemType Directory -Force -Path (Split-Path -Parent $authorized) | Out-Null
$present = @()
if (Test-Path -LiteralPath $authorized) { $present = @(Get-Content -LiteralPath $authorized) }
if ($present -notcontains $key) { Add-Content -LiteralPath $authorized -Value $key -Encoding ascii }
# Administrators (S-1-5-32-544) and SYSTEM (S-1-5-18) only, by SID: the names are localised.
icacls.exe $authorized /inheritance:r /grant '*S-1-5-32-544:F' /grant '*S-1-5-18:F' | Out-Null
if ($LASTEXITCODE -ne 0) { throw "icacls failed on $authorized with exit code $LASTEXITCODE" }
Write-Output 'OpenSSH Server is running and accepts the launch key for Administrators'
{% endif %}
</powershell>
<persist>false</persist>
