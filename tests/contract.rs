//! The contract (`docs/contract.md`) kept true by the code: every environment variable, command,
//! event, error and warning code, exit code and admin route the code has is listed there, and
//! everything listed there is in the code. A change to either side fails here until both agree.

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The contract's section `## n.`, up to the next section.
fn section(n: u32) -> String {
    let text = read("docs/contract.md");
    let start = text.find(&format!("\n## {n}. ")).unwrap_or_else(|| panic!("contract §{n} is missing"));
    let rest = &text[start + 1..];
    rest[..rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3)].to_string()
}

/// The non-test code of every `.rs` file under `src/`.
fn code() -> String {
    let mut out = String::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push_str(text.split("#[cfg(test)]\nmod tests").next().unwrap());
            }
        }
    }
    out
}

/// Every `open…close` delimited word in `text` made of `[A-Za-z0-9_]` (after `prefix`).
fn words(text: &str, open: &str, prefix: &str, close: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(&format!("{open}{prefix}")) {
        let rest = &text[i + open.len()..];
        let w: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if rest[w.len()..].starts_with(close) && w.len() > prefix.len() {
            out.insert(w);
        }
    }
    out
}

fn same(what: &str, contract: BTreeSet<String>, code: BTreeSet<String>) {
    let missing: Vec<_> = code.difference(&contract).collect();
    let stale: Vec<_> = contract.difference(&code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "{what}: in the code but not in docs/contract.md: {missing:?}; in the contract but not in the code: {stale:?}"
    );
}

#[test]
fn every_environment_variable_is_in_the_contract_and_every_listed_one_is_read() {
    // The table's first column: `BURROW_A`, `BURROW_B` / `BURROW_C`.
    let table: String =
        section(2).lines().filter(|l| l.starts_with("| `")).filter_map(|l| l.split(" | ").next()).collect();
    same("variables", words(&table, "`", "BURROW_", "`"), words(&code(), "\"", "BURROW_", "\""));
}

#[test]
fn every_command_is_in_the_contract() {
    let control = read("src/control.rs");
    let parse = &control[control.find("fn parse_command").unwrap()..];
    let parse = &parse[..parse.find("\n}\n").unwrap()];
    same("commands", words(&section(4), "{\"cmd\":\"", "", "\""), words(parse, "\"", "", "\" =>"));
}

#[test]
fn every_event_is_in_the_contract_and_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(&read("resources/events.schema.json")).unwrap();
    let titles = schema["oneOf"].as_array().unwrap().iter().map(|o| o["title"].as_str().unwrap().to_string()).collect();
    let table: String =
        section(3).lines().filter(|l| l.starts_with("| `")).filter_map(|l| l.split(" | ").next()).collect();
    same("events", words(&table, "`", "", "`"), titles);
}

#[test]
fn every_error_and_warning_code_is_in_the_contract() {
    let events = read("src/events.rs");
    let s3 = section(3);
    let errors = &s3[s3.find("Error codes:").expect("contract §3 lists the error codes")..];
    // The code's names, from its `as_str` arms: `ErrorCode::ConfigInvalid => "config_invalid"`.
    let named: BTreeSet<String> = events
        .lines()
        .filter(|l| l.trim_start().starts_with("ErrorCode::") && l.contains("=> \""))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect();
    same("error code names", words(errors, "`", "", "`"), named);
    let warning = s3.lines().find(|l| l.starts_with("| `warning`")).unwrap();
    let enum_start = events.find("pub enum WarningCode {").unwrap();
    let body = &events[enum_start..enum_start + events[enum_start..].find("\n}").unwrap()];
    let variants: BTreeSet<String> = body
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(',') && l.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|l| {
            let mut snake = String::new();
            for (i, c) in l.trim_end_matches(',').chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            snake
        })
        .collect();
    let listed: BTreeSet<String> = words(warning, "`", "", "`").into_iter().filter(|w| w.contains('_')).collect();
    same("warning codes", listed, variants);
}

#[test]
fn every_exit_code_is_in_the_contract() {
    let s4 = section(4);
    let line = &s4[s4.find("Exit codes:").expect("contract §4 lists the exit codes")..];
    let line = &line[..line.find("\n\n").unwrap_or(line.len())];
    let events = read("src/events.rs");
    let f = &events[events.find("pub fn exit_code").unwrap()..];
    let f = &f[..f.find("\n    }\n").unwrap()];
    let mut code: BTreeSet<String> =
        f.lines().filter_map(|l| l.trim().strip_suffix(',')?.rsplit("=> ").next().map(str::to_string)).collect();
    code.insert("0".into());
    same("exit codes", words(line, "`", "", "`"), code);
}

#[test]
fn every_admin_route_is_in_the_contract() {
    let admin = read("src/admin.rs");
    let mut code = BTreeSet::new();
    for m in ["GET", "POST"] {
        for (i, _) in admin.match_indices(&format!("(&Method::{m}, \"")) {
            let rest = &admin[i + format!("(&Method::{m}, \"").len()..];
            code.insert(format!("{m} {}", &rest[..rest.find('"').unwrap()]));
        }
    }
    let s6 = section(6);
    let mut listed = BTreeSet::new();
    for m in ["GET", "POST"] {
        for (i, _) in s6.match_indices(&format!("`{m} /api/")) {
            let rest = &s6[i + 1 + m.len() + 1..];
            let end = rest.find(|c: char| c == '`' || c == '?').unwrap();
            listed.insert(format!("{m} {}", &rest[..end]));
        }
    }
    same("admin routes", listed, code);
}

#[test]
fn every_admin_api_error_code_is_in_the_contract() {
    let admin = read("src/admin.rs");
    let f = &admin[admin.find("fn code(&self) -> &'static str").unwrap()..];
    let f = &f[..f.find("\n    }\n").unwrap()];
    let code: BTreeSet<String> = f.lines().filter_map(|l| l.split('"').nth(1).map(str::to_string)).collect();
    let s6 = section(6);
    let listed = &s6[s6.find("A refusal is").expect("contract §6 lists the admin API's error codes")..];
    let listed: BTreeSet<String> = words(listed, "`", "", "`")
        .into_iter()
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    same("admin API error codes", listed, code);
}
