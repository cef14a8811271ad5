//! Broken inputs, table-driven: each case edits the valid fixture project and asserts the exact
//! set of (error kind, `path:line:col`) that loading reports, all in one run.

use bakery::catalog::diag::ErrorKind::{self, *};
use bakery::catalog::Catalog;

use crate::support::Project;

enum Edit {
    /// Replace the one occurrence of `old` in `file` with `new`.
    Replace(&'static str, &'static str, &'static str),
    /// Write `file` with `content`.
    Write(&'static str, &'static str),
}
use Edit::*;

struct Case {
    name: &'static str,
    edits: &'static [Edit],
    expect: &'static [(ErrorKind, &'static str)],
}

const B: &str = "images/base.toml";
const C: &str = "images/child.toml";
const W: &str = "images/winimg.toml";
const R: &str = "recipes/demo/recipe.toml";
const G: &str = "recipes/demo/greet.sh";
const WR: &str = "recipes/win/recipe.toml";
const T: &str = "bakery.toml";

const CASES: &[Case] = &[
    Case { name: "toml syntax", edits: &[Replace(B, "version = \"1.0\"", "version = = \"1.0\"")], expect: &[(Syntax, "images/base.toml:3:11")] },
    Case { name: "unknown field", edits: &[Replace(B, "instance_types = [", "instance_type = [")], expect: &[(UnknownField, "images/base.toml:10:1")] },
    Case { name: "wrong type", edits: &[Replace(B, "version = \"1.0\"", "version = 1.0")], expect: &[(WrongType, "images/base.toml:3:11")] },
    Case { name: "missing field", edits: &[Replace(B, "version = \"1.0\"\n", "")], expect: &[(MissingField, "images/base.toml:1:1")] },
    Case { name: "unknown enum value", edits: &[Replace(B, "platform = \"linux\"", "platform = \"linx\"")], expect: &[(InvalidValue, "images/base.toml:4:12")] },
    Case { name: "unknown recipe", edits: &[Replace(B, "use = \"demo\"", "use = \"dmeo\"")], expect: &[(UnknownRecipe, "images/base.toml:14:7")] },
    Case { name: "unknown recipe parameter", edits: &[Replace(B, "greeting = \"hello\"", "greting = \"hello\"")], expect: &[(UnknownParam, "images/base.toml:15:10")] },
    Case { name: "missing recipe parameter", edits: &[Replace(W, "with = { server_url = \"https://tc.example.com\" }\n", "")], expect: &[(MissingParam, "images/winimg.toml:12:7")] },
    Case { name: "ill-typed recipe parameter", edits: &[Replace(B, "count = 2", "count = \"2\"")], expect: &[(ParamType, "images/base.toml:15:38")] },
    Case { name: "imds_v1 without a reason", edits: &[Replace(B, "channels = [\"candidate\"]\n", "channels = [\"candidate\"]\nimds_v1 = \" \"\n")], expect: &[(InvalidValue, "images/base.toml:23:11")] },
    Case { name: "share ARNs that name no OU or organization", edits: &[Replace(B, "channels = [\"candidate\"]\n", "channels = [\"candidate\"]\nshare = { ous = [\"arn:aws:organizations::111122223333:ou/o-abc123/r-ab12\"], organizations = [\"arn:aws:organizations::111122223333:ou/o-abc123/ou-ab12-1\"] }\n")], expect: &[(InvalidValue, "images/base.toml:23:18"), (InvalidValue, "images/base.toml:23:94")] },
    Case { name: "secret literal", edits: &[Replace(B, "count = 2 }", "count = 2, token = \"hunter2\" }")], expect: &[(SecretLiteral, "images/base.toml:15:49")] },
    Case { name: "template syntax in a script file", edits: &[Replace(G, "{{ params.greeting }}", "{{ params.greeting }")], expect: &[(TemplateSyntax, "recipes/demo/greet.sh:2:26")] },
    Case { name: "undefined variable in a script file", edits: &[Replace(G, "image.name", "image.nmae")], expect: &[(UndefinedVariable, "recipes/demo/greet.sh:2:37")] },
    Case { name: "undefined parameter in an inline script", edits: &[Replace(R, "{{ params.count }}", "{{ params.cuont }}")], expect: &[(UndefinedVariable, "recipes/demo/recipe.toml:22:29")] },
    Case { name: "template syntax in an inline script", edits: &[Replace(R, "{{ params.count }}", "{{ params.count }")], expect: &[(TemplateSyntax, "recipes/demo/recipe.toml:22:42")] },
    Case { name: "secret() of a non-secret parameter", edits: &[Replace(R, "secret(name='token')", "secret(name='count')")], expect: &[(TemplateError, "recipes/demo/recipe.toml:22:48")] },
    Case { name: "missing script", edits: &[Replace(R, "script = \"greet.sh\"", "script = \"gret.sh\"")], expect: &[(MissingFile, "recipes/demo/recipe.toml:18:20")] },
    Case { name: "missing file source", edits: &[Replace(R, "source = \"files\"", "source = \"filez\"")], expect: &[(MissingFile, "recipes/demo/recipe.toml:25:19")] },
    Case { name: "script path leaves the recipe", edits: &[Replace(R, "script = \"greet.sh\"", "script = \"../win/recipe.toml\"")], expect: &[(InvalidValue, "recipes/demo/recipe.toml:18:20")] },
    Case { name: "step not available on the platform", edits: &[Replace(R, "[[step]]\nname = \"greet\"", "[[step]]\npowershell = { inline = \"Write-Output hi\" }\n\n[[step]]\nname = \"greet\"")], expect: &[(PlatformMismatch, "recipes/demo/recipe.toml:17:1")] },
    Case { name: "recipe and parent not for the image's platform", edits: &[Replace(C, "platform = \"linux\"", "platform = \"windows\"")], expect: &[(PlatformMismatch, "images/child.toml:12:7")] },
    Case { name: "parent of another platform", edits: &[Replace(C, "platform = \"linux\"", "platform = \"windows\""), Replace(C, "use = \"demo\"\nwith = { greeting = \"hi\" }", "use = \"win\"\nwith = { server_url = \"https://tc\" }")], expect: &[(PlatformMismatch, "images/child.toml:6:9")] },
    Case { name: "invalid semver requirement", edits: &[Replace(C, "base@^1", "base@^1.x.y.z")], expect: &[(InvalidSemver, "images/child.toml:6:15")] },
    Case { name: "unknown parent image", edits: &[Replace(C, "base@^1", "bsae@^1")], expect: &[(UnknownImage, "images/child.toml:6:10")] },
    Case { name: "parent without a version", edits: &[Replace(C, "base@^1", "base")], expect: &[(InvalidValue, "images/child.toml:6:9")] },
    Case { name: "cycle in the image graph", edits: &[Replace(B, "ssm_parameter = \"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64\"", "image = \"child@^2\"")], expect: &[(Cycle, "images/base.toml:7:9"), (Cycle, "images/child.toml:6:9")] },
    Case { name: "duplicate image names", edits: &[Write("images/base-copy.toml", crate::support::BASE_IMAGE)], expect: &[(DuplicateImage, "images/base.toml:1:8")] },
    Case { name: "malformed instance type", edits: &[Replace(B, "\"t3.small\"", "\"t3-small\"")], expect: &[(InvalidInstanceType, "images/base.toml:10:31")] },
    Case { name: "malformed region in publish", edits: &[Replace(B, "regions = [\"us-east-1\"]", "regions = [\"us-east\"]")], expect: &[(InvalidRegion, "images/base.toml:21:12")] },
    Case { name: "malformed region in a target", edits: &[Replace(T, "regions = [\"us-east-1\"]", "regions = [\"useast1\"]")], expect: &[(InvalidRegion, "bakery.toml:2:12")] },
    Case {
        name: "several errors in one file",
        edits: &[Replace(B, "instance_types = [", "instance_type = ["), Replace(B, "\"linux\"", "\"linx\""), Replace(B, "[\"us-east-1\"]", "[\"us-east\"]"), Replace(B, "use = \"demo\"", "use = \"dmeo\"")],
        expect: &[(UnknownField, "images/base.toml:10:1"), (InvalidValue, "images/base.toml:4:12"), (InvalidRegion, "images/base.toml:21:12"), (UnknownRecipe, "images/base.toml:14:7")],
    },
    Case {
        name: "errors in several files at once",
        edits: &[Replace(B, "version = \"1.0\"", "version = 1.0"), Replace(W, "ami-0123456789abcdef0", "ami-xyz"), Replace(R, "timeout = \"5m\"", "timeot = \"5m\""), Replace(T, "ssh_port = 2222", "ssh_prot = 2222")],
        expect: &[(WrongType, "images/base.toml:3:11"), (InvalidValue, "images/winimg.toml:6:7"), (UnknownField, "recipes/demo/recipe.toml:19:1"), (UnknownField, "bakery.toml:5:1")],
    },
    Case { name: "unknown field in a step", edits: &[Replace(R, "timeout = \"5m\"", "timeot = \"5m\"")], expect: &[(UnknownField, "recipes/demo/recipe.toml:19:1")] },
    Case { name: "invalid duration", edits: &[Replace(R, "timeout = \"5m\"", "timeout = \"5 minutes\"")], expect: &[(InvalidValue, "recipes/demo/recipe.toml:19:11")] },
    Case { name: "two step kinds", edits: &[Replace(R, "shell = { script = \"greet.sh\" }\n", "shell = { script = \"greet.sh\" }\nrestart = {}\n")], expect: &[(ConflictingFields, "recipes/demo/recipe.toml:19:1")] },
    Case { name: "step without a kind", edits: &[Replace(R, "shell = { script = \"greet.sh\" }\n", "")], expect: &[(MissingField, "recipes/demo/recipe.toml:16:1")] },
    Case { name: "check with two kinds", edits: &[Replace(B, "file = \"/etc/os-release\"\n", "file = \"/etc/os-release\"\nport = 22\n")], expect: &[(ConflictingFields, "images/base.toml:19:1")] },
    Case { name: "check option of another kind", edits: &[Replace(B, "file = \"/etc/os-release\"\n", "file = \"/etc/os-release\"\nstate = \"running\"\n")], expect: &[(ConflictingFields, "images/base.toml:19:1")] },
    Case { name: "windows-only check on linux", edits: &[Replace(B, "file = \"/etc/os-release\"", "hotfix = \"KB5005112\"")], expect: &[(PlatformMismatch, "images/base.toml:18:1")] },
    Case { name: "invalid check regex", edits: &[Replace(R, "stdout_contains = \"{{ params.greeting }}\"", "stdout_matches = \"(unclosed\"")], expect: &[(InvalidValue, "recipes/demo/recipe.toml:29:18")] },
    Case { name: "missing source", edits: &[Replace(B, "[source]\nssm_parameter = \"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64\"\n", "")], expect: &[(MissingField, "images/base.toml:1:1")] },
    Case { name: "two sources", edits: &[Replace(C, "[source]\n", "[source]\nami = \"ami-0123456789abcdef0\"\n")], expect: &[(ConflictingFields, "images/child.toml:7:1")] },
    Case { name: "malformed AMI id", edits: &[Replace(W, "ami-0123456789abcdef0", "ami-xyz")], expect: &[(InvalidValue, "images/winimg.toml:6:7")] },
    Case { name: "version with a patch", edits: &[Replace(B, "version = \"1.0\"", "version = \"1.0.3\"")], expect: &[(InvalidValue, "images/base.toml:3:11")] },
    Case { name: "recipe folder without recipe.toml", edits: &[Write("recipes/empty/notes.txt", "x")], expect: &[(MissingFile, "recipes/empty:1:1")] },
    Case { name: "recipe default of the wrong type", edits: &[Replace(R, "default = 1", "default = \"one\"")], expect: &[(ParamType, "recipes/demo/recipe.toml:10:11")] },
    Case { name: "secret default that is a literal", edits: &[Replace(R, "default = { ssm = \"/demo/token\" }", "default = \"s3cr3t\"")], expect: &[(SecretLiteral, "recipes/demo/recipe.toml:14:11")] },
    Case { name: "parameter without a type", edits: &[Replace(R, "type = \"int\"\n", "")], expect: &[(MissingField, "recipes/demo/recipe.toml:8:1")] },
    Case { name: "unknown target field", edits: &[Replace(T, "ssh_port = 2222", "ssh_prot = 2222")], expect: &[(UnknownField, "bakery.toml:5:1")] },
    Case { name: "ingress open to the internet", edits: &[Replace(T, "ssh_port = 2222\n", "ssh_port = 2222\nssh_cidr = \"0.0.0.0/0\"\n")], expect: &[(InvalidValue, "bakery.toml:6:12")] },
    Case { name: "consumer fields", edits: &[Replace(T, "ssh_port = 2222\n", "ssh_port = 2222\n[[targets.sandbox.consumers]]\naccount = \"2222\"\nrole_arn = \"arn:aws:iam::222222222222:user/x\"\nregions = [\"eu-west-1\"]\nexternal_id = \"x\"\n")], expect: &[(InvalidValue, "bakery.toml:7:11"), (InvalidValue, "bakery.toml:8:12"), (InvalidRegion, "bakery.toml:9:12"), (InvalidValue, "bakery.toml:10:15")] },
    Case { name: "consumer role in another account", edits: &[Replace(T, "ssh_port = 2222\n", "ssh_port = 2222\n[[targets.sandbox.consumers]]\naccount = \"222222222222\"\nrole_arn = \"arn:aws:iam::333333333333:role/bakery\"\n")], expect: &[(InvalidValue, "bakery.toml:8:12")] },
    Case { name: "reserved ssm prefix", edits: &[Replace(T, "ssh_port = 2222\n", "ssh_port = 2222\nssm_prefix = \"/aws/bakery\"\n")], expect: &[(InvalidValue, "bakery.toml:6:14")] },
    Case { name: "missing user data file", edits: &[Replace(B, "communicator = \"ssh\"\n", "communicator = \"ssh\"\nuser_data = \"user-data/missing.sh\"\n")], expect: &[(MissingFile, "images/base.toml:12:13")] },
    Case { name: "unknown windows update category", edits: &[Replace(WR, "Write-Output '{{ params.server_url }}'\" }\n", "Write-Output '{{ params.server_url }}'\" }\n\n[[step]]\nwindows_update = { categories = [\"SecurityUpdate\"] }\n")], expect: &[(InvalidValue, "recipes/win/recipe.toml:12:34")] },
    Case { name: "download without sha256", edits: &[Replace(R, "stdout_contains = \"{{ params.greeting }}\"\n", "stdout_contains = \"{{ params.greeting }}\"\n\n[[step]]\ndownload = { url = \"https://example.com/x\", destination = \"x\" }\n")], expect: &[(MissingField, "recipes/demo/recipe.toml:32:12")] },
    Case { name: "ssh settings with the ssm communicator", edits: &[Replace(W, "instance_types = [\"m6i.large\"]\n", "instance_types = [\"m6i.large\"]\ncommunicator = \"ssm\"\nssh = { user = \"Administrator\" }\n")], expect: &[(ConflictingFields, "images/winimg.toml:11:7")] },
    Case {
        name: "a recipe after a finalize recipe",
        edits: &[Write("recipes/gen/recipe.toml", "platforms = [\"linux\"]\nfinalize = true\n\n[[step]]\nshell = { inline = \"cloud-init clean\" }\n"), Replace(B, "[[recipe]]\nuse = \"demo\"", "[[recipe]]\nuse = \"gen\"\n\n[[recipe]]\nuse = \"demo\"")],
        expect: &[(InvalidValue, "images/base.toml:17:7")],
    },
    Case {
        name: "a finalize recipe with checks",
        edits: &[Write("recipes/gen/recipe.toml", "platforms = [\"linux\"]\nfinalize = true\n\n[[step]]\nshell = { inline = \"cloud-init clean\" }\n\n[[check]]\nport = 22\n")],
        expect: &[(ConflictingFields, "recipes/gen/recipe.toml:7:1")],
    },
    Case { name: "include reaches outside the template", edits: &[Replace(G, "#!/bin/bash\n", "#!/bin/bash\n{% include \"t\" %}\n")], expect: &[(TemplateSyntax, "recipes/demo/greet.sh:2:1")] },
    Case { name: "get_env would depend on the baking host", edits: &[Replace(G, "{{ image.name }}", "{{ get_env(name='HOME') }}")], expect: &[(TemplateError, "recipes/demo/greet.sh:2:37")] },
    Case { name: "a secret outside a script", edits: &[Replace(R, "name = \"greet\"\n", "name = \"greet\"\nenv = { T = \"{{ params.token }}\" }\n")], expect: &[(InvalidValue, "recipes/demo/recipe.toml:18:17")] },
    Case { name: "a misspelt step kind is one error", edits: &[Replace(R, "shell = { script = \"greet.sh\" }", "shel = { script = \"greet.sh\" }")], expect: &[(UnknownField, "recipes/demo/recipe.toml:18:1")] },
    Case { name: "CRLF line endings", edits: &[Write("images/crlf.toml", "name = \"app\r\nversion = \"1.0\"\r\n")], expect: &[(Syntax, "images/crlf.toml:1:12")] },
    Case { name: "escapes in an inline template point at the value", edits: &[Replace(R, "echo {{ params.count }}", "echo \\\"x\\\" {{ params.cuont }}")], expect: &[(UndefinedVariable, "recipes/demo/recipe.toml:22:21")] },
    Case { name: "parent of another architecture", edits: &[Replace(C, "platform = \"linux\"\n", "platform = \"linux\"\narchitecture = \"arm64\"\n")], expect: &[(InvalidValue, "images/child.toml:7:9")] },
];

