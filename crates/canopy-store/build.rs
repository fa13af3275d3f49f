//! `sqlx::migrate!` embeds the migration files at compile time, but cargo does not know to
//! rebuild when one is added; this tells it to.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
