//! The gateway's modules keep the one-way hierarchy `//! # Layout` in `src/lib.rs` lists:
//! every module is in a layer, and uses only modules of its own layer or of those below.
//! Within a layer, uses form no cycle.
//!
//! A module is placed by the longest listed path that holds it (`socketio::event` is
//! listed on its own; `socketio::session` belongs to `socketio`'s layer). Uses are the
//! `crate::…` and `super::…` paths of the module's code (its unit tests aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layers of `//! # Layout`: each numbered item, with the modules it names.
fn layers(lib: &str) -> BTreeMap<Module, usize> {
    let doc: Vec<&str> = lib
        .lines()
        .map_while(|line| line.strip_prefix("//!"))
        .skip_while(|line| line.trim() != "# Layout")
        .collect();
    let mut placed = BTreeMap::new();
    let mut layer = 0;
    for line in doc {
        let line = line.trim();
        if let Some((number, _)) = line.split_once(". ")
            && let Ok(number) = number.parse::<usize>()
        {
            layer = number;
        }
        for link in line.split("[`").skip(1) {
            let Some((path, _)) = link.split_once("`]") else {
                continue;
            };
            if layer > 0
                && path
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_:".contains(c))
            {
                placed.insert(path.split("::").map(String::from).collect(), layer);
            }
        }
    }
    placed
}

/// Every module of `src/` with its code, test modules and test-only files aside.
fn modules() -> BTreeMap<Module, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path.strip_prefix(src()).expect("under src");
            let mut module: Module = relative
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let code = std::fs::read_to_string(&path).expect("read a module");
            let code = match code.find("#[cfg(test)]\nmod tests") {
                Some(end) => code[..end].to_string(),
                None => code,
            };
            found.insert(module, code);
        }
    }
    // The crate root and the test-only modules are not part of the hierarchy.
    for test_only in [
        vec![],
        vec!["fuzz".to_string()],
        vec!["testing".to_string()],
    ] {
        found.remove(&test_only);
    }
    found
}

/// The paths a module's code names through `crate::` or `super::`, braces unfolded.
fn uses(module: &Module, is_mod_file: bool, code: &str) -> Vec<Module> {
    let mut paths = Vec::new();
    for (root, base) in [
        ("crate::", Vec::new()),
        ("super::", {
            let mut base = module.clone();
            if !is_mod_file {
                base.pop();
            }
            base.pop();
            base
        }),
    ] {
        for (at, _) in code.match_indices(root) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + root.len()..];
            let rest = rest.strip_prefix('{').map_or(rest, |inner| inner);
            let group = if rest.len() < code[at + root.len()..].len() {
                rest.split('}').next().unwrap_or_default()
            } else {
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or_default()
            };
            for item in group.split(',') {
                let mut path = base.clone();
                path.extend(
                    item.trim()
                        .split("::")
                        .take_while(|s| !s.is_empty() && !s.contains(['{', ' ']))
                        .map(String::from),
                );
                paths.push(path);
            }
        }
    }
    paths
}

/// The longest listed path holding `path`, with its layer.
fn placed<'a>(layers: &'a BTreeMap<Module, usize>, path: &[String]) -> Option<(&'a Module, usize)> {
    (1..=path.len())
        .rev()
        .find_map(|n| layers.get_key_value(&path[..n]))
        .map(|(module, layer)| (module, *layer))
}

/// The module `path` names: the longest prefix that is a module.
fn resolve(modules: &BTreeMap<Module, String>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains_key(prefix))
}

#[test]
fn every_module_uses_only_its_own_layer_and_those_below() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    let layers = layers(&lib);
    let modules = modules();
    assert!(
        layers.len() > 20,
        "the layout lists the modules: {layers:?}"
    );
    let mut problems = Vec::new();
    let mut edges: BTreeMap<&Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, code) in &modules {
        let Some((_, layer)) = placed(&layers, module) else {
            problems.push(format!(
                "{} is in no layer of the layout",
                module.join("::")
            ));
            continue;
        };
        let is_mod_file = src().join(module.join("/")).join("mod.rs").is_file();
        for path in uses(module, is_mod_file, code) {
            let Some(target) = resolve(&modules, &path) else {
                continue;
            };
            if &target == module {
                continue;
            }
            let Some((_, target_layer)) = placed(&layers, &target) else {
                continue;
            };
            if target_layer > layer {
                problems.push(format!(
                    "{} (layer {layer}) uses {} (layer {target_layer})",
                    module.join("::"),
                    target.join("::")
                ));
            }
            if target_layer == layer {
                edges.entry(module).or_default().insert(target);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // No cycle among the uses within a layer: a depth-first search finds no back edge.
    fn visit<'a>(
        module: &'a Module,
        edges: &'a BTreeMap<&Module, BTreeSet<Module>>,
        path: &mut Vec<&'a Module>,
        done: &mut BTreeSet<&'a Module>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            let cycle: Vec<String> = path[at..].iter().map(|m| m.join("::")).collect();
            return Some(cycle.join(" -> "));
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in edges.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        let cycle = visit(module, &edges, &mut Vec::new(), &mut done);
        assert!(cycle.is_none(), "a cycle: {}", cycle.unwrap_or_default());
    }
}
