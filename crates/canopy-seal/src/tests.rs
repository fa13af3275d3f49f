use super::*;

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn ring(spec: &str) -> Keyring {
    Keyring::from_env_value(spec).unwrap()
}

fn a() -> Keyring {
    ring(&format!("key-a {KEY_A}"))
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn write_key_file(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
}

#[test]
fn round_trip() {
    let k = a();
    let sealed = k.seal(b"hunter2", b"registries|p|r");
    assert!(is_sealed(&sealed));
    assert!(sealed.starts_with("cnpenc:v1:key-a:"), "{sealed}");
    assert!(!sealed.contains("hunter2"));
    assert_eq!(sealed_key_id(&sealed), Some("key-a"));
    assert_eq!(k.open(&sealed, b"registries|p|r").unwrap(), b"hunter2");
    // A fresh nonce every time.
    assert_ne!(sealed, k.seal(b"hunter2", b"registries|p|r"));
    // Empty plaintext is fine too.
    assert_eq!(k.open(&k.seal(b"", b""), b"").unwrap(), b"");
    assert!(!is_sealed("{\"name\":\"x\"}"));
}

#[test]
fn wrong_aad_fails() {
    let k = a();
    let sealed = k.seal(b"hunter2", b"registries|p|r1");
    let e = k.open(&sealed, b"registries|p|r2").unwrap_err();
    assert!(matches!(e, SealError::Tampered), "{e}");
}

#[test]
fn tampered_fails() {
    let k = a();
    let sealed = k.seal(b"hunter2", b"aad");
    let (head, payload) = sealed.rsplit_once(':').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(payload).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let altered = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&raw));
    assert!(matches!(k.open(&altered, b"aad"), Err(SealError::Tampered)));
    raw[last] ^= 1;
    raw[NONCE_LEN] ^= 0x80;
    let altered = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&raw));
    assert!(matches!(k.open(&altered, b"aad"), Err(SealError::Tampered)));

    for malformed in [
        "cnpenc:v1:key-a",
        "cnpenc:v1:key-a:!!!",
        "cnpenc:v1:key-a:AAAA",
        "cnpenc:v1:KEY:AAAA",
        "cnpenc:v9:key-a:AAAA",
        "plain text",
    ] {
        let e = k.open(malformed, b"aad").unwrap_err();
        assert!(matches!(e, SealError::Malformed(_)), "{malformed}: {e}");
    }
}

#[test]
fn unknown_key_id_is_named() {
    let sealed = a().seal(b"x", b"");
    let b = ring(&format!("key-b {KEY_B}"));
    let e = b.open(&sealed, b"").unwrap_err();
    assert!(
        matches!(&e, SealError::UnknownKey(id) if id == "key-a"),
        "{e}"
    );
    assert!(e.to_string().contains("\"key-a\""), "{e}");
}

#[test]
fn rotation() {
    let old = a();
    let sealed_a = old.seal(b"secret", b"row");
    let rotated = ring(&format!("key-b {KEY_B}; key-a {KEY_A}"));
    assert_eq!(rotated.primary_id(), "key-b");
    assert_eq!(rotated.ids().collect::<Vec<_>>(), ["key-b", "key-a"]);
    assert_eq!(rotated.open(&sealed_a, b"row").unwrap(), b"secret");
    let resealed = rotated.seal(&rotated.open(&sealed_a, b"row").unwrap(), b"row");
    assert_eq!(sealed_key_id(&resealed), Some("key-b"));
    let only_b = ring(&format!("key-b {KEY_B}"));
    assert_eq!(only_b.open(&resealed, b"row").unwrap(), b"secret");
    assert!(matches!(
        only_b.open(&sealed_a, b"row"),
        Err(SealError::UnknownKey(_))
    ));
}

#[test]
fn rotating_a_key_file_prepends_a_primary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);
    let first = Keyring::generate_file(&path).unwrap();
    let sealed = first.seal(b"secret", b"row");
    let new_id = add_primary_key_to_file(&path).unwrap();
    assert_ne!(new_id, first.primary_id());
    let rotated = Keyring::load_file(&path).unwrap();
    assert_eq!(
        rotated.ids().collect::<Vec<_>>(),
        [new_id.as_str(), first.primary_id()]
    );
    assert_eq!(rotated.open(&sealed, b"row").unwrap(), b"secret");
    // Comments are kept, and the file stays private.
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# Canopy secret keys"), "{text}");
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    // No temp files left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[cfg(unix)]
#[test]
fn key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);
    write_key_file(&path, &format!("key-a {KEY_A}\n"), 0o644);
    let e = Keyring::load_file(&path).unwrap_err();
    assert!(
        matches!(e, SealError::Permissions { mode: 0o644, .. }),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("chmod 600"),
        "{text}"
    );
    assert!(!text.contains(KEY_A));
    // Rotation refuses too, and leaves the file alone.
    assert!(matches!(
        add_primary_key_to_file(&path),
        Err(SealError::Permissions { .. })
    ));
    write_key_file(&path, &format!("key-a {KEY_A}\n"), 0o640);
    assert!(Keyring::load_file(&path).is_err());
    write_key_file(&path, &format!("key-a {KEY_A}\n"), 0o600);
    assert_eq!(Keyring::load_file(&path).unwrap().primary_id(), "key-a");
    write_key_file(&path, &format!("key-a {KEY_A}\n"), 0o400);
    assert_eq!(Keyring::load_file(&path).unwrap().primary_id(), "key-a");
}

