//! Loading a project: read every file, validate each, then the cross-file rules (duplicate
//! names, unknown parents, cycles) and a render of every template, all problems in one report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::diag::{did_you_mean, Diagnostic, Diagnostics, ErrorKind};
use super::doc::{Doc, DocPath};
use super::graph;
use super::image::{self, RecipeSet};
use super::model::{Image, ImageName, Recipe, RecipeName, Target};
use super::recipe::{self, read_source};
use super::target;

/// A validated project: every image, recipe and target, and the images in dependency order.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub root: PathBuf,
    pub targets: BTreeMap<String, Target>,
    pub images: BTreeMap<ImageName, Image>,
    pub recipes: BTreeMap<RecipeName, Recipe>,
    /// Parents before children.
    pub order: Vec<ImageName>,
    /// What validation found that does not stop a bake (script traps, unquoted parameters).
    pub warnings: Diagnostics,
}

impl Catalog {
    /// Loads and validates the project at `root`; every problem in every file, or the catalog.
    pub fn load(root: &Path) -> Result<Catalog, Diagnostics> {
        let mut diags = Diagnostics::default();
        let targets = load_targets(root, &mut diags);
        let (folders, recipes) = load_recipes(root, &mut diags);
        let mut docs = BTreeMap::new();
        // Names of every image file, valid or not: a child of a broken image is not told its
        // parent is unknown on top of the parent's own errors.
        let mut declared = BTreeSet::new();
        let mut images: BTreeMap<ImageName, Image> = BTreeMap::new();
        let set = RecipeSet {
            folders: &folders,
            valid: &recipes,
        };
        for rel in list(root, "images", |p| {
            p.extension().is_some_and(|e| e == "toml") && recipe::plain_kind(p) == Some(false)
        }) {
            if let Some(stem) = rel.file_stem() {
                declared.insert(stem.to_string_lossy().to_string());
            }
            let Some(src) = read_source(root, &rel, &mut diags) else {
                continue;
            };
            let Some(mut doc) = Doc::parse(src, &mut diags) else {
                continue;
            };
            declared.extend(doc.string(&DocPath::root().k("name")));
            let Some(img) = image::validate(root, &rel, &mut doc, &set, &mut diags) else {
                continue;
            };
            if let Some(first) = images.get(&img.name) {
                let d = doc
                    .at(
                        &DocPath::root().k("name"),
                        ErrorKind::DuplicateImage,
                        format!(
                            "image `{}` is also defined in {}",
                            img.name,
                            first.file.display()
                        ),
                    )
                    .with_hint("image names are unique across the catalog");
                diags.push(d);
                continue;
            }
            docs.insert(img.name.clone(), doc);
            images.insert(img.name.clone(), img);
        }
        check_parents(&images, &docs, &declared, &mut diags);
        let order = check_cycles(&mut images, &docs, &mut diags);
        let mut catalog = Catalog {
            root: root.to_path_buf(),
            targets,
            images,
            recipes,
            order,
            warnings: Diagnostics::default(),
        };
        // Render every image once, so template errors that depend on parameters surface now,
        // and every script is parsed.
        let offline = Target::offline();
        let mut warnings = Diagnostics::default();
        let mut planner = crate::plan::Planner::new(&catalog, &offline);
        for name in &catalog.order {
            match planner.plan(name) {
                Ok(p) => warnings.0.extend(p.warnings),
                Err(d) => diags.extend(d),
            }
        }
        diags.finish();
        warnings.finish();
        catalog.warnings = warnings;
        if diags.is_empty() {
            Ok(catalog)
        } else {
            Err(diags)
        }
    }

    /// A target by name, or an error that lists the known ones.
    pub fn target(&self, name: &str) -> Result<&Target, Diagnostic> {
        self.targets.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.targets.keys().map(String::as_str).collect();
            let hint = match did_you_mean(name, known.iter().copied()) {
                Some(m) => format!("did you mean `{m}`?"),
                None if known.is_empty() => "bakery.toml defines no targets".to_string(),
                None => format!("targets in bakery.toml: {}", known.join(", ")),
            };
            Diagnostic::file(
                ErrorKind::UnknownTarget,
                Path::new("bakery.toml"),
                format!("unknown target `{name}`"),
            )
            .with_hint(hint)
        })
    }

    /// An image by name, or an error with a suggestion.
    pub fn image(&self, name: &str) -> Result<&Image, Diagnostic> {
        self.images
            .get(&ImageName(name.to_string()))
            .ok_or_else(|| {
                let hint = match did_you_mean(name, self.images.keys().map(|n| n.as_str())) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => "images are defined in images/*.toml".to_string(),
                };
                Diagnostic::file(
                    ErrorKind::UnknownImage,
                    Path::new("images"),
                    format!("unknown image `{name}`"),
                )
                .with_hint(hint)
            })
    }
}

