//! Validation speed: the shipped catalog and a generated catalog of 500 images, each against a
//! baseline measured in the same run (reading and parsing the same TOML files, nothing else).
//!
//! Run: `cargo bench --bench catalog` (release profile).

use std::path::Path;
use std::time::{Duration, Instant};

use bakery::catalog::model::Target;
use bakery::catalog::Catalog;
use bakery::plan::Planner;

const RUNS: usize = 7;
/// Copies of the shipped images in the generated catalog (5 images each: 500 in all).
const COPIES: usize = 100;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm the page cache
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// The floor: read and parse every TOML file of the project, no validation.
fn parse_only(root: &Path) -> usize {
    let mut n = 0;
    for sub in ["images", "recipes"] {
        let Ok(rd) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let file = if p.is_dir() { p.join("recipe.toml") } else { p };
            if file.is_file() && file.extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(&file).expect("read");
                let t: toml::Table = toml::from_str(&text).expect("toml");
                n += t.len();
            }
        }
    }
    n
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let (p, t) = (e.path(), to.join(e.file_name()));
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).expect("copy");
        }
    }
}

/// The shipped recipes plus COPIES renamed copies of every shipped image (parents renamed with
/// their children, so the graph keeps its depth).
fn generated(repo: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&repo.join("recipes"), &dir.path().join("recipes"));
    copy_dir(
        &repo.join("images/user-data"),
        &dir.path().join("images/user-data"),
    );
    let mut shipped = Vec::new();
    for e in std::fs::read_dir(repo.join("images"))
        .expect("images")
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let name = p.file_stem().expect("stem").to_string_lossy().to_string();
            shipped.push((name, std::fs::read_to_string(&p).expect("read")));
        }
    }
    let names: Vec<String> = shipped.iter().map(|(n, _)| n.clone()).collect();
    for i in 0..COPIES {
        for (name, text) in &shipped {
            let mut t = text.replace(
                &format!("name = \"{name}\""),
                &format!("name = \"{name}-{i}\""),
            );
            for parent in &names {
                t = t.replace(
                    &format!("image = \"{parent}@"),
                    &format!("image = \"{parent}-{i}@"),
                );
            }
            std::fs::write(dir.path().join(format!("images/{name}-{i}.toml")), t).expect("write");
        }
    }
    dir
}

fn report(label: &str, root: &Path) {
    let catalog = Catalog::load(root).unwrap_or_else(|d| panic!("{d}"));
    let images = catalog.images.len();
    let base = time(RUNS, || {
        std::hint::black_box(parse_only(root));
    });
    let validate = time(RUNS, || {
        std::hint::black_box(Catalog::load(root).expect("valid"));
    });
    let target = Target::offline();
    let plan = time(RUNS, || {
        let mut p = Planner::new(&catalog, &target);
        for n in &catalog.order {
            std::hint::black_box(p.plan(n).expect("plan"));
        }
    });
    println!(
        "{label:<22} {images:>4} images  parse-only {:>8.2} ms   validate {:>8.2} ms ({:>5.1}x parse-only, {:>6.1} us/image)   plan all {:>8.2} ms",
        base.as_secs_f64() * 1e3,
        validate.as_secs_f64() * 1e3,
        validate.as_secs_f64() / base.as_secs_f64(),
        validate.as_secs_f64() * 1e6 / images as f64,
        plan.as_secs_f64() * 1e3,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run once, quickly.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!(
        "median of {RUNS} runs; validate = load + validate + render every template of every image"
    );
    report("shipped catalog", repo);
    let gen = generated(repo);
    report("generated catalog", gen.path());
}
