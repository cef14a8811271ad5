# Installs Git for Windows silently from the installer fetched by the download step (recipe git).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

# What `git --version` prints without its "git version " prefix, e.g. 2.51.1.windows.1.
$expected = $env:GIT_EXPECTED_VERSION
if ([string]::IsNullOrWhiteSpace($expected)) { throw 'GIT_EXPECTED_VERSION is not set' }

$installer = Join-Path "{{ workdir }}" 'git-installer.exe'
$log = Join-Path "{{ workdir }}" 'git-install.log'
$gitExe = Join-Path $env:ProgramFiles 'Git\cmd\git.exe'

function Get-GitVersion {
    if (-not (Test-Path -LiteralPath $gitExe)) { return $null }
    $output = (& $gitExe --version | Out-String).Trim()
    if ($LASTEXITCODE -ne 0) { throw "git --version failed with exit code $LASTEXITCODE" }
    return $output
}

$current = Get-GitVersion
if ($current -eq "git version $expected") {
    Write-Output "Git for Windows $expected is already installed"
}
else {
    if (-not (Test-Path -LiteralPath $installer)) { throw "$installer not found: the download step did not run" }
    if ($null -ne $current) { Write-Output "Replacing $current" }

    # Inno Setup switches: no UI, no prompts, no reboot; the installer's defaults put git.exe on the machine PATH.
    $arguments = '/VERYSILENT /NORESTART /NOCANCEL /SP- /SUPPRESSMSGBOXES /CLOSEAPPLICATIONS /LOG="{0}"' -f $log
    $process = Start-Process -FilePath $installer -ArgumentList $arguments -Wait -PassThru
    if ($process.ExitCode -ne 0) {
        if (Test-Path -LiteralPath $log) { Get-Content -LiteralPath $log -Tail 50 }
        throw "Git for Windows installer failed with exit code $($process.ExitCode) (log: $log)"
    }

    $current = Get-GitVersion
    if ($current -ne "git version $expected") {
        throw "after installing, $gitExe reports '$current', expected 'git version $expected'"
    }
    Write-Output "Git for Windows $expected installed"
}