fn load_targets(root: &Path, diags: &mut Diagnostics) -> BTreeMap<String, Target> {
    let rel = PathBuf::from("bakery.toml");
    if !root.join(&rel).exists() {
        return BTreeMap::new();
    }
    let Some(src) = read_source(root, &rel, diags) else {
        return BTreeMap::new();
    };
    match Doc::parse(src, diags) {
        Some(mut doc) => target::validate(root, &mut doc, diags),
        None => BTreeMap::new(),
    }
}

fn load_recipes(
    root: &Path,
    diags: &mut Diagnostics,
) -> (BTreeSet<String>, BTreeMap<RecipeName, Recipe>) {
    let mut folders = BTreeSet::new();
    let mut valid = BTreeMap::new();
    for dir in list(root, "recipes", |p| recipe::plain_kind(p) == Some(true)) {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let rel = dir.join("recipe.toml");
        if !root.join(&rel).is_file() {
            diags.push(
                Diagnostic::file(
                    ErrorKind::MissingFile,
                    &dir,
                    format!("recipe folder `{}` has no recipe.toml", dir.display()),
                )
                .with_hint(
                    "every folder under recipes/ is a recipe: add recipe.toml or move the folder",
                ),
            );
            continue;
        }
        folders.insert(name.clone());
        let Some(src) = read_source(root, &rel, diags) else {
            continue;
        };
        let Some(mut doc) = Doc::parse(src, diags) else {
            continue;
        };
        if let Some(r) = recipe::validate(root, &name, &mut doc, diags) {
            valid.insert(r.name.clone(), r);
        }
    }
    (folders, valid)
}

/// Entries of `root/sub` (relative to `root`) that pass `keep`, sorted; none if it is missing.
fn list(root: &Path, sub: &str, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root.join(sub)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| keep(p))
        .filter_map(|p| p.file_name().map(|n| Path::new(sub).join(n)))
        .collect();
    out.sort();
    out
}

fn check_parents(
    images: &BTreeMap<ImageName, Image>,
    docs: &BTreeMap<ImageName, Doc>,
    declared: &BTreeSet<String>,
    diags: &mut Diagnostics,
) {
    let path = DocPath::root().k("source").k("image");
    for (n, img) in images {
        let Some(p) = graph::parent(img) else {
            continue;
        };
        if let Some(parent) = images.get(p) {
            if parent.platform != img.platform {
                let d = docs[n]
                    .at(
                        &path,
                        ErrorKind::PlatformMismatch,
                        format!(
                            "parent `{p}` is a {} image but this one is {}",
                            parent.platform.as_str(),
                            img.platform.as_str()
                        ),
                    )
                    .with_hint("a layered image has its parent's platform");
                diags.push(d);
            } else if parent.architecture != img.architecture {
                let d = docs[n].at(
                    &path,
                    ErrorKind::InvalidValue,
                    format!(
                        "parent `{p}` is {} but this image is {}",
                        parent.architecture.as_str(),
                        img.architecture.as_str()
                    ),
                );
                diags.push(d);
            }
            continue;
        }
        if declared.contains(p.as_str()) {
            continue;
        }
        let hint = match did_you_mean(p.as_str(), images.keys().map(|k| k.as_str())) {
            Some(m) => format!("did you mean `{m}`?"),
            None => "the parent must be an image of this catalog".to_string(),
        };
        let d = docs[n]
            .at_text(
                &path,
                p.as_str(),
                ErrorKind::UnknownImage,
                format!("unknown parent image `{p}`"),
            )
            .with_hint(hint);
        diags.push(d);
    }
}

/// Reports every cycle (at the `source.image` of each image on it), drops those images, and
/// returns the order of the rest.
fn check_cycles(
    images: &mut BTreeMap<ImageName, Image>,
    docs: &BTreeMap<ImageName, Doc>,
    diags: &mut Diagnostics,
) -> Vec<ImageName> {
    loop {
        match graph::order(images) {
            Ok(order) => return order,
            Err(cycle) => {
                let shown = cycle
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> ");
                let path = DocPath::root().k("source").k("image");
                for n in &cycle[..cycle.len() - 1] {
                    let d = docs[n]
                        .at(&path, ErrorKind::Cycle, format!("image dependency cycle: {shown}"))
                        .with_hint("an image cannot be its own ancestor; point one of them at a base image");
                    diags.push(d);
                }
                for n in &cycle {
                    images.remove(n);
                }
            }
        }
    }
}
