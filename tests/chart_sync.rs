//! The CRD ships three times (`crds/`, the Helm chart's `crds/`, `deploy/crds/`): these tests keep
//! the copies byte-identical, and keep the example SessionStores in `deploy/examples` valid.

use std::path::{Path, PathBuf};

use sessionstore_operator::render::parse_stores;
use sessionstore_operator::validate::validate;

const CRD_FILE: &str = "sessionstore.dev_sessionstores.yaml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn assert_same_as_source(copy: &str) {
    let source = read(&root().join("crds").join(CRD_FILE));
    let copied = read(&root().join(copy).join(CRD_FILE));
    assert!(
        source == copied,
        "{copy}/{CRD_FILE} differs from crds/{CRD_FILE}. Fix: `bash scripts/regenerate.sh` \
         (or `cp crds/{CRD_FILE} {copy}/`) and commit the result."
    );
}

#[test]
fn chart_crd_is_identical_to_crds_dir() {
    assert_same_as_source("charts/sessionstore-operator/crds");
}

#[test]
fn deploy_crd_is_identical_to_crds_dir() {
    assert_same_as_source("deploy/crds");
}

#[test]
fn chart_and_deploy_hold_no_other_crd() {
    for dir in ["charts/sessionstore-operator/crds", "deploy/crds"] {
        let mut names: Vec<String> = std::fs::read_dir(root().join(dir))
            .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
            .map(|entry| {
                entry
                    .expect("directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![CRD_FILE.to_string()],
            "{dir} must hold exactly the SessionStore CRD"
        );
    }
}

#[test]
fn example_session_stores_pass_validation() {
    let mut validated = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/examples"))
        .expect("deploy/examples exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let source = String::from_utf8(read(&path)).expect("examples are UTF-8");
        if !source.contains("kind: SessionStore") {
            continue; // the application Deployment example
        }
        for store in parse_stores(&source, &path.display().to_string()).expect("parses") {
            let store = validate(&store).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            validated.push((store.name, store.namespace, store.replicas));
        }
    }
    assert_eq!(
        validated,
        vec![
            ("checkout".to_string(), "shop-dev".to_string(), 1),
            ("checkout".to_string(), "shop".to_string(), 3),
        ]
    );
}
