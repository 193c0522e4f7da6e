//! The library's layers import only downwards: codec (`sip`) → protocol
//! infrastructure (`core`, then `storage`, then `cluster`) → services (`registrar`, `presence`) → shard
//! composition (`shard`) → I/O (`reactor`, `config`). A use of a higher
//! layer from a lower one (the cycle `core` ↔ services that this test was
//! written against) fails here, naming the file and line.

use std::path::Path;

/// Each layer and the modules it must not name.
const RULES: &[(&str, &[&str])] = &[
    ("sip", &["core", "storage", "cluster", "registrar", "presence", "shard", "reactor", "config"]),
    ("core", &["storage", "cluster", "registrar", "presence", "shard", "reactor", "config"]),
    ("storage", &["cluster", "registrar", "presence", "shard", "reactor", "config"]),
    ("cluster", &["registrar", "presence", "shard", "reactor", "config"]),
    ("registrar", &["cluster", "presence", "shard", "reactor", "config"]),
    ("presence", &["cluster", "registrar", "shard", "reactor", "config"]),
    ("shard", &["reactor", "config"]),
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn layers_import_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (layer, forbidden) in RULES {
        let mut files = Vec::new();
        sources(&src.join(layer), &mut files);
        if let Ok(true) = std::fs::exists(src.join(format!("{layer}.rs"))) {
            files.push(src.join(format!("{layer}.rs")));
        }
        assert!(!files.is_empty(), "no sources for layer {layer}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for m in *forbidden {
                    if code.contains(&format!("crate::{m}::")) || code.contains(&format!("crate::{m};")) || code.contains(&format!("crate::{m}::{{")) {
                        broken.push(format!("{}:{}: layer {layer} uses {m}: {}", f.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "imports against the layering:\n{}", broken.join("\n"));
}
