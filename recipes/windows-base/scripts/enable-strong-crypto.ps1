# Makes .NET Framework applications use the OS TLS defaults (TLS 1.2 and later) instead of SSL3/TLS 1.0 (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$frameworkKeys = @(
    'HKLM:\SOFTWARE\Microsoft\.NETFramework\v4.0.30319'
    'HKLM:\SOFTWARE\WOW6432Node\Microsoft\.NETFramework\v4.0.30319'
    'HKLM:\SOFTWARE\Microsoft\.NETFramework\v2.0.50727'
    'HKLM:\SOFTWARE\WOW6432Node\Microsoft\.NETFramework\v2.0.50727'
)

foreach ($key in $frameworkKeys) {
    if (-not (Test-Path -LiteralPath $key)) {
        New-Item -Path $key -Force | Out-Null
    }
    foreach ($name in 'SchUseStrongCrypto', 'SystemDefaultTlsVersions') {
        New-ItemProperty -LiteralPath $key -Name $name -Value 1 -PropertyType DWord -Force | Out-Null
    }
    Write-Output "Strong cryptography enabled under $key"
}
