# Sets Chocolatey features for unattended use and points it at the internal feed when one is configured (recipe chocolatey).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$choco = Join-Path $env:ProgramData 'chocolatey\bin\choco.exe'

function Invoke-Choco {
    param([Parameter(Mandatory)][string[]]$Arguments)
    & $choco @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "choco $($Arguments -join ' ') failed with exit code $LASTEXITCODE"
    }
}

# Progress bars only bloat non-interactive logs.
Invoke-Choco -Arguments @('feature', 'disable', '--name=showDownloadProgress', '--limit-output')

{% if params.source_url -%}
$sourceArguments = @('source', 'add', '--name=internal', "--source=$env:CHOCOLATEY_SOURCE_URL", '--priority=1', '--limit-output')
{% if params.feed_username -%}
$feedPassword = "{{ secret(name="feed_password") }}"
$sourceArguments += "--user=$env:CHOCOLATEY_FEED_USERNAME"
$sourceArguments += "--password=$feedPassword"
{% endif -%}
# Not through Invoke-Choco: its error message would print the password.
& $choco @sourceArguments
if ($LASTEXITCODE -ne 0) { throw "choco source add --name=internal failed with exit code $LASTEXITCODE" }
Write-Output "Added the internal source $env:CHOCOLATEY_SOURCE_URL"

Invoke-Choco -Arguments @('source', 'disable', '--name=chocolatey', '--limit-output')
Write-Output 'Disabled the community repository'
{%- else -%}
Write-Output 'No internal feed configured: keeping the community repository'
{%- endif %}

Invoke-Choco -Arguments @('source', 'list', '--limit-output')