fn run_case(case: &Case) -> Result<(), String> {
    let p = Project::fixture();
    for e in case.edits {
        match e {
            Replace(file, old, new) => {
                let path = p.path().join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
                let n = text.matches(old).count();
                if n != 1 {
                    return Err(format!("test bug: `{old}` occurs {n} times in {file}"));
                }
                std::fs::write(&path, text.replacen(old, new, 1)).map_err(|e| e.to_string())?;
            }
            Write(file, content) => p.write(file, content),
        }
    }
    let diags = match Catalog::load(p.path()) {
        Ok(_) => return Err("loaded without errors".into()),
        Err(d) => d,
    };
    let mut got: Vec<(ErrorKind, String)> = diags.iter().map(|d| (d.kind, d.location())).collect();
    let mut want: Vec<(ErrorKind, String)> = case
        .expect
        .iter()
        .map(|(k, l)| (*k, l.to_string()))
        .collect();
    got.sort_by(|a, b| (a.1.clone(), a.0.as_str()).cmp(&(b.1.clone(), b.0.as_str())));
    want.sort_by(|a, b| (a.1.clone(), a.0.as_str()).cmp(&(b.1.clone(), b.0.as_str())));
    if got != want {
        return Err(format!("want {want:?}\n got {got:?}\n{diags}"));
    }
    // Every diagnostic shows its source line, a caret and (for most) a hint.
    for d in diags.iter() {
        let text = d.to_string();
        if !text.contains(&format!("--> {}", d.location())) {
            return Err(format!("no location line in:\n{text}"));
        }
    }
    Ok(())
}

