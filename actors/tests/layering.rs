//! The dependency rules of the crate, checked on its source: actor modules talk through
//! `ports` and never import one another, and neither `ports` nor the application layer imports
//! an actor module. Only the composition root (`node.rs`) names every actor.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The actor modules (one actor each).
const ACTORS: [&str; 9] = [
    "session",
    "registry",
    "bridge",
    "presence",
    "ratelimiter",
    "journal",
    "hooks",
    "webhooks",
    "recovery",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The top-level modules a module's code (comments left out) refers to as `crate::…`.
fn crate_refs(module: &str) -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&src().join(module), &mut files);
    let single = src().join(format!("{module}.rs"));
    if single.exists() {
        files.push(single);
    }
    assert!(!files.is_empty(), "no source for module {module}");
    let mut refs = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                refs.insert(name);
            }
        }
    }
    refs
}

#[test]
fn actor_modules_do_not_import_each_other() {
    for actor in ACTORS {
        let refs = crate_refs(actor);
        let others: Vec<&str> = ACTORS
            .iter()
            .copied()
            .filter(|other| *other != actor && refs.contains(*other))
            .collect();
        assert!(others.is_empty(), "{actor} imports {others:?}");
    }
}

#[test]
fn ports_and_the_application_import_no_actor() {
    for module in [
        "ports",
        "app",
        "ids",
        "keys",
        "store",
        "transport",
        "decisions",
        "signing",
    ] {
        let refs = crate_refs(module);
        let actors: Vec<&str> = ACTORS
            .iter()
            .copied()
            .filter(|actor| refs.contains(*actor))
            .collect();
        assert!(actors.is_empty(), "{module} imports {actors:?}");
    }
}

#[test]
fn the_composition_root_names_every_actor() {
    let refs = crate_refs("node");
    for actor in [
        "registry",
        "bridge",
        "presence",
        "ratelimiter",
        "journal",
        "hooks",
        "webhooks",
    ] {
        assert!(refs.contains(actor), "node.rs does not wire {actor}");
    }
}
