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
