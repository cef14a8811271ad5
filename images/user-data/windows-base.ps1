<powershell>
# User data of bakery's Windows build instances ({{ image.name }} {{ image.version }}), run once on first boot by
# EC2Launch v2. bakery provisions over SSM, so make sure the SSM agent starts at boot and is running.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$serviceName = 'AmazonSSMAgent'
$service = Get-Service -Name $serviceName -ErrorAction SilentlyContinue
if ($null -eq $service) {
    Write-Output "$serviceName is not installed: bakery cannot reach this instance"
    exit 1
}
if ($service.StartType -ne 'Automatic') {
    Set-Service -Name $serviceName -StartupType Automatic
}
if ($service.Status -ne 'Running') {
    Start-Service -Name $serviceName
    (Get-Service -Name $serviceName).WaitForStatus('Running', [TimeSpan]::FromMinutes(2))
}
Write-Output "$serviceName is running"
</powershell>
<persist>false</persist>