#[test]
fn the_fixture_is_valid() {
    let p = Project::fixture();
    let c = Catalog::load(p.path()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(c.images.len(), 3);
    assert_eq!(
        c.order.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["base", "child", "winimg"]
    );
}

#[test]
fn broken_inputs_are_reported_with_kind_and_place() {
    assert!(CASES.len() >= 40, "only {} cases", CASES.len());
    let failures: Vec<String> = CASES
        .iter()
        .filter_map(|c| run_case(c).err().map(|e| format!("--- {}: {e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn hints_say_what_was_meant() {
    let p = Project::fixture();
    let base = crate::support::BASE_IMAGE
        .replace("instance_types = [", "instance_type = [")
        .replace("use = \"demo\"", "use = \"dmeo\"")
        .replace("greeting = \"hello\"", "greting = \"hello\"");
    p.write("images/base.toml", &base);
    let d = Catalog::load(p.path()).unwrap_err();
    let hints: Vec<String> = d.iter().filter_map(|d| d.hint.clone()).collect();
    assert!(
        hints.contains(&"did you mean `instance_types`?".to_string()),
        "{hints:?}"
    );
    assert!(
        hints.contains(&"did you mean `demo`?".to_string()),
        "{hints:?}"
    );
    let shown = d.to_string();
    assert!(
        shown.contains("10 | instance_type = [\"t3.micro\", \"t3.small\"]"),
        "{shown}"
    );
    assert!(shown.contains("   | ^^^^^^^^^^^^^\n"), "{shown}");
}

#[test]
fn secrets_never_appear_in_errors() {
    let p = Project::fixture();
    p.write(
        "images/base.toml",
        &crate::support::BASE_IMAGE
            .replace("count = 2 }", "count = 2, token = \"hunter2-s3cret\" }"),
    );
    let d = Catalog::load(p.path()).unwrap_err();
    assert_eq!(d.len(), 1);
    let msg = &d.0[0];
    assert_eq!(msg.kind, SecretLiteral);
    assert!(!msg.message.contains("hunter2"), "{}", msg.message);
    assert!(!msg.hint.clone().unwrap_or_default().contains("hunter2"));
}

#[test]
fn links_in_recipe_files_are_refused() {
    let p = Project::fixture();
    std::os::unix::fs::symlink("/etc/passwd", p.path().join("recipes/demo/files/passwd"))
        .expect("symlink");
    let d = Catalog::load(p.path()).unwrap_err();
    let got: Vec<_> = d.iter().map(|d| (d.kind, d.location())).collect();
    assert_eq!(
        got,
        vec![(InvalidValue, "recipes/demo/recipe.toml:25:19".to_string())],
        "{d}"
    );
    assert!(
        d.to_string().contains("links or special files (passwd)"),
        "{d}"
    );
}

/// A symbolic link anywhere on the way is refused, not only as the last component: a linked
/// folder inside a recipe (an upload source reaching through it, a script inside it), and an
/// image's user data file. Each error is located at the key that names the path.
#[test]
fn links_on_the_way_to_a_recipe_file_or_user_data_are_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("credentials"), "secret").expect("write");
    std::fs::write(outside.path().join("greet.sh"), "echo hi\n").expect("write");

    // An upload source through a linked folder.
    let p = Project::fixture();
    p.write(
        "recipes/demo/recipe.toml",
        &crate::support::fixtures::DEMO_RECIPE.replace(
            "file = { source = \"files\", destination = \"app\", template = true }",
            "file = { source = \"linked/credentials\", destination = \"app\" }",
        ),
    );
    std::os::unix::fs::symlink(outside.path(), p.path().join("recipes/demo/linked"))
        .expect("symlink");
    let d = Catalog::load(p.path()).unwrap_err();
    let got: Vec<_> = d.iter().map(|d| (d.kind, d.location())).collect();
    assert_eq!(
        got,
        vec![(InvalidValue, "recipes/demo/recipe.toml:25:19".to_string())],
        "{d}"
    );
    assert!(
        d.to_string()
            .contains("`recipes/demo/linked` is a symbolic link"),
        "{d}"
    );

    // A script inside a linked folder.
    let p = Project::fixture();
    p.write(
        "recipes/demo/recipe.toml",
        &crate::support::fixtures::DEMO_RECIPE.replace(
            "shell = { script = \"greet.sh\" }",
            "shell = { script = \"linked/greet.sh\" }",
        ),
    );
    std::os::unix::fs::symlink(outside.path(), p.path().join("recipes/demo/linked"))
        .expect("symlink");
    let d = Catalog::load(p.path()).unwrap_err();
    assert!(
        d.to_string()
            .contains("`recipes/demo/linked` is a symbolic link"),
        "{d}"
    );
    assert!(
        d.iter()
            .all(|d| d.location().starts_with("recipes/demo/recipe.toml:")),
        "{d}"
    );

    // User data that is a link.
    let p = Project::fixture();
    p.write(
        "images/base.toml",
        &crate::support::BASE_IMAGE.replace(
            "communicator = \"ssh\"",
            "communicator = \"ssh\"\nuser_data = \"user-data/boot.sh\"",
        ),
    );
    std::fs::create_dir_all(p.path().join("images/user-data")).expect("mkdir");
    std::os::unix::fs::symlink(
        outside.path().join("greet.sh"),
        p.path().join("images/user-data/boot.sh"),
    )
    .expect("symlink");
    let d = Catalog::load(p.path()).unwrap_err();
    let got: Vec<_> = d.iter().map(|d| (d.kind, d.location())).collect();
    assert_eq!(
        got,
        vec![(InvalidValue, "images/base.toml:12:13".to_string())],
        "{d}"
    );
    assert!(
        d.to_string()
            .contains("`images/user-data/boot.sh` is a symbolic link"),
        "{d}"
    );
}

/// Scripts are parsed at validation, after rendering: a bash `if` left open in a script file, a
/// template that renders to broken bash, and an unclosed PowerShell block inline in a recipe are
/// errors located in the file that holds them, at the construct left open.
#[test]
fn script_syntax_errors_are_located_before_launch() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "recipes/demo/greet.sh",
            "#!/bin/bash\necho start\nif [ -n {{ params.greeting | sh }} ]; then\n  echo hi\n",
            "recipes/demo/greet.sh:3:1",
            "bash syntax error: `if` is never closed: missing `fi`",
        ),
        (
            "recipes/demo/greet.sh",
            "#!/bin/bash\n{% if params.count > 0 %}if true; then{% endif %}\necho ok\n",
            "recipes/demo/greet.sh:2:1",
            "rendered, it is line 2 of the script: `if true; then`",
        ),
        (
            "recipes/demo/greet.sh",
            "#!/bin/bash\necho \"unclosed {{ params.greeting | sh }}\n",
            "recipes/demo/greet.sh:2:",
            "bash syntax error",
        ),
    ];
    for (file, text, at, needle) in cases {
        let p = Project::fixture();
        p.write(file, text);
        let d = Catalog::load(p.path()).unwrap_err();
        let got: Vec<_> = d.iter().map(|d| (d.kind, d.location())).collect();
        assert_eq!(got.len(), 1, "{d}");
        assert_eq!(got[0].0, ScriptSyntax, "{d}");
        assert!(got[0].1.starts_with(at), "{text:?}: {d}");
        assert!(d.to_string().contains(needle), "{d}");
    }
    // A shell script as user data.
    let p = Project::fixture();
    p.write(
        "images/base.toml",
        &crate::support::BASE_IMAGE.replace(
            "communicator = \"ssh\"",
            "communicator = \"ssh\"\nuser_data = \"user-data/boot.sh\"",
        ),
    );
    p.write(
        "images/user-data/boot.sh",
        "#!/bin/bash\nset -e\nwhile true; do\n  sleep 1\n",
    );
    let d = Catalog::load(p.path()).unwrap_err();
    let got: Vec<_> = d.iter().map(|d| (d.kind, d.location())).collect();
    assert_eq!(
        got,
        vec![(ScriptSyntax, "images/user-data/boot.sh:3:13".to_string())],
        "{d}"
    );

    // PowerShell, inline in the recipe's TOML.
    let p = Project::fixture();
    p.write(
        "recipes/win/recipe.toml",
        &crate::support::fixtures::WIN_RECIPE.replace(
            "inline = \"Write-Output '{{ params.server_url }}'\"",
            "inline = \"if ($true) { Write-Output {{ params.server_url | ps }}\"",
        ),
    );
    let d = Catalog::load(p.path()).unwrap_err();
    let got: Vec<_> = d.iter().map(|d| (d.kind, d.location())).collect();
    assert_eq!(
        got,
        vec![(ScriptSyntax, "recipes/win/recipe.toml:9:37".to_string())],
        "{d}"
    );
    assert!(
        d.to_string()
            .contains("PowerShell syntax error: `{` is never closed: missing `}`"),
        "{d}"
    );
}

