# Installs Eclipse Temurin $env:JDK_VERSION from the zip fetched by the download step into $env:JDK_INSTALL_DIR
# and sets JAVA_HOME and PATH machine-wide (recipe jdk).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$version = $env:JDK_VERSION
$installDir = $env:JDK_INSTALL_DIR
if ([string]::IsNullOrWhiteSpace($version)) { throw 'JDK_VERSION is not set' }
if ([string]::IsNullOrWhiteSpace($installDir)) { throw 'JDK_INSTALL_DIR is not set' }
$installDir = $installDir.TrimEnd('\')
$archive = Join-Path "{{ workdir }}" 'temurin-jdk.zip'

# Temurin's release file names the exact build: IMPLEMENTOR_VERSION="Temurin-21.0.5+11".
$releaseFile = Join-Path $installDir 'release'
$marker = 'IMPLEMENTOR_VERSION="Temurin-{0}"' -f $version
$alreadyInstalled = (Test-Path -LiteralPath $releaseFile) -and
    [bool](Select-String -LiteralPath $releaseFile -SimpleMatch -Pattern $marker -Quiet)

if ($alreadyInstalled) {
    Write-Output "Temurin $version is already installed in $installDir"
}
else {
    if (-not (Test-Path -LiteralPath $archive)) { throw "$archive not found: the download step did not run" }

    $parent = Split-Path -Parent $installDir
    New-Item -ItemType Directory -Path $parent -Force | Out-Null
    $staging = Join-Path $parent ('.jdk-staging-' + [guid]::NewGuid().ToString('N'))

    Add-Type -AssemblyName System.IO.Compression.FileSystem
    [IO.Compression.ZipFile]::ExtractToDirectory($archive, $staging)
    try {
        # The archive holds a single directory, e.g. jdk-21.0.5+11.
        $extracted = @(Get-ChildItem -LiteralPath $staging -Directory)
        if ($extracted.Count -ne 1) {
            throw "expected one top-level directory in $archive, found $($extracted.Count)"
        }
        if (Test-Path -LiteralPath $installDir) {
            Remove-Item -LiteralPath $installDir -Recurse -Force
        }
        Move-Item -LiteralPath $extracted[0].FullName -Destination $installDir
    }
    finally {
        Remove-Item -LiteralPath $staging -Recurse -Force -ErrorAction SilentlyContinue
    }
    Write-Output "Temurin $version installed in $installDir"
}

$javaExe = Join-Path $installDir 'bin\java.exe'
& $javaExe --version
if ($LASTEXITCODE -ne 0) { throw "$javaExe --version failed with exit code $LASTEXITCODE" }

# PATH: edit the raw registry value so that REG_EXPAND_SZ entries such as %SystemRoot% stay unexpanded
# ([Environment]::SetEnvironmentVariable would flatten them).
$environmentKey = 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Environment'
$rawPath = [string](Get-Item -LiteralPath $environmentKey).GetValue(
    'Path', '', [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
$javaBin = Join-Path $installDir 'bin'
$entries = @($rawPath -split ';' | Where-Object { $_ -ne '' })
if ($entries -notcontains $javaBin -and $entries -notcontains "$javaBin\") {
    $newPath = (@($javaBin) + $entries) -join ';'
    Set-ItemProperty -LiteralPath $environmentKey -Name 'Path' -Value $newPath -Type ExpandString
    Write-Output "Added $javaBin to the machine PATH"
}
else {
    Write-Output "$javaBin is already on the machine PATH"
}

# Also broadcasts the environment change to running processes that listen for it.
[Environment]::SetEnvironmentVariable('JAVA_HOME', $installDir, 'Machine')
Write-Output "JAVA_HOME=$installDir (machine)"
