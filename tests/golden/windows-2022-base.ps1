# ==== prepare
$ErrorActionPreference = 'Stop'
New-Item -ItemType Directory -Force -Path 'C:\Windows\Temp\bakery-bk-golden\.bakery' | Out-Null

# ==== step windows-base / Set the time zone
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
$env:TIMEZONE_ID = 'UTC'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Sets the Windows time zone to $env:TIMEZONE_ID (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$timeZoneId = $env:TIMEZONE_ID
if ([string]::IsNullOrWhiteSpace($timeZoneId)) {
    throw 'TIMEZONE_ID is not set'
}

$known = @(Get-TimeZone -ListAvailable | Where-Object { $_.Id -eq $timeZoneId })
if ($known.Count -eq 0) {
    throw "Unknown time zone id '$timeZoneId': use an Id from Get-TimeZone -ListAvailable"
}

if ((Get-TimeZone).Id -eq $timeZoneId) {
    Write-Output "Time zone is already '$timeZoneId'"
}
else {
    Set-TimeZone -Id $timeZoneId
    Write-Output "Time zone set to '$timeZoneId'"
}

# When EC2Launch v2's sysprep answer file names a TimeZone, sysprep's specialize pass applies it to every
# instance launched from the image: keep it in step with the zone set above.
$unattendFile = Join-Path $env:ProgramData 'Amazon\EC2Launch\sysprep\unattend.xml'
if (Test-Path -LiteralPath $unattendFile) {
    $unattend = New-Object System.Xml.XmlDocument
    $unattend.PreserveWhitespace = $true
    $unattend.Load($unattendFile)
    $namespaces = New-Object System.Xml.XmlNamespaceManager($unattend.NameTable)
    $namespaces.AddNamespace('u', 'urn:schemas-microsoft-com:unattend')
    $changed = $false
    foreach ($node in @($unattend.SelectNodes('//u:component[@name="Microsoft-Windows-Shell-Setup"]/u:TimeZone', $namespaces))) {
        if ($node.InnerText -ne $timeZoneId) {
            $node.InnerText = $timeZoneId
            $changed = $true
        }
    }
    if ($changed) {
        $unattend.Save($unattendFile)
        Write-Output "Time zone set to '$timeZoneId' in $unattendFile"
    }
}
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 10) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step windows-base / Set the LocalMachine execution policy to RemoteSigned
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Sets the LocalMachine PowerShell execution policy to RemoteSigned (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$desired = 'RemoteSigned'

if ((Get-ExecutionPolicy -Scope LocalMachine) -eq $desired) {
    Write-Output "LocalMachine execution policy is already $desired"
}
else {
    try {
        Set-ExecutionPolicy -ExecutionPolicy $desired -Scope LocalMachine -Force
    }
    catch {
        # This session runs with its own -ExecutionPolicy (Process scope), which takes precedence over
        # LocalMachine, so Set-ExecutionPolicy reports an override after having written the new value.
        # Anything else is a real failure.
        if ($_.FullyQualifiedErrorId -notlike 'ExecutionPolicyOverride*') {
            throw
        }
        Write-Output "Note: $($_.Exception.Message.Trim())"
    }
}

$actual = Get-ExecutionPolicy -Scope LocalMachine
if ($actual -ne $desired) {
    throw "LocalMachine execution policy is '$actual', expected '$desired'"
}
Write-Output "LocalMachine execution policy: $actual"
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step windows-base / Disable IE Enhanced Security Configuration
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Turns off Internet Explorer Enhanced Security Configuration for administrators and users (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$components = [ordered]@{
    'Administrators' = 'HKLM:\SOFTWARE\Microsoft\Active Setup\Installed Components\{A509B1A7-37EF-4b3f-8CFC-4F3A74704073}'
    'Users'          = 'HKLM:\SOFTWARE\Microsoft\Active Setup\Installed Components\{A509B1A8-37EF-4b3f-8CFC-4F3A74704073}'
}

foreach ($component in $components.GetEnumerator()) {
    $key = $component.Value
    if (-not (Test-Path -LiteralPath $key)) {
        New-Item -Path $key -Force | Out-Null
    }
    New-ItemProperty -LiteralPath $key -Name 'IsInstalled' -Value 0 -PropertyType DWord -Force | Out-Null
    Write-Output "IE Enhanced Security Configuration disabled for $($component.Key)"
}
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step windows-base / Size the event logs
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
$env:EVENT_LOG_SIZE_MB = '512'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Sets the maximum size of the Application, System and Security event logs to $env:EVENT_LOG_SIZE_MB (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$sizeMb = 0
if (-not [int]::TryParse($env:EVENT_LOG_SIZE_MB, [ref]$sizeMb) -or $sizeMb -lt 1) {
    throw "EVENT_LOG_SIZE_MB must be a positive whole number of megabytes, got '$env:EVENT_LOG_SIZE_MB'"
}
# A whole number of megabytes is always a multiple of the 64 KB the event log service requires.
$sizeBytes = [int64]$sizeMb * 1MB

foreach ($logName in 'Application', 'System', 'Security') {
    $current = (Get-WinEvent -ListLog $logName).MaximumSizeInBytes
    if ($current -eq $sizeBytes) {
        Write-Output "$logName log maximum size is already $sizeMb MB"
        continue
    }
    & wevtutil.exe set-log $logName "/maxsize:$sizeBytes"
    if ($LASTEXITCODE -ne 0) {
        throw "wevtutil set-log $logName failed with exit code $LASTEXITCODE"
    }
    Write-Output "$logName log maximum size set to $sizeMb MB (was $([math]::Round($current / 1MB)) MB)"
}
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 10) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step windows-base / Do not open Server Manager at logon
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Keeps Server Manager from opening at logon, for every user (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

function Set-RegistryDword {
    param(
        [Parameter(Mandatory)][string]$Path,
        [Parameter(Mandatory)][string]$Name,
        [Parameter(Mandatory)][int]$Value
    )
    if (-not (Test-Path -LiteralPath $Path)) {
        New-Item -Path $Path -Force | Out-Null
    }
    New-ItemProperty -LiteralPath $Path -Name $Name -Value $Value -PropertyType DWord -Force | Out-Null
}

# Machine policy (what the "Do not display Server Manager automatically at logon" GPO sets).
Set-RegistryDword -Path 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\Server\ServerManager' -Name 'DoNotOpenAtLogon' -Value 1
# Machine preference, honoured by Server Manager itself.
Set-RegistryDword -Path 'HKLM:\SOFTWARE\Microsoft\ServerManager' -Name 'DoNotOpenServerManagerAtLogon' -Value 1

# The logon task that starts Server Manager.
$task = Get-ScheduledTask -TaskPath '\Microsoft\Windows\Server Manager\' -TaskName 'ServerManager' -ErrorAction SilentlyContinue
if ($null -ne $task -and $task.State -ne 'Disabled') {
    $task | Disable-ScheduledTask | Out-Null
    Write-Output 'Disabled the ServerManager logon task'
}

Write-Output 'Server Manager will not open at logon'
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step windows-base / Enable strong cryptography (TLS 1.2) for .NET
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Makes .NET Framework applications use the OS TLS defaults (TLS 1.2 and later) instead of SSL3/TLS 1.0 (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$frameworkKeys = @(
    'HKLM:\SOFTWARE\Microsoft\.NETFramework\v4.0.30319'
    'HKLM:\SOFTWARE\WOW6432Node\Microsoft\.NETFramework\v4.0.30319'
    'HKLM:\SOFTWARE\Microsoft\.NETFramework\v2.0.50727'
    'HKLM:\SOFTWARE\WOW6432Node\Microsoft\.NETFramework\v2.0.50727'
)

foreach ($key in $frameworkKeys) {
    if (-not (Test-Path -LiteralPath $key)) {
        New-Item -Path $key -Force | Out-Null
    }
    foreach ($name in 'SchUseStrongCrypto', 'SystemDefaultTlsVersions') {
        New-ItemProperty -LiteralPath $key -Name $name -Value 1 -PropertyType DWord -Force | Out-Null
    }
    Write-Output "Strong cryptography enabled under $key"
}
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step windows-base / Activate the High performance power plan
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Activates the built-in High performance power plan (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

# GUID of the built-in "High performance" scheme (SCHEME_MIN), identical on every Windows installation.
$highPerformance = '8c5e7fda-e8bf-4a96-9a85-a6e23a8c635c'

$active = (& powercfg.exe /getactivescheme | Out-String)
if ($LASTEXITCODE -ne 0) {
    throw "powercfg /getactivescheme failed with exit code $LASTEXITCODE"
}

if ($active -match $highPerformance) {
    Write-Output 'High performance power plan is already active'
}
else {
    & powercfg.exe /setactive $highPerformance
    if ($LASTEXITCODE -ne 0) {
        throw "powercfg /setactive $highPerformance failed with exit code $LASTEXITCODE"
    }
    Write-Output 'High performance power plan activated'
}
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step chocolatey / Install Chocolatey
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
$env:CHOCOLATEY_FEED_USERNAME = ''
$env:CHOCOLATEY_NUPKG_SHA256 = ''
$env:CHOCOLATEY_NUPKG_URL = 'https://community.chocolatey.org/api/v2/package/chocolatey/2.4.3'
$env:CHOCOLATEY_VERSION = '2.4.3'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Installs Chocolatey $env:CHOCOLATEY_VERSION from its nupkg, the way the official install.ps1 does (recipe chocolatey).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
$ProgressPreference = 'SilentlyContinue'
[Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12

$version = $env:CHOCOLATEY_VERSION
$nupkgUrl = $env:CHOCOLATEY_NUPKG_URL
$expectedSha256 = $env:CHOCOLATEY_NUPKG_SHA256
if ([string]::IsNullOrWhiteSpace($version)) { throw 'CHOCOLATEY_VERSION is not set' }
if ([string]::IsNullOrWhiteSpace($nupkgUrl)) { throw 'CHOCOLATEY_NUPKG_URL is not set' }

$chocoRoot = Join-Path $env:ProgramData 'chocolatey'
$chocoExe = Join-Path $chocoRoot 'bin\choco.exe'

function Get-ChocolateyVersion {
    if (-not (Test-Path -LiteralPath $chocoExe)) { return $null }
    $output = (& $chocoExe --version | Out-String).Trim()
    if ($LASTEXITCODE -ne 0) { throw "choco --version failed with exit code $LASTEXITCODE" }
    return $output
}

$headers = @{}

$installed = Get-ChocolateyVersion
if ($installed -eq $version) {
    Write-Output "Chocolatey $version is already installed"
}
elseif ($null -ne $installed) {
    Write-Output "Chocolatey $installed is installed; moving it to $version"
    & $chocoExe upgrade chocolatey "--version=$version" --allow-downgrade --yes --no-progress
    if ($LASTEXITCODE -ne 0) { throw "choco upgrade chocolatey failed with exit code $LASTEXITCODE" }
}
else {
    $staging = Join-Path "$env:BAKERY_WORKDIR" 'chocolatey'
    if (Test-Path -LiteralPath $staging) { Remove-Item -LiteralPath $staging -Recurse -Force }
    New-Item -ItemType Directory -Path $staging -Force | Out-Null

    # A nupkg is a zip archive; the .zip name keeps the .NET zip APIs happy.
    $nupkg = Join-Path $staging "chocolatey.$version.zip"
    Write-Output "Downloading Chocolatey $version from $nupkgUrl"
    Invoke-WebRequest -Uri $nupkgUrl -OutFile $nupkg -Headers $headers -UseBasicParsing

    if (-not [string]::IsNullOrWhiteSpace($expectedSha256)) {
        $actualSha256 = (Get-FileHash -LiteralPath $nupkg -Algorithm SHA256).Hash
        if ($actualSha256 -ne $expectedSha256) {
            throw "sha256 mismatch for $nupkgUrl`: expected $expectedSha256, got $actualSha256"
        }
    }

    $packageDir = Join-Path $staging 'package'
    Add-Type -AssemblyName System.IO.Compression.FileSystem
    [IO.Compression.ZipFile]::ExtractToDirectory($nupkg, $packageDir)

    # The package's own installer, in a fresh process: outside this script's strict mode.
    $env:ChocolateyInstall = $chocoRoot
    & powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File (Join-Path $packageDir 'tools\chocolateyInstall.ps1')
    if ($LASTEXITCODE -ne 0) { throw "chocolateyInstall.ps1 failed with exit code $LASTEXITCODE" }

    # Register Chocolatey as an installed package of itself, so that it can upgrade itself later.
    $libDir = Join-Path $chocoRoot 'lib\chocolatey'
    New-Item -ItemType Directory -Path $libDir -Force | Out-Null
    Copy-Item -LiteralPath $nupkg -Destination (Join-Path $libDir 'chocolatey.nupkg') -Force

    Remove-Item -LiteralPath $staging -Recurse -Force
}

$installed = Get-ChocolateyVersion
if ($installed -ne $version) {
    throw "Chocolatey reports version '$installed', expected '$version'"
}
Write-Output "Chocolatey $installed is installed in $chocoRoot"
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 13) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step chocolatey / Configure Chocolatey features and sources
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
$env:CHOCOLATEY_FEED_USERNAME = ''
$env:CHOCOLATEY_SOURCE_URL = ''
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Sets Chocolatey features for unattended use and points it at the internal feed when one is configured (recipe chocolatey).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$choco = Join-Path $env:ProgramData 'chocolatey\bin\choco.exe'

function Invoke-Choco {
    param([Parameter(Mandatory)][string[]]$Arguments)
    & $choco @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "choco $($Arguments -join ' ') failed with exit code $LASTEXITCODE"
    }
}

# Progress bars only bloat non-interactive logs.
Invoke-Choco -Arguments @('feature', 'disable', '--name=showDownloadProgress', '--limit-output')

Write-Output 'No internal feed configured: keeping the community repository'

Invoke-Choco -Arguments @('source', 'list', '--limit-output')
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 11) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step chocolatey / Install Chocolatey packages
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Installs (or upgrades to) the Chocolatey packages listed in the recipe's packages parameter (recipe chocolatey).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$choco = Join-Path $env:ProgramData 'chocolatey\bin\choco.exe'

# Each entry is a package id, optionally pinned as "id@version".
$packages = @(
    '7zip.install'
)

if ($packages.Count -eq 0) {
    Write-Output 'No Chocolatey packages requested'
}

# Exit codes that mean success; 1641 and 3010 also ask for a reboot.
$successCodes = @(0, 1641, 3010)
$rebootRequested = $false

foreach ($entry in $packages) {
    $id, $pinnedVersion = $entry -split '@', 2
    # "upgrade" installs missing packages too, so re-running this step is harmless.
    $chocoArguments = @('upgrade', $id, '--yes', '--no-progress')
    if ($pinnedVersion) {
        $chocoArguments += "--version=$pinnedVersion"
        $chocoArguments += '--allow-downgrade'
    }
    Write-Output "choco $($chocoArguments -join ' ')"
    & $choco @chocoArguments
    $exitCode = $LASTEXITCODE
    if ($successCodes -notcontains $exitCode) {
        throw "choco upgrade $id failed with exit code $exitCode"
    }
    if ($exitCode -ne 0) { $rebootRequested = $true }
}

if ($rebootRequested) {
    Write-Output 'A package asked for a reboot: the image is generalised and rebooted before first use'
}
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== step windows-update / Windows Update, restarting until nothing is pending
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
$categories = @('Security Updates', 'Critical Updates')
$exclude = @()
$session = New-Object -ComObject Microsoft.Update.Session
$found = $session.CreateUpdateSearcher().Search("IsInstalled=0 and Type='Software' and IsHidden=0").Updates
$todo = New-Object -ComObject Microsoft.Update.UpdateColl
$skipped = 0
foreach ($u in $found) {
$names = @($u.Categories | ForEach-Object { $_.Name })
$kbs = @($u.KBArticleIDs | ForEach-Object { 'KB' + $_ })
if ($kbs | Where-Object { $exclude -contains $_ }) { $skipped++; continue }
if ($categories.Count -eq 0 -or ($names | Where-Object { $categories -contains $_ })) {
if (-not $u.EulaAccepted) { $u.AcceptEula() }
[void]$todo.Add($u)
}
}
if ($todo.Count -gt 0) {
$dl = $session.CreateUpdateDownloader(); $dl.Updates = $todo; [void]$dl.Download()
$inst = $session.CreateUpdateInstaller(); $inst.Updates = $todo; $r = $inst.Install()
for ($i = 0; $i -lt $todo.Count; $i++) {
$u = $todo.Item($i)
$kb = (@($u.KBArticleIDs | ForEach-Object { 'KB' + $_ }) -join ',')
if (-not $kb) { $kb = '-' }
$code = $r.GetUpdateResult($i).ResultCode
if ($code -eq 2 -or $code -eq 3) { 'installed=' + $kb + ' ' + $u.Title } else { 'failed=' + $kb + ' ' + $u.Title }
}
}
'excluded=' + $skipped
'remaining=' + ($found.Count - $todo.Count - $skipped)
$pending = (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') -or (Test-Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') -or ($null -ne (Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -Name PendingFileRenameOperations -ErrorAction SilentlyContinue))
'reboot_pending=' + [int]$pending
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== checks: time zone, execution policy, IE ESC is off for administrators, IE ESC is off for users, Security event log size, Server Manager does not open at logon, .NET 4 uses strong cryptography, High performance power plan is active, choco runs at the pinned version, SSM agent, RDP listener, PowerShell execution policy, 7-Zip
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
$__m = 'bakery-probe-0000000000000000'
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
(Get-TimeZone).Id
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 0 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
Get-ExecutionPolicy -Scope LocalMachine
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 1 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
$k = 'HKLM:\SOFTWARE\Microsoft\Active Setup\Installed Components\{A509B1A7-37EF-4b3f-8CFC-4F3A74704073}'
if (Test-Path -LiteralPath $k) {
    'key=1'
    $p = Get-ItemProperty -LiteralPath $k -Name 'IsInstalled' -ErrorAction SilentlyContinue
    if ($null -ne $p) { 'value=' + $p.'IsInstalled' } else { 'value_missing=1' }
} else {
    'key=0'
}
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 2 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
$k = 'HKLM:\SOFTWARE\Microsoft\Active Setup\Installed Components\{A509B1A8-37EF-4b3f-8CFC-4F3A74704073}'
if (Test-Path -LiteralPath $k) {
    'key=1'
    $p = Get-ItemProperty -LiteralPath $k -Name 'IsInstalled' -ErrorAction SilentlyContinue
    if ($null -ne $p) { 'value=' + $p.'IsInstalled' } else { 'value_missing=1' }
} else {
    'key=0'
}
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 3 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
(Get-WinEvent -ListLog Security).MaximumSizeInBytes
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 4 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
$k = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\Server\ServerManager'
if (Test-Path -LiteralPath $k) {
    'key=1'
    $p = Get-ItemProperty -LiteralPath $k -Name 'DoNotOpenAtLogon' -ErrorAction SilentlyContinue
    if ($null -ne $p) { 'value=' + $p.'DoNotOpenAtLogon' } else { 'value_missing=1' }
} else {
    'key=0'
}
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 5 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
$k = 'HKLM:\SOFTWARE\Microsoft\.NETFramework\v4.0.30319'
if (Test-Path -LiteralPath $k) {
    'key=1'
    $p = Get-ItemProperty -LiteralPath $k -Name 'SchUseStrongCrypto' -ErrorAction SilentlyContinue
    if ($null -ne $p) { 'value=' + $p.'SchUseStrongCrypto' } else { 'value_missing=1' }
} else {
    'key=0'
}
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 6 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
powercfg.exe /getactivescheme
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 7 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
& "$env:ProgramData\chocolatey\bin\choco.exe" --version
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 8 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
$s = Get-Service -Name 'AmazonSSMAgent' -ErrorAction SilentlyContinue
if ($null -eq $s) { 'status=missing' } else {
'status=' + $s.Status.ToString().ToLower()
'start_mode=' + $(switch ($s.StartType.ToString()) { 'Automatic' { 'auto' } 'Manual' { 'manual' } 'Disabled' { 'disabled' } default { $_.ToLower() } })
}
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 9 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
'probe=port'
Get-NetTCPConnection -State Listen -ErrorAction SilentlyContinue | ForEach-Object { 'ss=' + $_.LocalAddress + ':' + $_.LocalPort }
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 10 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
$k = 'HKLM:\SOFTWARE\Microsoft\PowerShell\1\ShellIds\Microsoft.PowerShell'
if (Test-Path -LiteralPath $k) {
    'key=1'
    $p = Get-ItemProperty -LiteralPath $k -Name 'ExecutionPolicy' -ErrorAction SilentlyContinue
    if ($null -ne $p) { 'value=' + $p.'ExecutionPolicy' } else { 'value_missing=1' }
} else {
    'key=0'
}
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 11 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
$f = 'C:\Program Files\7-Zip\7z.exe'
if (Test-Path -LiteralPath $f) {
    'exists=1'
} else {
    'exists=0'
}
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 12 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$global:LASTEXITCODE = 0
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== check requested packages are installed
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
$missing = @(@('7zip.install') | Where-Object { -not (Test-Path -LiteralPath (Join-Path $env:ProgramData "chocolatey\lib\$_")) })
if ($missing.Count -gt 0) { Write-Output "missing: $($missing -join ', ')"; exit 1 }
Write-Output 'all requested packages are installed'
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== check no restart is pending
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp\bakery-bk-golden'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
$pending = (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') -or (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired')
if ($pending) { Write-Output 'a restart is pending'; exit 1 }
Write-Output 'no restart is pending'
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== remove the working directory
Remove-Item -Recurse -Force -LiteralPath 'C:\Windows\Temp\bakery-bk-golden' -ErrorAction SilentlyContinue
exit 0

# ==== finalize step ec2launch-sysprep / EC2Launch v2 reset and sysprep (powers the instance off)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
# Resets EC2Launch v2 and runs sysprep, which generalises Windows and shuts the instance down (recipe ec2launch-sysprep).
# This is the last thing that runs on the build instance: the connection drops when it powers off.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$ec2launch = Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe'
if (-not (Test-Path -LiteralPath $ec2launch)) {
    throw "$ec2launch not found: this recipe needs EC2Launch v2 (shipped on Amazon's Windows Server 2022 AMIs)"
}

# What the test phase compares a fresh instance with: its computer name must differ from this one, and
# its Administrator password must have been set after this moment.
$record = Join-Path $env:ProgramData 'bakery'
New-Item -ItemType Directory -Force -Path $record | Out-Null
Set-Content -LiteralPath (Join-Path $record 'build-computer-name') -Value $env:COMPUTERNAME -Encoding ASCII
Set-Content -LiteralPath (Join-Path $record 'generalized-at') -Value ([DateTime]::UtcNow.ToString('o')) -Encoding ASCII

# Forget this instance: EC2Launch state, run-once markers and logs, so that the next boot runs every
# first-boot task (and the instance's user data) again.
& $ec2launch reset --clean
if ($LASTEXITCODE -ne 0) { throw "EC2Launch reset --clean failed with exit code $LASTEXITCODE" }

Write-Output 'Running sysprep: the instance powers off when it is done'
& $ec2launch sysprep --shutdown
if ($LASTEXITCODE -ne 0) { throw "EC2Launch sysprep failed with exit code $LASTEXITCODE" }
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== test: first boot finished
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
$boot = (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')
[Console]::Out.WriteLine("boot=$boot")
$ec2launch = Join-Path $env:ProgramFiles 'Amazon\EC2Launch\EC2Launch.exe'
if (-not (Test-Path -LiteralPath $ec2launch)) {
    [Console]::Out.WriteLine('ready=yes')
    exit 0
}
# Windows PowerShell turns a native command's stderr into errors, which 'Stop' would throw.
$ErrorActionPreference = 'Continue'
& $ec2launch status 2>&1 | Out-Null
$code = $LASTEXITCODE
$ErrorActionPreference = 'Stop'
$global:LASTEXITCODE = 0
switch ($code) {
    0 { [Console]::Out.WriteLine('ready=yes') }
    1 { [Console]::Out.WriteLine('ready=failed EC2Launch v2 ran its first-boot tasks and reported a failure (see C:\ProgramData\Amazon\EC2Launch\log\agent.log)') }
    2 { [Console]::Out.WriteLine('ready=no EC2Launch v2 is running its first-boot tasks') }
    5 { [Console]::Out.WriteLine('ready=no EC2Launch v2 has not started since sysprep') }
    default { [Console]::Out.WriteLine("ready=no EC2Launch v2 status is unknown (exit $code)") }
}
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== test checks: SSM agent runs after a fresh boot
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
$__m = 'bakery-probe-0000000000000000'
$__t = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
$global:LASTEXITCODE = 0
$__rc = 0
try {
$__o = & {
$s = Get-Service -Name 'AmazonSSMAgent' -ErrorAction SilentlyContinue
if ($null -eq $s) { 'status=missing' } else {
'status=' + $s.Status.ToString().ToLower()
'start_mode=' + $(switch ($s.StartType.ToString()) { 'Automatic' { 'auto' } 'Manual' { 'manual' } 'Disabled' { 'disabled' } default { $_.ToLower() } })
}
} | Out-String -Width 4096
if ($LASTEXITCODE) { $__rc = $LASTEXITCODE }
} catch {
[Console]::Error.WriteLine('error: ' + $_.Exception.Message)
$__o = ''
$__rc = 1
}
[Console]::Out.Write($__o)
[Console]::Out.WriteLine("`n$__m 0 $__rc " + ($__t / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture) + ' ' + ([DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0).ToString('F3', [Globalization.CultureInfo]::InvariantCulture))
$global:LASTEXITCODE = 0
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== test check EC2Launch v2 ran its first-boot tasks and they succeeded
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
$ErrorActionPreference = "Continue"; & (Join-Path $env:ProgramFiles "Amazon\EC2Launch\EC2Launch.exe") status 2>&1; exit $LASTEXITCODE
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== test check a new computer name (sysprep generalised the image)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
$build = (Get-Content -LiteralPath (Join-Path $env:ProgramData 'bakery\build-computer-name') -Raw).Trim()
if ($build -eq $env:COMPUTERNAME) { Write-Output "still named $build, like the build instance"; exit 1 }
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== test check the Administrator password was set on this instance
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
$at = [DateTime]::Parse((Get-Content -LiteralPath (Join-Path $env:ProgramData 'bakery\generalized-at') -Raw).Trim()).ToUniversalTime()
$set = (Get-LocalUser -Name Administrator).PasswordLastSet
if ($null -eq $set -or $set.ToUniversalTime() -le $at) { Write-Output "the Administrator password dates from before the image was generalised ($set)"; exit 1 }
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== test check no bake working directory left
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$env:BAKERY_WORKDIR = 'C:\Windows\Temp'
New-Item -ItemType Directory -Force -Path $env:BAKERY_WORKDIR | Out-Null
Set-Location -LiteralPath $env:BAKERY_WORKDIR
$global:LASTEXITCODE = 0
[Console]::Out.WriteLine('##bakery-ran##')
try {
. {
if (Get-ChildItem -Path C:\Windows\Temp -Filter "bakery-*" -Directory -ErrorAction SilentlyContinue) { exit 1 }
}
} catch {
    [Console]::Error.WriteLine('##bakery-error## ' + $_.Exception.Message + ' (line ' + ($_.InvocationInfo.ScriptLineNumber - 9) + ')')
    exit 1
}
if ($LASTEXITCODE) { exit $LASTEXITCODE }
exit 0

# ==== test: still the same boot
(Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')
# ==== step restart-only / restart
(Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')
# ==== step restart-only / restart
shutdown.exe /r /t 5 /c 'bakery restart' /d p:4:1
# ==== user data (communicator = ssh)
<powershell>
# User data of bakery's Windows build instances (windows-2022-base 1.0), run once on first boot by
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

</powershell>
<persist>false</persist>
