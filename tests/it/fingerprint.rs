//! Fingerprints change exactly where their inputs change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bakery::catalog::graph;
use bakery::catalog::model::{ImageName, Script, StepAction, Target};
use bakery::catalog::Catalog;
use bakery::plan::Planner;

use crate::support::{shipped_copy, Project};

fn fingerprints(root: &Path) -> BTreeMap<ImageName, String> {
    let c = Catalog::load(root).unwrap_or_else(|d| panic!("{d}"));
    let t = Target::offline();
    let mut p = Planner::new(&c, &t);
    c.order
        .iter()
        .map(|n| {
            (
                n.clone(),
                p.plan(n)
                    .unwrap_or_else(|d| panic!("{d}"))
                    .fingerprint
                    .to_string(),
            )
        })
        .collect()
}

fn changed(
    a: &BTreeMap<ImageName, String>,
    b: &BTreeMap<ImageName, String>,
) -> BTreeSet<ImageName> {
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn one_byte_in_a_recipe_script_changes_exactly_its_users_and_their_descendants() {
    let p = shipped_copy();
    let before = fingerprints(p.path());
    assert_eq!(
        before,
        fingerprints(p.path()),
        "fingerprints are deterministic"
    );
    let catalog = Catalog::load(p.path()).expect("catalog");
    let mut tried = 0;
    for recipe in catalog.recipes.values() {
        // Every script file of the recipe, with the platform its step is limited to.
        let scripts = recipe.steps.iter().filter_map(|s| match &s.action {
            StepAction::Shell(Script::File(t)) | StepAction::PowerShell(Script::File(t)) => {
                Some((t.label.clone(), s.platform))
            }
            _ => None,
        });
        for (label, platform) in scripts {
            let file = p.path().join(&label);
            let original = std::fs::read(&file).expect("script");
            let mut edited = original.clone();
            edited.push(b'\n');
            std::fs::write(&file, &edited).expect("write");
            let after = fingerprints(p.path());
            std::fs::write(&file, &original).expect("restore");

            let users: BTreeSet<ImageName> = catalog
                .images
                .values()
                .filter(|i| i.recipes.iter().any(|u| u.recipe == recipe.name))
                .filter(|i| platform.is_none_or(|p| p == i.platform))
                .map(|i| i.name.clone())
                .collect();
            let expected = graph::with_descendants(&catalog.images, &users);
            assert_eq!(changed(&before, &after), expected, "editing {label}");
            tried += 1;
        }
    }
    assert!(tried >= 10, "only {tried} scripts edited");
}

#[test]
fn layout_and_comments_do_not_count_but_values_do() {
    let p = Project::fixture();
    let before = fingerprints(p.path());
    let base = crate::support::BASE_IMAGE;
    p.write(
        "images/base.toml",
        &format!(
            "# a comment\n{}",
            base.replace("platform = \"linux\"", "platform   =   \"linux\"  # same")
        ),
    );
    assert_eq!(
        before,
        fingerprints(p.path()),
        "comments and spacing are not inputs"
    );
    p.write(
        "images/base.toml",
        &base
            .replace("\"candidate\"", "\"stable\"")
            .replace("base image", "the base"),
    );
    assert_eq!(
        before,
        fingerprints(p.path()),
        "publish settings and the description are not inputs"
    );
    p.write(
        "images/base.toml",
        &base.replace("\"t3.small\"", "\"t3.medium\""),
    );
    let after = fingerprints(p.path());
    let names: Vec<String> = changed(&before, &after)
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["base", "child"]);
}

#[test]
fn a_parameter_default_changes_only_images_that_do_not_override_it() {
    let p = Project::fixture();
    let before = fingerprints(p.path());
    // base passes count = 2; child takes the default.
    p.write(
        "recipes/demo/recipe.toml",
        &crate::support::DEMO_RECIPE.replace("default = 1", "default = 3"),
    );
    let after = fingerprints(p.path());
    // recipe.toml itself is an input of both users; the rendered scripts differ only for child.
    let changed = changed(&before, &after);
    assert!(changed.contains(&ImageName::new_unchecked("child")));
    assert!(!changed.contains(&ImageName::new_unchecked("winimg")));
}
