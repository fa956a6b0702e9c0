//! `docs/ipc.md` is the wire-format reference other implementations are
//! written from; its generated part (tables and the JSON schema) must match
//! the `interface!` descriptions. `UPDATE_DOCS=1 cargo test -p tests --test
//! ipc_docs` rewrites it; review the diff like a golden-vector change.

use std::path::PathBuf;

use tests::ipc_doc::{regenerate, schema_json};

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/ipc.md")
}

#[test]
fn docs_ipc_md_matches_the_interface_descriptions() {
    let path = doc_path();
    let text = std::fs::read_to_string(&path).expect("docs/ipc.md");
    let now = regenerate(&text).expect("docs/ipc.md lost its BEGIN/END GENERATED markers");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &now).unwrap();
        return;
    }
    if let Some((i, (a, b))) = text
        .lines()
        .zip(now.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!(
            "docs/ipc.md line {} is stale (run UPDATE_DOCS=1 cargo test -p tests --test \
             ipc_docs and review the diff):\n  file: {a}\n  code: {b}",
            i + 1
        );
    }
    assert_eq!(
        text.lines().count(),
        now.lines().count(),
        "docs/ipc.md is stale: lines added or removed"
    );
}

#[test]
fn the_schema_block_in_the_doc_is_valid_json_and_complete() {
    let text = std::fs::read_to_string(doc_path()).unwrap();
    let block = text
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a ```json block");
    let parsed: serde_json::Value = serde_json::from_str(block).expect("the schema parses");
    assert_eq!(parsed, schema_json());
    // Every named type a field uses is defined.
    let types = parsed["types"].as_object().unwrap();
    let mut refs = Vec::new();
    for i in parsed["interfaces"].as_array().unwrap() {
        for m in i["messages"].as_array().unwrap() {
            for part in ["request", "reply"] {
                for f in m[part]["fields"].as_array().into_iter().flatten() {
                    let mut t = &f["type"];
                    while let Some(inner) = t.get("list") {
                        t = inner;
                    }
                    refs.push(t.as_str().unwrap().to_string());
                }
            }
        }
    }
    for r in refs {
        let primitive = ["u8", "u16", "u32", "u64", "bool"].contains(&r.as_str());
        assert!(
            primitive || types.contains_key(&r),
            "type {r} is used but not defined"
        );
    }
}

#[test]
fn every_line_of_the_doc_is_under_100_columns_outside_tables() {
    let text = std::fs::read_to_string(doc_path()).unwrap();
    for (i, l) in text.lines().enumerate() {
        if !l.starts_with('|') && !l.starts_with("<!--") {
            assert!(
                l.chars().count() < 100,
                "docs/ipc.md:{} is {} columns",
                i + 1,
                l.len()
            );
        }
    }
}