#[test]
fn key_file_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);
    write_key_file(
        &path,
        &format!("# a comment\n\n  key-b   {KEY_B}  \n# old\nkey-a {KEY_A}\n"),
        0o600,
    );
    let k = Keyring::load_file(&path).unwrap();
    assert_eq!(k.ids().collect::<Vec<_>>(), ["key-b", "key-a"]);
    assert_eq!(k.primary_id(), "key-b");
}

#[test]
fn env_parsing() {
    let k = ring(&format!("key-b {KEY_B};key-a {KEY_A}"));
    assert_eq!(k.ids().collect::<Vec<_>>(), ["key-b", "key-a"]);
    let k = ring(&format!("key-b {KEY_B}\nkey-a {KEY_A}\n"));
    assert_eq!(k.ids().collect::<Vec<_>>(), ["key-b", "key-a"]);
    let k = ring(&format!(" ; key-a {KEY_A} ; "));
    assert_eq!(k.primary_id(), "key-a");

    let short = STANDARD.encode([7u8; 16]);
    for (bad, what) in [
        (String::new(), "holds no key"),
        ("  ;  ".to_string(), "holds no key"),
        (KEY_A.to_string(), "expected `<key-id>"),
        (format!("Key-A {KEY_A}"), "invalid key id"),
        (format!("{} {KEY_A}", "k".repeat(33)), "invalid key id"),
        ("key-a not-base64!".to_string(), "not valid base64"),
        (format!("key-a {short}"), "must be 32 bytes, got 16"),
        (format!("key-a {KEY_A};key-a {KEY_B}"), "duplicate key id"),
        (format!("key-a {KEY_A} extra"), "expected `<key-id>"),
    ] {
        let e = Keyring::from_env_value(&bad).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(what), "{bad:?}: {text}");
        assert!(text.contains(ENV_VAR), "{text}");
        for secret in [KEY_A, KEY_B, short.as_str()] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    let e = Keyring::from_env_value(&format!("key-a {KEY_A};key-b {short}")).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn generate_creates_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);
    let k = Keyring::generate_file(&path).unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    let id = k.primary_id();
    assert_eq!(id.len(), "k-20260101-abcd".len(), "{id}");
    assert!(id.starts_with("k-") && id.as_bytes()[10] == b'-', "{id}");
    assert!(id[2..10].bytes().all(|b| b.is_ascii_digit()), "{id}");
    assert!(id[11..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let loaded = Keyring::load_file(&path).unwrap();
    assert_eq!(loaded.primary_id(), id);
    assert_eq!(loaded.open(&k.seal(b"x", b"y"), b"y").unwrap(), b"x");
    // Never replaces an existing file.
    assert!(matches!(
        Keyring::generate_file(&path),
        Err(SealError::AlreadyExists(_))
    ));
    assert_eq!(Keyring::load_file(&path).unwrap().primary_id(), id);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    // The directory is created when missing.
    let nested = dir.path().join("data").join(KEY_FILE_NAME);
    Keyring::generate_file(&nested).unwrap();
    assert!(Keyring::load_file(&nested).is_ok());
}

#[test]
fn load_or_generate_prefers_env_then_file_then_generates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);
    let env = format!("key-a {KEY_A}");
    let (k, origin) = Keyring::load_or_generate(&path, Some(&env)).unwrap();
    assert_eq!((k.primary_id(), origin), ("key-a", KeyOrigin::Env));
    assert!(!path.exists(), "env keys never create a file");

    let (generated, origin) = Keyring::load_or_generate(&path, None).unwrap();
    assert_eq!(origin, KeyOrigin::Generated(path.clone()));
    assert!(origin.to_string().contains(KEY_FILE_NAME));
    let (loaded, origin) = Keyring::load_or_generate(&path, None).unwrap();
    assert_eq!(origin, KeyOrigin::File(path.clone()));
    assert_eq!(loaded.primary_id(), generated.primary_id());

    // A broken env value is an error, not a silent fallback to the file.
    assert!(Keyring::load_or_generate(&path, Some("")).is_err());
}

#[test]
fn debug_shows_ids_only() {
    let k = ring(&format!("key-b {KEY_B}; key-a {KEY_A}"));
    let text = format!("{k:?}");
    assert!(text.contains("key-b") && text.contains("key-a"), "{text}");
    assert!(!text.contains(KEY_A) && !text.contains(KEY_B), "{text}");
    let hex_a: String = STANDARD
        .decode(KEY_A)
        .unwrap()
        .iter()
        .map(|b| format!("{b}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(!text.contains(&hex_a), "{text}");
}

#[test]
fn derived_keys_follow_the_primary_key_and_the_purpose() {
    let a1 = a().derive_key("peer");
    assert_eq!(*a1, *a().derive_key("peer"), "same key, same purpose");
    assert_ne!(*a1, *a().derive_key("other"), "another purpose");
    let b = ring(&format!("key-b {KEY_B}")).derive_key("peer");
    assert_ne!(*a1, *b, "another key");
    // The primary (first) key decides; older keys do not.
    let ab = ring(&format!("key-a {KEY_A};key-b {KEY_B}")).derive_key("peer");
    assert_eq!(*a1, *ab);
    assert_ne!(
        &a1[..],
        &STANDARD.decode(KEY_A).unwrap()[..],
        "not the key itself"
    );
}
