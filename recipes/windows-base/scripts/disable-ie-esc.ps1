# Turns off Internet Explorer Enhanced Security Configuration for administrators and users (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$components = [ordered]@{
    'Administrators' = 'HKLM:\SOFTWARE\Microsoft\Active Setup\Installed Components\{A509B1A7-37EF-4b3f-8CFC-4F3A74704073}'
    'Users'          = 'HKLM:\SOFTWARE\Microsoft\Active Setup\Installed Components\{A509B1A8-37EF-4b3f-8CFC-4F3A74704073}'
}

foreach ($component in $components.GetEnumerator()) {
    $key = $component.Value
    if (-not (Test-Path -LiteralPath $key)) {
        New-Item -Path $key -Force | Out-Null
    }
    New-ItemProperty -LiteralPath $key -Name 'IsInstalled' -Value 0 -PropertyType DWord -Force | Out-Null
    Write-Output "IE Enhanced Security Configuration disabled for $($component.Key)"
}
