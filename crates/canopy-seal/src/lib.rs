//! Secrets at rest. Canopy stores registry credentials and deployment parameters (which may be
//! secret) in its database; a copy of the database (a backup, a dump, a stolen disk) must not
//! hand them out. This crate seals such values with an AEAD key the database never sees.
//!
//! # Keys
//!
//! A [`Keyring`] holds one or more 256-bit keys, each with a short id. The first key is the
//! *primary*: it seals new values. Every key opens values sealed with it, so a key can be
//! rotated without downtime:
//!
//! 1. prepend a new key ([`add_primary_key_to_file`]),
//! 2. re-seal the stored values under the new primary (`Store::reseal_all` in `canopy-store`;
//!    `canopy key rotate` does steps 1 and 2, `canopy key reseal` step 2 alone),
//! 3. restart every server so it loads the new keyring (a server still on the old keyring
//!    cannot open values sealed under the new key),
//! 4. once every server runs with the new keyring, remove the old key's line.
//!
//! The keys come from the environment variable [`ENV_VAR`] when it is set, else from the key
//! file [`KEY_FILE_NAME`] in the data directory, which is generated on first start
//! ([`Keyring::load_or_generate`]). Keep the key file (or the variable) backed up *apart from*
//! the database: without it the sealed values cannot be read, and next to it they are not
//! protected.
//!
//! # Key file format
//!
//! Text, one key per line:
//!
//! ```text
//! # comments and blank lines are ignored
//! k-20260101-3fa9 q1Xr8m0bX0nQzY5rD5m0xkq2w4Jf1lM2yG8uWcJt6sE=
//! k-20250601-0c11 8vY0n3bX2kq9wP7sL4mZ1aR6tU5eH0jD3gF2cB1nA0o=
//! ```
//!
//! Each line is `<key-id> <base64 of 32 bytes>` (standard alphabet, padded). Key ids are 1 to 32
//! characters of `a-z`, `0-9` and `-`, unique in the file. The first key line is the primary.
//! On unix the file must not be accessible to group or others (`chmod 600`). The environment
//! variable holds the same lines, separated by newlines or `;`.
//!
//! # Sealed values
//!
//! [`Keyring::seal`] returns text: `cnpenc:v1:<key-id>:<base64url(nonce || ciphertext)>`
//! (URL-safe alphabet, no padding), XChaCha20-Poly1305 with a random 24-byte nonce. The
//! *associated data* (AAD) given to `seal` must be given again to [`Keyring::open`]: callers bind
//! a value to where it is stored (table, project, row key) so a sealed value copied to another
//! row does not open.
//!
//! No error of this crate ([`SealError`]) ever contains key material or plaintext, and
//! [`Keyring`]'s `Debug` shows key ids only.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, Zeroizing};

/// Name of the key file in the server's data directory.
pub const KEY_FILE_NAME: &str = "secret.key";
/// Environment variable that, when set, holds the keyring instead of the key file.
pub const ENV_VAR: &str = "CANOPY_SECRET_KEY";

/// Every sealed value starts with this (any version).
const SEALED_PREFIX: &str = "cnpenc:";
/// Prefix of the one version this crate writes and reads.
const V1_PREFIX: &str = "cnpenc:v1:";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const MAX_ID_LEN: usize = 32;