/// Warnings do not stop validation: a parameter put into a script without `| sh` / `| ps`, and
/// PowerShell's well-known traps, each located.
#[test]
fn unquoted_parameters_and_script_traps_are_located_warnings() {
    let p = Project::fixture();
    p.write(
        "recipes/win/recipe.toml",
        &crate::support::fixtures::WIN_RECIPE.replace(
            "inline = \"Write-Output '{{ params.server_url }}'\"",
            "inline = \"$ErrorActionPreference = 'Continue'\\nWrite-Output '{{ params.server_url }}'\"",
        ),
    );
    let c = Catalog::load(p.path()).unwrap_or_else(|d| panic!("{d}"));
    let got: Vec<_> = c.warnings.iter().map(|d| (d.kind, d.location())).collect();
    assert_eq!(
        got,
        vec![
            (UnquotedParam, "recipes/demo/greet.sh:2:7".to_string()),
            (ScriptTrap, "recipes/win/recipe.toml:9:26".to_string()),
            // The inline string has an escape (\n): positions in it are the string's start.
            (UnquotedParam, "recipes/win/recipe.toml:9:26".to_string()),
        ],
        "{}",
        c.warnings
    );
    let text = c.warnings.to_string();
    assert!(
        text.contains(
            "warning[unquoted-param]: parameter `greeting` goes into the bash script unquoted"
        ),
        "{text}"
    );
    assert!(
        text.contains("write {{ params.server_url | ps }}"),
        "{text}"
    );
    // Quoted, nothing to say.
    let p = Project::fixture();
    p.write(
        "recipes/demo/greet.sh",
        "#!/bin/bash\necho {{ params.greeting | sh }} > \"{{ workdir }}/greeting\"\n",
    );
    p.write(
        "recipes/win/recipe.toml",
        &crate::support::fixtures::WIN_RECIPE.replace(
            "inline = \"Write-Output '{{ params.server_url }}'\"",
            "inline = \"Write-Output {{ params.server_url | ps }}\"",
        ),
    );
    let c = Catalog::load(p.path()).unwrap_or_else(|d| panic!("{d}"));
    assert!(c.warnings.is_empty(), "{}", c.warnings);
}

