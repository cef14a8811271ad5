# Registers the TeamCity build agent as the BuildAgent Windows service: automatic start, stopped in the image (recipe teamcity-agent).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$agentDir = $env:AGENT_DIR
if ([string]::IsNullOrWhiteSpace($agentDir)) { throw 'AGENT_DIR is not set' }
$agentDir = $agentDir.TrimEnd('\')
# The agent's wrapper.conf ships with TCBuildAgent; the images name the service BuildAgent.
$serviceName = 'BuildAgent'

# The service wrapper reads its service name from wrapper.conf, at install time and on every start/stop.
$wrapperConf = Join-Path $agentDir 'launcher\conf\wrapper.conf'
$content = [IO.File]::ReadAllText($wrapperConf)
$namePattern = '(?m)^wrapper\.ntservice\.name=[^\r\n]*'
if (-not [regex]::IsMatch($content, $namePattern)) {
    throw "$wrapperConf has no wrapper.ntservice.name line"
}
$updated = [regex]::Replace($content, $namePattern, "wrapper.ntservice.name=$serviceName")
if ($updated -ne $content) {
    [IO.File]::WriteAllText($wrapperConf, $updated, (New-Object System.Text.UTF8Encoding($false)))
    Write-Output "Service name set to $serviceName in $wrapperConf"
}

$service = Get-Service -Name $serviceName -ErrorAction SilentlyContinue
if ($null -eq $service) {
    $installScript = Join-Path $agentDir 'bin\service.install.bat'
    Push-Location -LiteralPath (Join-Path $agentDir 'bin')
    try {
        & cmd.exe /d /c $installScript
        if ($LASTEXITCODE -ne 0) { throw "service.install.bat failed with exit code $LASTEXITCODE" }
    }
    finally {
        Pop-Location
    }
    $service = Get-Service -Name $serviceName -ErrorAction SilentlyContinue
    if ($null -eq $service) { throw "service.install.bat did not register a $serviceName service" }
    Write-Output "Registered the $serviceName service"
}
else {
    Write-Output "The $serviceName service is already registered"
}

# Starts on every boot: on an instance launched from the image that is the first boot, after the
# EC2 cloud profile's user data is in place.
Set-Service -Name $serviceName -StartupType Automatic

# Stopped in the image: an agent that ran here would have registered this build instance with the server.
if ((Get-Service -Name $serviceName).Status -ne 'Stopped') {
    Stop-Service -Name $serviceName -Force
}
$service = Get-Service -Name $serviceName
Write-Output "$serviceName`: start type $($service.StartType), status $($service.Status)"