/// Errors of this crate. Messages name files, line numbers and key ids, never key material or
/// plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot {action} key file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "key file {path} is accessible by group or others (mode {mode:04o}); \
         restrict it with `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {0} already exists")]
    AlreadyExists(PathBuf),
    #[error("{source_name}, line {line}: {reason}")]
    Parse {
        /// The file path, or the environment variable's name.
        source_name: String,
        line: usize,
        reason: String,
    },
    #[error("{0} holds no key (expected lines `<key-id> <base64 of 32 bytes>`)")]
    NoKeys(String),
    #[error(
        "the value was sealed with key {0:?}, which is not in the keyring \
         (was that key's line removed too early?)"
    )]
    UnknownKey(String),
    #[error("the sealed value does not open: it was altered, or it belongs to another record")]
    Tampered,
    #[error("the sealed value is malformed: {0}")]
    Malformed(&'static str),
    #[error("the system's random number generator failed")]
    Random,
}

/// Where a keyring came from (for a log line; holds no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The environment variable [`ENV_VAR`].
    Env,
    /// An existing key file.
    File(PathBuf),
    /// A key file generated just now (back it up).
    Generated(PathBuf),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::Env => write!(f, "environment variable {ENV_VAR}"),
            KeyOrigin::File(p) => write!(f, "key file {}", p.display()),
            KeyOrigin::Generated(p) => write!(f, "newly generated key file {}", p.display()),
        }
    }
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
    /// The key itself, kept only to derive purpose-bound keys from ([`Keyring::derive_key`]).
    secret: Zeroizing<[u8; KEY_LEN]>,
}

/// One or more keys; the first (primary) seals, all open. Cheap to share behind an `Arc`.
pub struct Keyring {
    /// Never empty.
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Reads a key file (see the crate docs for the format). On unix, refuses a file that group
    /// or others can access.
    pub fn load_file(path: &Path) -> Result<Keyring, SealError> {
        let io_err = |action| {
            move |source| SealError::Io {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        let mut file = fs::File::open(path).map_err(io_err("open"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file
                .metadata()
                .map_err(io_err("inspect"))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(SealError::Permissions {
                    path: path.to_path_buf(),
                    mode: mode & 0o7777,
                });
            }
        }
        let mut text = Zeroizing::new(String::new());
        io::Read::read_to_string(&mut file, &mut text).map_err(io_err("read"))?;
        Keyring::parse(&text, &path.display().to_string())
    }

    /// Parses the value of [`ENV_VAR`]: the key file's lines, separated by newlines or `;`.
    pub fn from_env_value(value: &str) -> Result<Keyring, SealError> {
        let text = Zeroizing::new(value.replace(';', "\n"));
        Keyring::parse(&text, ENV_VAR)
    }

    /// Creates a key file holding one new key, with mode 0600 (on unix), atomically: the file
    /// appears complete or not at all, and an existing file is never replaced. Creates the
    /// file's directory if needed.
    pub fn generate_file(path: &Path) -> Result<Keyring, SealError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| SealError::Io {
                action: "create the directory of",
                path: path.to_path_buf(),
                source,
            })?;
        }
        let id = new_key_id(|_| false)?;
        let key = Zeroizing::new(new_key()?);
        let mut text = Zeroizing::new(String::from(FILE_HEADER));
        push_key_line(&mut text, &id, &key);
        write_new_file(path, text.as_bytes(), false)?;
        Ok(Keyring {
            keys: vec![Key {
                cipher: XChaCha20Poly1305::new(&(*key).into()),
                id,
                secret: key,
            }],
        })
    }

    /// The keyring a server starts with: from `env` (the value of [`ENV_VAR`], when set), else
    /// from the key file at `path`, else a new key file generated at `path`.
    pub fn load_or_generate(
        path: &Path,
        env: Option<&str>,
    ) -> Result<(Keyring, KeyOrigin), SealError> {
        if let Some(value) = env {
            return Ok((Keyring::from_env_value(value)?, KeyOrigin::Env));
        }
        match Keyring::load_file(path) {
            Ok(k) => return Ok((k, KeyOrigin::File(path.to_path_buf()))),
            Err(SealError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match Keyring::generate_file(path) {
            Ok(k) => Ok((k, KeyOrigin::Generated(path.to_path_buf()))),
            // Another process generated it meanwhile: use theirs.
            Err(SealError::AlreadyExists(_)) => Ok((
                Keyring::load_file(path)?,
                KeyOrigin::File(path.to_path_buf()),
            )),
            Err(e) => Err(e),
        }
    }

    /// The id of the primary key (the one [`Keyring::seal`] uses).
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Ids of every key, primary first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// A 256-bit key for another purpose than sealing, derived from the primary key with
    /// HKDF-SHA256 and `purpose` as its info (e.g. the key replicas of one database
    /// authenticate each other with). Different purposes give independent keys; the primary
    /// key cannot be recovered from one. Every process with the same primary key derives the
    /// same key.
    pub fn derive_key(&self, purpose: &str) -> Zeroizing<[u8; KEY_LEN]> {
        let hk =
            hkdf::Hkdf::<sha2::Sha256>::new(Some(b"canopy-seal derive v1"), &*self.keys[0].secret);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes is far below HKDF-SHA256's limit of 8160: expand cannot fail.
        hk.expand(purpose.as_bytes(), &mut *out)
            .unwrap_or_else(|_| unreachable!("32 bytes of HKDF-SHA256 output"));
        out
    }

    /// Seals `plaintext` with the primary key, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let key = &self.keys[0];
        // The system RNG failing is not something a caller can handle; the process has bigger
        // problems (same behaviour as the standard library's hash map seeding).
        let nonce = XNonce::try_generate().expect("system random number generator failed");
        let ciphertext = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // XChaCha20-Poly1305 only refuses messages over 256 GiB.
            .expect("plaintext too large to seal");
        let mut raw = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ciphertext);
        format!("{V1_PREFIX}{}:{}", key.id, URL_SAFE_NO_PAD.encode(&raw))
    }

    /// Opens a value made by [`Keyring::seal`] with any key of this keyring and the same `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some(rest) = sealed.strip_prefix(V1_PREFIX) else {
            return Err(SealError::Malformed(if is_sealed(sealed) {
                "unsupported version (written by a newer Canopy?)"
            } else {
                "missing the cnpenc:v1: prefix"
            }));
        };
        let Some((id, data)) = rest.split_once(':') else {
            return Err(SealError::Malformed("missing the key id"));
        };
        if !valid_id(id) {
            return Err(SealError::Malformed("invalid key id"));
        }
        let Some(key) = self.keys.iter().find(|k| k.id == id) else {
            return Err(SealError::UnknownKey(id.to_string()));
        };
        let raw = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| SealError::Malformed("payload is not base64url"))?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed("payload too short"));
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Malformed("bad nonce"))?;
        key.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| SealError::Tampered)
    }

    fn parse(text: &str, source_name: &str) -> Result<Keyring, SealError> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let Some((id, encoded)) = parse_line(line).map_err(|reason| SealError::Parse {
                source_name: source_name.to_string(),
                line: i + 1,
                reason,
            })?
            else {
                continue;
            };
            if keys.iter().any(|k| k.id == id) {
                return Err(SealError::Parse {
                    source_name: source_name.to_string(),
                    line: i + 1,
                    reason: format!("duplicate key id {id:?}"),
                });
            }
            let secret = decode_key(encoded).map_err(|reason| SealError::Parse {
                source_name: source_name.to_string(),
                line: i + 1,
                reason: format!("key {id:?}: {reason}"),
            })?;
            let cipher = XChaCha20Poly1305::new(&(*secret).into());
            keys.push(Key {
                id: id.to_string(),
                cipher,
                secret,
            });
        }
        if keys.is_empty() {
            return Err(SealError::NoKeys(source_name.to_string()));
        }
        Ok(Keyring { keys })
    }
}

