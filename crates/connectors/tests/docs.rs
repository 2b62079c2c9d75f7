//! `docs/pipeline-reference.md` documents every field: its generated part must equal what
//! the schema generates now, and every property of the JSON Schema must appear in it.
//!
//! After changing the spec, regenerate with `SLUICE_BLESS=1 cargo test -p sluice-connectors --test docs`.

use sluice_config::schema::{
    BEGIN_MARKER, END_MARKER, json_schema, property_names, reference_markdown,
};
use std::path::Path;

fn doc_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/pipeline-reference.md")
}

#[test]
fn the_reference_is_generated_from_the_current_schema() {
    let path = doc_path();
    let doc = std::fs::read_to_string(&path).expect("docs/pipeline-reference.md exists");
    let (Some(begin), Some(end)) = (doc.find(BEGIN_MARKER), doc.find(END_MARKER)) else {
        panic!("the reference lacks its generated-part markers");
    };
    let current = &doc[begin + BEGIN_MARKER.len()..end];
    let generated = format!(
        "\n\n{}\n",
        reference_markdown(sluice_connectors::registry())
    );
    if std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1") {
        let updated = format!(
            "{}{}{}{}",
            &doc[..begin],
            BEGIN_MARKER,
            generated,
            &doc[end..]
        );
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert!(
        current == generated,
        "docs/pipeline-reference.md is out of date: run `SLUICE_BLESS=1 cargo test -p sluice-connectors --test docs`"
    );
}

#[test]
fn every_schema_property_is_documented() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/pipeline-reference.md exists");
    let missing: Vec<String> = property_names(&json_schema(sluice_connectors::registry()))
        .into_iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "fields missing from docs/pipeline-reference.md: {missing:?}"
    );
}
