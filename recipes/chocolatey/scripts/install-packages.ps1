# Installs (or upgrades to) the Chocolatey packages listed in the recipe's packages parameter (recipe chocolatey).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$choco = Join-Path $env:ProgramData 'chocolatey\bin\choco.exe'

# Each entry is a package id, optionally pinned as "id@version".
$packages = @(
{%- for package in params.packages %}
    {{ package | ps }}
{%- endfor %}
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
