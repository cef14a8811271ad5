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
