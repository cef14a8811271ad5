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
