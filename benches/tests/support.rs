//! Allocation files are written where criterion writes its own results, one per bench.

use std::path::PathBuf;

use linkr_benches::support::{allocs_file_name, criterion_dir};

#[test]
fn allocation_files_land_beside_criterions_results() {
    // Where criterion itself writes: CRITERION_HOME, else <cargo target dir>/criterion, even
    // when `target` was created by hand or is a symlink (no CACHEDIR.TAG in it).
    let expected = match std::env::var_os("CRITERION_HOME") {
        Some(home) => PathBuf::from(home),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("criterion"),
    };
    let canonical = |p: &PathBuf| {
        std::path::absolute(p)
            .unwrap()
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .fold(PathBuf::new(), |mut acc, c| {
                match c {
                    std::path::Component::ParentDir => {
                        acc.pop();
                    }
                    other => acc.push(other),
                }
                acc
            })
    };
    assert_eq!(canonical(&criterion_dir()), canonical(&expected));
}

#[test]
fn allocation_file_names_are_flat_and_unique() {
    assert_eq!(
        allocs_file_name("encode/link_json/linkr_zero_copy"),
        "encode__link_json__linkr_zero_copy.json"
    );
    assert_ne!(
        allocs_file_name("pool/contended_x2/object_pool"),
        allocs_file_name("pool/contended_x2_object_pool")
    );
}