/// Whether `s` is a sealed value (of any version), as opposed to legacy plaintext.
pub fn is_sealed(s: &str) -> bool {
    s.starts_with(SEALED_PREFIX)
}

/// The id of the key a sealed value was sealed with, if `s` is a well-formed v1 sealed value.
pub fn sealed_key_id(s: &str) -> Option<&str> {
    let (id, _) = s.strip_prefix(V1_PREFIX)?.split_once(':')?;
    valid_id(id).then_some(id)
}

/// The rotation step: generates a new key and makes it the primary of the key file at `path`
/// (its line goes before the first key line; the other lines are kept). The file is checked
/// like [`Keyring::load_file`] and replaced atomically. Returns the new key's id.
pub fn add_primary_key_to_file(path: &Path) -> Result<String, SealError> {
    let existing = Keyring::load_file(path)?;
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| SealError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?);
    let id = new_key_id(|candidate| existing.ids().any(|i| i == candidate))?;
    let key = Zeroizing::new(new_key()?);
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 80));
    let mut inserted = false;
    for line in text.lines() {
        if !inserted && matches!(parse_line(line), Ok(Some(_))) {
            push_key_line(&mut out, &id, &key);
            inserted = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !inserted {
        // Unreachable: load_file found a key line.
        push_key_line(&mut out, &id, &key);
    }
    write_new_file(path, out.as_bytes(), true)?;
    Ok(id)
}

const FILE_HEADER: &str = "\
# Canopy secret keys: one `<key-id> <base64 of 32 bytes>` per line; the first is the primary
# (it encrypts), every key decrypts. Keep this file private (chmod 600) and back it up apart
# from the database: without it the encrypted values cannot be read.
# Rotate with `canopy key rotate`.
";

/// A key line: `Ok(None)` for blanks and comments. Errors never quote the line.
fn parse_line(line: &str) -> Result<Option<(&str, &str)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let (Some(id), Some(key), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected `<key-id> <base64 of 32 bytes>`".into());
    };
    if !valid_id(id) {
        return Err(format!(
            "invalid key id: use 1 to {MAX_ID_LEN} characters of a-z, 0-9 and -"
        ));
    }
    Ok(Some((id, key)))
}

