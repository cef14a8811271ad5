//! The image dependency graph: parents (`source.image`) before children, cycles named.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Image, ImageName, Source};

/// The parent of an image, if it is layered on another bakery image.
pub fn parent(image: &Image) -> Option<&ImageName> {
    match &image.source {
        Source::Image { name, .. } => Some(name),
        _ => None,
    }
}

/// Every image in dependency order (parents first, then by name), or the first cycle found as
/// the list of names along it, first name repeated at the end.
pub fn order(images: &BTreeMap<ImageName, Image>) -> Result<Vec<ImageName>, Vec<ImageName>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        n: &ImageName,
        images: &BTreeMap<ImageName, Image>,
        marks: &mut BTreeMap<ImageName, Mark>,
        stack: &mut Vec<ImageName>,
        out: &mut Vec<ImageName>,
    ) -> Result<(), Vec<ImageName>> {
        match marks.get(n) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let from = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(n.clone());
                return Err(cycle);
            }
            None => {}
        }
        marks.insert(n.clone(), Mark::Visiting);
        stack.push(n.clone());
        if let Some(p) = images.get(n).and_then(parent) {
            if images.contains_key(p) {
                visit(p, images, marks, stack, out)?;
            }
        }
        stack.pop();
        marks.insert(n.clone(), Mark::Done);
        out.push(n.clone());
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut out = Vec::new();
    for n in images.keys() {
        visit(n, images, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// `names` plus every image that descends from one of them.
pub fn with_descendants(
    images: &BTreeMap<ImageName, Image>,
    names: &BTreeSet<ImageName>,
) -> BTreeSet<ImageName> {
    let mut out = names.clone();
    loop {
        let before = out.len();
        for (n, img) in images {
            if parent(img).is_some_and(|p| out.contains(p)) {
                out.insert(n.clone());
            }
        }
        if out.len() == before {
            return out;
        }
    }
}
