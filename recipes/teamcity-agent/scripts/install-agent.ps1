# Unpacks the TeamCity build agent fetched from the server into $env:AGENT_DIR (recipe teamcity-agent).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$agentDir = $env:AGENT_DIR
$zipSha256 = $env:AGENT_ZIP_SHA256
$workDir = $env:AGENT_WORK_DIR
if ([string]::IsNullOrWhiteSpace($agentDir)) { throw 'AGENT_DIR is not set' }
if ([string]::IsNullOrWhiteSpace($zipSha256)) { throw 'AGENT_ZIP_SHA256 is not set' }
$agentDir = $agentDir.TrimEnd('\')
$archive = Join-Path "{{ workdir }}" 'buildAgentFull.zip'
# Records which server build the agent home was unpacked from.
$marker = Join-Path $agentDir '.bakery-agent-zip.sha256'

$unpacked = (Test-Path -LiteralPath $marker) -and
    ((Get-Content -LiteralPath $marker -Raw).Trim() -eq $zipSha256.ToLowerInvariant())

if ($unpacked) {
    Write-Output "The agent in $agentDir is already unpacked from this server build"
}
else {
    if (-not (Test-Path -LiteralPath $archive)) { throw "$archive not found: the download step did not run" }

    # Replacing an agent home: stop its service first (the service itself stays registered).
    $service = Get-Service -Name 'BuildAgent' -ErrorAction SilentlyContinue
    if ($null -ne $service -and $service.Status -ne 'Stopped') {
        Stop-Service -Name 'BuildAgent' -Force
    }
    if (Test-Path -LiteralPath $agentDir) {
        Remove-Item -LiteralPath $agentDir -Recurse -Force
    }

    # buildAgentFull.zip holds bin, conf, launcher, lib, plugins... at its root.
    Add-Type -AssemblyName System.IO.Compression.FileSystem
    [IO.Compression.ZipFile]::ExtractToDirectory($archive, $agentDir)
    Set-Content -LiteralPath $marker -Value $zipSha256.ToLowerInvariant() -Encoding Ascii
    Write-Output "Agent unpacked into $agentDir"
}

foreach ($required in 'bin\service.install.bat', 'launcher\conf\wrapper.conf', 'conf') {
    if (-not (Test-Path -LiteralPath (Join-Path $agentDir $required))) {
        throw "$required is missing from $($agentDir): is $archive a TeamCity buildAgentFull.zip?"
    }
}

if (-not [string]::IsNullOrWhiteSpace($workDir)) {
    New-Item -ItemType Directory -Path $workDir -Force | Out-Null
    Write-Output "Work directory: $workDir"
}
