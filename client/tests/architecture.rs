//! The client's modules depend on each other in one direction only.
//!
//! A circle between modules (a uses b, b uses a) is where a driver stops
//! being readable top to bottom: neither half can be understood first. This
//! test reads `client/src` and `core/src`, finds which top-level module each
//! file uses through `crate::` paths (comments aside), and fails on any
//! circle, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level module a file belongs to: `driver/exchange.rs` is in `driver`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap();
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments only: the crate
/// uses no block comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every name used as `crate::name` or inside `use crate::{name, ...}`.
fn crate_names(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first segment of each item
            // at the group's top level.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        names.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names
}

#[test]
fn the_client_modules_form_no_circle() {
    assert_no_circle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

#[test]
fn the_core_modules_form_no_circle() {
    assert_no_circle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src"));
}

/// Fails, naming it, on any circle between the top-level modules of the crate at `src`.
fn assert_no_circle(src: &Path) {
    let src = src.to_path_buf();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let lib_code = code(&lib);
    // Names the crate root re-exports, mapped to the module that defines them.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for line in lib_code.lines() {
        let line = line.trim();
        if let Some(rest) = line
            .strip_prefix("pub use ")
            .and_then(|r| r.strip_suffix(';'))
        {
            if let Some((module, items)) = rest.split_once("::") {
                let items = items.trim_matches(|c| c == '{' || c == '}');
                for item in items.split(',') {
                    owner.insert(item.trim().to_owned(), module.to_owned());
                }
            }
        }
        for prefix in ["pub mod ", "mod "] {
            if let Some(module) = line.strip_prefix(prefix).and_then(|r| r.strip_suffix(';')) {
                owner.insert(module.to_owned(), module.to_owned());
            }
        }
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        if file.ends_with("lib.rs") {
            continue;
        }
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let edges = uses.entry(module.clone()).or_default();
        for name in crate_names(&code(&text)) {
            if let Some(target) = owner.get(&name) {
                if *target != module {
                    edges.insert(target.clone());
                }
            }
        }
    }
    assert!(
        uses.len() >= 5,
        "the crate's modules were not found: {uses:?}"
    );
    // Depth-first search for a back edge; the path to it is the circle.
    fn visit(
        module: &str,
        uses: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_owned());
            return Some(circle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in uses.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, uses, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in uses.keys() {
        if let Some(circle) = visit(module, &uses, &mut Vec::new(), &mut done) {
            panic!(
                "the modules of {} use each other in a circle: {}\nall uses: {uses:#?}",
                src.display(),
                circle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_circle_finder_reads_use_groups_and_paths() {
    let names = crate_names(&code(
        "use crate::{a, b::c, d::{e, f}};\nlet x = crate::g::h(); // crate::comment",
    ));
    let names: Vec<_> = names.into_iter().collect();
    assert_eq!(names, ["a", "b", "d", "g"]);
}
