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
