// TeamCity versioned settings (.teamcity/settings.kts) for a platform team's images repository
// (images/, recipes/, bakery.toml): bake what changed, every night and on every change to the
// catalog.
//
// The agent needs bakery on its PATH and AWS credentials for the prod target of bakery.toml (an
// instance profile, or the target's `profile`).
//
// bakery detects TeamCity (TEAMCITY_VERSION is set in every build) and prints service messages: a
// block per phase, a test per check, and for every baked image
//   ##teamcity[setParameter name='bakery.<image>.version' value='...']
//   ##teamcity[setParameter name='bakery.<image>.ami.<region>' value='ami-...']
// and a buildProblem per image that failed. A build that depends on this one (snapshot or artifact
// dependency) reads them as %dep.<this build configuration's id>.bakery.<image>.ami.<region>%, e.g.
// to roll out a new agent AMI to a cloud profile.
//
// Stopping the build sends SIGTERM: bakery removes what the running bakes created (the build's
// process tree is killed only after TeamCity's own timeout).

import jetbrains.buildServer.configs.kotlin.*
import jetbrains.buildServer.configs.kotlin.buildSteps.script
import jetbrains.buildServer.configs.kotlin.triggers.schedule
import jetbrains.buildServer.configs.kotlin.triggers.vcs

version = "2024.03"

project {
    buildType(BakeImages)
}

object BakeImages : BuildType({
    name = "Bake images"
    description = "bakery: bake the images that are new or changed on the prod target"

    // One bake run at a time: a nightly build and a VCS-triggered one would bake the same images.
    maxRunningBuilds = 1

    artifactRules = "out/** => bake-report.zip"

    vcs {
        root(DslContext.settingsRoot)
    }

    params {
        // Set by the Plan step (service message) when something needs baking.
        param("bake.changes", "false")
        // The teamcity-agent recipe reads this server's version with a token: a read-only
        // user's access token, stored as a secure value (masked in the build log).
        password("env.TEAMCITY_TOKEN", "credentialsJSON:teamcity-readonly-token", display = ParameterDisplay.HIDDEN)
    }

    steps {
        // In a Kotlin string "$" starts a template: the shell's "$rc" is written ${'$'}rc.
        // `$?` and `$((...))` are not templates and stay as they are.
        script {
            name = "Plan"
            scriptContent = """
                rm -rf out
                rc=0
                bakery plan --target prod --exit-code || rc=$?
                if [ "${'$'}{rc:-0}" -eq 0 ]; then
                  echo "Nothing to bake."
                elif [ "${'$'}rc" -eq 10 ]; then
                  echo "##teamcity[setParameter name='bake.changes' value='true']"
                else
                  echo "plan failed (exit ${'$'}rc)" >&2
                  exit "${'$'}rc"
                fi
            """.trimIndent()
        }
        script {
            name = "Bake what changed"
            conditions {
                equals("bake.changes", "true")
            }
            // Parents before children; a failure skips only the failed image's descendants.
            scriptContent = """
                mkdir -p out
                bakery bake --changed --target prod --jobs 4 --report out/report --manifest out/manifest.json
            """.trimIndent()
        }
    }

    triggers {
        // Nightly even without a commit: a new source AMI (say a patched Windows Server) changes
        // the fingerprints too, and the Plan step finds it.
        schedule {
            schedulingPolicy = daily {
                hour = 2
                minute = 0
            }
            branchFilter = "+:<default>"
            triggerBuild = always()
            withPendingChangesOnly = false
        }
        vcs {
            branchFilter = "+:<default>"
            triggerRules = "+:images/**\n+:recipes/**\n+:bakery.toml"
        }
    }

    failureConditions {
        // Windows bakes take most of an hour each; --jobs 4 runs several at once.
        executionTimeoutMin = 240
    }
})
