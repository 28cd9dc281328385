//! The code's shape: no module imports a module that imports it back (docs/architecture.md).
//!
//! Modules are the files under `src/`. An edge is a `crate::…`, `super::…` or `self::…` path in
//! a module's code (its comments and `#[cfg(test)]` tests aside) that names another module; edges between a
//! module and its own ancestors are how Rust modules nest and do not count. Every other edge is
//! lifted to the two siblings under the modules' common ancestor (`client::session` →
//! `frpc::locate` is `client` → `frpc`), and the sibling graph must have no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn modules(src: &Path) -> BTreeMap<Vec<String>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") || p.ends_with("main.rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut path: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
                path.pop();
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            // Comments (doc links included) name modules without importing them.
            let code: String = code
                .lines()
                .map(|l| l.find("//").filter(|&i| i == 0 || l.as_bytes()[i - 1] == b' ').map_or(l, |i| &l[..i]))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(path, code);
        }
    }
    out
}

/// Every module path a piece of code names, resolved against the known modules.
fn references(me: &[String], code: &str, known: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut refs = BTreeSet::new();
    let bytes = code.as_bytes();
    for (start, anchor) in ["crate::", "super::", "self::"].iter().flat_map(|a| code.match_indices(a)) {
        // Skip a match inside a longer identifier (`my_crate::`).
        if start > 0
            && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_' || bytes[start - 1] == b':')
        {
            continue;
        }
        let mut base: Vec<String> = match anchor {
            "crate::" => vec![],
            "super::" => me[..me.len().saturating_sub(1)].to_vec(),
            _ => me.to_vec(),
        };
        let rest = &code[start + anchor.len()..];
        let path: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
        let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        // `use super::{work, Shared}`: each name in the braces.
        let mut tails: Vec<Vec<&str>> = vec![vec![]];
        if rest[path.len()..].starts_with('{') {
            let group = &rest[path.len() + 1..rest[path.len()..].find('}').map_or(path.len() + 1, |e| path.len() + e)];
            tails = group.split(',').map(|t| t.trim().split("::").filter(|s| !s.is_empty()).collect()).collect();
        }
        while segs.first() == Some(&"super") {
            segs.remove(0);
            base.pop();
        }
        for tail in tails {
            let mut full = base.clone();
            full.extend(segs.iter().chain(tail.iter()).map(|s| s.to_string()));
            // The longest prefix that is a module.
            while !full.is_empty() && !known.contains(&full) {
                full.pop();
            }
            refs.insert(full);
        }
    }
    refs
}

/// Cycles among siblings: each as the list of its modules.
fn cycles(src: &Path) -> Vec<Vec<String>> {
    let mods = modules(src);
    let known: BTreeSet<Vec<String>> = mods.keys().cloned().collect();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (me, code) in &mods {
        for to in references(me, code, &known) {
            let common = me.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == me.len() || common == to.len() {
                continue; // an ancestor or a descendant
            }
            graph.entry(me[..=common].to_vec()).or_default().insert(to[..=common].to_vec());
        }
    }
    let mut found = Vec::new();
    for (a, tos) in &graph {
        for b in tos {
            // a → b and b reaches a.
            let mut seen = BTreeSet::new();
            let mut stack = vec![b.clone()];
            while let Some(n) = stack.pop() {
                if &n == a {
                    found.push(vec![a.join("::"), b.join("::")]);
                    break;
                }
                if seen.insert(n.clone()) {
                    stack.extend(graph.get(&n).into_iter().flatten().cloned());
                }
            }
        }
    }
    found
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    // Both crates: burrow and burrow-proto.
    for crate_src in ["src", "proto/src"] {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_src);
        let found = cycles(&src);
        assert!(
            found.is_empty(),
            "module cycles in {crate_src} (a imports b, b reaches a): {found:?}; move what both need below both"
        );
    }
}

#[test]
fn the_cycle_check_finds_cycles() {
    let dir = std::env::temp_dir().join(format!("burrow-layout-{}", std::process::id()));
    let write = |p: &str, s: &str| {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, s).unwrap();
    };
    write("lib.rs", "pub mod a; pub mod b; pub mod c;");
    write("a/mod.rs", "mod x; mod y; use crate::b::Thing;");
    write("a/x.rs", "use super::{y, Shared};");
    write("a/y.rs", "fn f() { super::x::g() }");
    write("b.rs", "use crate::c; #[cfg(test)]\nmod tests { use crate::a; }");
    write("c.rs", "fn f() { crate::a::x::h(); crate::say!(); }\n/// Not [`crate::b`]\nfn g() {} // nor crate::b");
    let found = cycles(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let pairs: BTreeSet<(String, String)> = found.into_iter().map(|c| (c[0].clone(), c[1].clone())).collect();
    let want: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("c", "a"), ("a::x", "a::y"), ("a::y", "a::x")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(pairs, want);
}
