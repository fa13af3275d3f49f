//! Migrations are append-only: a released migration is never edited, renamed or removed
//! (databases in the field have already run it). `migrations/RELEASED` records a fingerprint of
//! every migration file; this test fails when a listed file changed or vanished, and when a new
//! file is not listed yet (add its line, printed below, in the same change).

use std::collections::BTreeMap;
use std::path::Path;

/// FNV-1a, 64 bit: a stable fingerprint (this guards against accidents, not attackers).
fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[test]
fn released_migrations_are_never_changed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut actual = BTreeMap::new();
    for backend in ["sqlite", "postgres"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(backend))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            let name = format!("{backend}/{}", f.file_name().unwrap().to_string_lossy());
            actual.insert(name, fingerprint(&std::fs::read(&f).unwrap()));
        }
    }
    let released = std::fs::read_to_string(root.join("RELEASED")).unwrap();
    let mut listed = BTreeMap::new();
    for line in released
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (name, hash) = line
            .split_once(' ')
            .expect("`<backend>/<file> <fingerprint>` per line");
        listed.insert(name.to_string(), hash.trim().to_string());
    }
    for (name, hash) in &listed {
        match actual.get(name) {
            None => panic!(
                "released migration {name} was removed or renamed; migrations are append-only"
            ),
            Some(h) if h != hash => {
                panic!("released migration {name} was edited; add a new migration instead")
            }
            Some(_) => {}
        }
    }
    let new: Vec<String> = actual
        .iter()
        .filter(|(n, _)| !listed.contains_key(*n))
        .map(|(n, h)| format!("{n} {h}"))
        .collect();
    assert!(
        new.is_empty(),
        "new migrations: add these lines to migrations/RELEASED:\n{}",
        new.join("\n")
    );
}
