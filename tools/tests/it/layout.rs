//! The workspace's crate graph and its map in docs/ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// The only dependency edges allowed between workspace crates.
const ALLOWED: &[(&str, &[&str])] = &[
    ("sluice-wire", &[]),
    ("sluice-engine", &[]),
    ("sluice-shards", &["sluice-engine", "sluice-wire"]),
    ("sluice-bench", &["sluice-wire"]),
    (
        "sluice-tools",
        &[
            "sluice-shards",
            "sluice-bench",
            "sluice-wire",
            "sluice-engine",
        ],
    ),
];

fn workspace_edges() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|d| names.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn crate_dependencies_point_one_way() {
    let edges = workspace_edges();
    let allowed: BTreeMap<String, BTreeSet<String>> = ALLOWED
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(
        edges.keys().collect::<Vec<_>>(),
        allowed.keys().collect::<Vec<_>>(),
        "workspace crates"
    );
    for (krate, deps) in &edges {
        let extra: Vec<_> = deps.difference(&allowed[krate]).collect();
        assert!(extra.is_empty(), "{krate} must not depend on {extra:?}");
    }
}

#[test]
fn architecture_names_every_crate() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/ARCHITECTURE.md"
    ))
    .expect("docs/ARCHITECTURE.md");
    for (krate, _) in ALLOWED {
        let dir = krate.trim_start_matches("sluice-");
        assert!(
            text.contains(&format!("**{dir}** (`{krate}`)")),
            "ARCHITECTURE.md has no section for {krate}"
        );
    }
}
