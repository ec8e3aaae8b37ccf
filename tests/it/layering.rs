//! The data flows one way (catalog → sessions → spool → drain): the stages
//! downstream must not import the ones upstream. Checked on the source text,
//! so a new `use crate::…` line that breaks the rule fails here.

use std::path::Path;

/// Every `crate::` path named in the `.rs` files under `dir`, with the file.
fn crate_paths(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            found.extend(crate_paths(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            for (at, _) in text.match_indices("crate::") {
                let rest: String = text[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push((path.display().to_string(), rest));
            }
        }
    }
    found
}

#[track_caller]
fn assert_imports_none(stage: &str, forbidden: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(stage);
    let offending: Vec<_> = crate_paths(&dir)
        .into_iter()
        .filter(|(_, module)| forbidden.contains(&module.as_str()))
        .collect();
    assert!(
        offending.is_empty(),
        "src/{stage} must not use {forbidden:?}: {offending:?}"
    );
}

#[test]
fn the_spool_knows_no_broker_session_or_drain() {
    assert_imports_none("spool", &["catalog", "sessions", "drain"]);
}

#[test]
fn nothing_upstream_imports_the_drain() {
    for stage in ["catalog", "sessions", "spool"] {
        assert_imports_none(stage, &["drain"]);
    }
}

/// The catalog is upstream of the sessions: it must not import them (the
/// status it uploads comes from the status part, not from the sessions).
#[test]
fn the_catalog_does_not_import_the_sessions() {
    assert_imports_none("catalog", &["sessions"]);
}

/// The status part is read by every stage's neighbours but depends on none
/// of the stages that write it: no cycle through it.
#[test]
fn the_status_part_imports_no_stage_but_the_spool() {
    assert_imports_none("status", &["catalog", "sessions", "drain"]);
}