/// The shipped catalog validates clean: no error and no warning.
#[test]
fn the_shipped_catalog_has_no_warnings() {
    let c = Catalog::load(&crate::support::repo_root()).unwrap_or_else(|d| panic!("{d}"));
    assert!(c.warnings.is_empty(), "{}", c.warnings);
}

/// `windows_update` lists: a KB article that is not one, an unknown classification (with a
/// hint), and a template that renders to an unknown classification, each located.
#[test]
fn windows_update_lists_are_checked_when_loaded_or_rendered() {
    let with = |step: &str| {
        let p = Project::fixture();
        p.write(
            WR,
            &format!(
                "{}\n[params.cats]\ntype = \"list\"\ndefault = [\"SecurityUpdates\", \"Security\"]\n\n[[step]]\n{step}\n",
                crate::support::fixtures::WIN_RECIPE
            ),
        );
        Catalog::load(p.path()).unwrap_err()
    };
    let d = with("windows_update = { exclude_kbs = [\"KB5034439\", \"5034440x\"] }");
    let got: Vec<_> = d.iter().map(|d| (d.kind, d.location())).collect();
    assert_eq!(
        got,
        vec![(InvalidValue, "recipes/win/recipe.toml:16:48".to_string())],
        "{d}"
    );
    assert!(
        d.to_string()
            .contains("`5034440x` is not a KB article number"),
        "{d}"
    );

    let d = with("windows_update = { categories = [\"SecurityUpdate\"] }");
    assert!(
        d.to_string()
            .contains("unknown update category `SecurityUpdate`"),
        "{d}"
    );
    assert!(
        d.to_string().contains("did you mean `SecurityUpdates`?"),
        "{d}"
    );

    let d = with("windows_update = { categories = \"{{ params.cats | join(sep=',') }}\" }");
    let got: Vec<_> = d.iter().map(|d| (d.kind, d.location())).collect();
    assert_eq!(
        got,
        vec![(InvalidValue, "recipes/win/recipe.toml:16:34".to_string())],
        "{d}"
    );
    assert!(
        d.to_string()
            .contains("after rendering: unknown update category `Security`"),
        "{d}"
    );
}

