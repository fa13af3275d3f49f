//! `canopy key`: the secret key that encrypts registry credentials and deployment parameters at
//! rest (see `canopy-seal`). Works on the server's data directory and database directly, not
//! through the API: run it on the server's machine.
//!
//! - `rotate`: prepends a new primary key to `DATA_DIR/secret.key`, then re-encrypts every
//!   sealed row under it.
//! - `reseal`: re-encrypts every row under the current primary (after the keys in
//!   `CANOPY_SECRET_KEY` were changed by hand, or to encrypt rows from before encryption).
//!
//! Output names key ids, never key material.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use canopy_seal::{ENV_VAR, KEY_FILE_NAME, Keyring};
use canopy_store::{ResealReport, Store};

/// `canopy key ...`
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Add a new primary key to DATA_DIR/secret.key and re-encrypt every stored secret with it.
    Rotate(KeyArgs),
    /// Re-encrypt every stored secret with the current primary key (e.g. after prepending a key
    /// to CANOPY_SECRET_KEY).
    Reseal(KeyArgs),
}

/// Where the server keeps its key and database (the same flags as `canopy server`).
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// The server's data directory (holds secret.key and, without --database-url, canopy.db).
    #[arg(long, default_value = "./canopy-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL of the server's database; when unset, DATA_DIR/canopy.db.
    #[arg(
        long,
        env = "CANOPY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

pub async fn run(command: KeyCommand, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let env = std::env::var(ENV_VAR).ok();
    match command {
        KeyCommand::Rotate(args) => rotate(&args, env.as_deref(), out).await,
        KeyCommand::Reseal(args) => reseal(&args, env.as_deref(), out).await,
    }
}

async fn rotate(
    args: &KeyArgs,
    env: Option<&str>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if env.is_some() {
        bail!(
            "the secret key comes from {ENV_VAR}, which this command cannot change: prepend a new \
             key line `<key-id> <base64 of 32 bytes>` to the variable (separated by `;`) on every \
             server, restart them, then run `canopy key reseal` with the new value set"
        );
    }
    let path = args.data_dir.join(KEY_FILE_NAME);
    if !path.exists() {
        bail!(
            "no key file at {}: nothing to rotate (the server creates it on its first start)",
            path.display()
        );
    }
    // Open the database first, so a wrong directory or URL changes no key file.
    let store = open_store(args).await?;
    let new_id = canopy_seal::add_primary_key_to_file(&path)?;
    writeln!(
        out,
        "Added key {new_id} to {} as the primary key.",
        path.display()
    )?;
    let keyring = Keyring::load_file(&path)?;
    let report = reseal_with(store, keyring).await?;
    print_report(out, &report, &new_id)?;
    writeln!(
        out,
        "Restart every server that uses this key file so it loads the new key (until then they \
         cannot read the re-encrypted values). Once every server runs with the new file, the \
         older key lines may be removed from {}.",
        path.display()
    )?;
    Ok(())
}

async fn reseal(
    args: &KeyArgs,
    env: Option<&str>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let path = args.data_dir.join(KEY_FILE_NAME);
    // The keys the server uses; never generated here (a key only this command knew would lock
    // the server out of everything it re-encrypts).
    let (keyring, origin) = match env {
        Some(value) => (
            Keyring::from_env_value(value)?,
            format!("variable {ENV_VAR}"),
        ),
        None if path.exists() => (
            Keyring::load_file(&path)?,
            format!("key file {}", path.display()),
        ),
        None => bail!(
            "no secret key: {ENV_VAR} is not set and there is no key file at {} (the server \
             creates it on its first start)",
            path.display()
        ),
    };
    let store = open_store(args).await?;
    let primary = keyring.primary_id().to_string();
    let older = keyring.ids().count() > 1;
    let report = reseal_with(store, keyring).await?;
    print_report(out, &report, &primary)?;
    if older {
        writeln!(
            out,
            "Keys other than {primary} may now be removed from the {origin} once every server \
             runs with {primary} as its primary key."
        )?;
    }
    Ok(())
}

/// The server's store: PostgreSQL when a URL is given, else `DATA_DIR/canopy.db`, which must
/// exist (a wrong directory must not get a new empty database).
async fn open_store(args: &KeyArgs) -> anyhow::Result<Store> {
    match &args.database_url {
        Some(url) => Store::connect(url)
            .await
            .context("cannot open the database given by --database-url"),
        None => {
            let db = args.data_dir.join("canopy.db");
            if !db.is_file() {
                bail!(
                    "no database at {}: pass the server's --data-dir (or --database-url)",
                    db.display()
                );
            }
            Store::open_sqlite(&db)
                .await
                .with_context(|| format!("cannot open the database {}", db.display()))
        }
    }
}

async fn reseal_with(store: Store, keyring: Keyring) -> anyhow::Result<ResealReport> {
    let store = store.with_keyring(Arc::new(keyring));
    let result = store.reseal_all().await;
    store.close().await;
    result.context("re-encrypting the stored secrets failed (run the command again to resume)")
}

fn print_report(
    out: &mut (dyn Write + Send),
    report: &ResealReport,
    key_id: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "Re-encrypted with key {key_id}: {} registries, {} deployments (rows already under it \
         were left alone).",
        report.registries, report.deployments
    )
}
