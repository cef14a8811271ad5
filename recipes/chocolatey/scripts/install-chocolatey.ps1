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
{% if params.source_url and params.feed_username -%}
# The nupkg comes from the internal feed, which needs credentials.
$feedPassword = "{{ secret(name="feed_password") }}"
$pair = '{0}:{1}' -f $env:CHOCOLATEY_FEED_USERNAME, $feedPassword
$headers['Authorization'] = 'Basic ' + [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($pair))
{% endif %}
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
    $staging = Join-Path "{{ workdir }}" 'chocolatey'
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