/// `[inputs.<name>]` mistakes are located: a bad name, no source or two, a URL that is not
/// one, a parameter name that is not one, an unknown body, a body or token for an SSM input, a
/// token variable that is not a variable name (a pasted token); and a template that reads an input nobody declared
/// is an error of the template.
#[test]
fn live_input_mistakes_are_located() {
    let p = Project::fixture();
    p.write(
        "images/base.toml",
        &format!(
            "{}\n[inputs.Agent]\nhttp = \"https://example.com/a.zip\"\n\n[inputs.both]\nhttp = \"https://example.com/a\"\nssm_parameter = \"/a/b\"\n\n[inputs.url]\nhttp = \"ftp://example.com/a.zip\"\n\n[inputs.param]\nssm_parameter = \"no-slash\"\n\n[inputs.how]\nhttp = \"https://example.com/v\"\nbody = \"json\"\n\n[inputs.ssm_text]\nssm_parameter = \"/a/b\"\nbody = \"text\"\n\n[inputs.token]\nhttp = \"https://example.com/v\"\nbody = \"text\"\nbearer_token_env = \"Bearer abc123\"\n",
            crate::support::BASE_IMAGE
        ),
    );
    let d = Catalog::load(p.path()).unwrap_err();
    let shown = d.to_string();
    for want in [
        "`Agent` is not an input name",
        "input `both` needs exactly one of http, ssm_parameter",
        "`ftp://example.com/a.zip` is not an http(s) URL",
        "`no-slash` is not a fully qualified SSM parameter name",
        "body = \"json\" is not a way to read a body",
        "`body` is for an http input; input `ssm_text` reads an SSM parameter",
        "bearer_token_env is not an environment variable name",
    ] {
        assert!(shown.contains(want), "{want}: {shown}");
    }
    assert!(
        !shown.contains("abc123"),
        "a pasted token is not repeated: {shown}"
    );
    assert!(shown.contains("images/base.toml:"), "{shown}");
    assert_eq!(d.len(), 7, "{shown}");
}