fn decode_key(encoded: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let mut bytes = STANDARD
        .decode(encoded)
        .map_err(|_| "not valid base64".to_string())?;
    let len = bytes.len();
    let key = <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| format!("must be {KEY_LEN} bytes, got {len}"));
    bytes.zeroize();
    key
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn new_key() -> Result<[u8; KEY_LEN], SealError> {
    <[u8; KEY_LEN]>::try_generate().map_err(|_| SealError::Random)
}

/// `k-<yyyymmdd>-<4 hex>`, not `taken`.
fn new_key_id(taken: impl Fn(&str) -> bool) -> Result<String, SealError> {
    let today = time::OffsetDateTime::now_utc().date();
    loop {
        let [a, b] = <[u8; 2]>::try_generate().map_err(|_| SealError::Random)?;
        let id = format!(
            "k-{:04}{:02}{:02}-{a:02x}{b:02x}",
            today.year(),
            u8::from(today.month()),
            today.day()
        );
        if !taken(&id) {
            return Ok(id);
        }
    }
}

fn push_key_line(out: &mut String, id: &str, key: &[u8; KEY_LEN]) {
    out.push_str(id);
    out.push(' ');
    out.push_str(&Zeroizing::new(STANDARD.encode(key)));
    out.push('\n');
}

/// Writes `content` (mode 0600) atomically and durably through `canopy-fs`: replacing `path`
/// when `replace` (keeping its owner, so a rotation run as root does not lock the server's user
/// out), else failing with [`SealError::AlreadyExists`] if it exists.
fn write_new_file(path: &Path, content: &[u8], replace: bool) -> Result<(), SealError> {
    let file = canopy_fs::AtomicFile::new(path)
        .mode(0o600)
        .keep_owner(replace);
    let (action, done) = if replace {
        ("replace", file.write(content))
    } else {
        ("create", file.create(content))
    };
    done.map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists if !replace => SealError::AlreadyExists(path.to_path_buf()),
        _ => SealError::Io {
            action,
            path: path.to_path_buf(),
            source,
        },
    })
}

#[cfg(test)]
mod tests;
