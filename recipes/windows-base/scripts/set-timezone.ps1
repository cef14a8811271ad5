# Sets the Windows time zone to $env:TIMEZONE_ID (recipe windows-base).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$timeZoneId = $env:TIMEZONE_ID
if ([string]::IsNullOrWhiteSpace($timeZoneId)) {
    throw 'TIMEZONE_ID is not set'
}

$known = @(Get-TimeZone -ListAvailable | Where-Object { $_.Id -eq $timeZoneId })
if ($known.Count -eq 0) {
    throw "Unknown time zone id '$timeZoneId': use an Id from Get-TimeZone -ListAvailable"
}

if ((Get-TimeZone).Id -eq $timeZoneId) {
    Write-Output "Time zone is already '$timeZoneId'"
}
else {
    Set-TimeZone -Id $timeZoneId
    Write-Output "Time zone set to '$timeZoneId'"
}

# When EC2Launch v2's sysprep answer file names a TimeZone, sysprep's specialize pass applies it to every
# instance launched from the image: keep it in step with the zone set above.
$unattendFile = Join-Path $env:ProgramData 'Amazon\EC2Launch\sysprep\unattend.xml'
if (Test-Path -LiteralPath $unattendFile) {
    $unattend = New-Object System.Xml.XmlDocument
    $unattend.PreserveWhitespace = $true
    $unattend.Load($unattendFile)
    $namespaces = New-Object System.Xml.XmlNamespaceManager($unattend.NameTable)
    $namespaces.AddNamespace('u', 'urn:schemas-microsoft-com:unattend')
    $changed = $false
    foreach ($node in @($unattend.SelectNodes('//u:component[@name="Microsoft-Windows-Shell-Setup"]/u:TimeZone', $namespaces))) {
        if ($node.InnerText -ne $timeZoneId) {
            $node.InnerText = $timeZoneId
            $changed = $true
        }
    }
    if ($changed) {
        $unattend.Save($unattendFile)
        Write-Output "Time zone set to '$timeZoneId' in $unattendFile"
    }
}
