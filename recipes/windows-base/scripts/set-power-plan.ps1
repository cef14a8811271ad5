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
