//! The identity and tenancy commands as a new user drives them: the built binary against a test
//! server, with a private credentials file (`CANOPY_CREDENTIALS`): save the bootstrap token with
//! `canopy login --token-file`, create a project and a read-only user, log in as that user with
//! a password, see reads work and writes refused, revoke, log out.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use canopy_testkit::TestControlPlane;

struct Cli<'a> {
    cp: &'a TestControlPlane,
    credentials: std::path::PathBuf,
}

impl Cli<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_canopy"));
        cmd.arg("--server")
            .arg(&self.cp.url)
            .args(args)
            .env("CANOPY_CREDENTIALS", &self.credentials)
            .env_remove("CANOPY_TOKEN")
            .env_remove("CANOPY_SERVER")
            .env_remove("CANOPY_PROJECT")
            .env("RUST_LOG", "warn");
        cmd
    }

    /// Runs the command with `stdin` as its standard input.
    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run canopy");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        result(out)
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        result(self.command(args).output().expect("run canopy"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "canopy {args:?} failed:\n{out}\n{err}");
        out
    }
}

fn result(o: Output) -> (bool, String, String) {
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

// The CLI runs as a child process and blocks this thread; the server needs other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_sets_up_projects_users_and_tokens() {
    let cp = TestControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        cp: &cp,
        credentials: dir.path().join("credentials.json"),
    };

    // Without credentials: a clear 401.
    let (ok, _, err) = cli.run(&["project", "list"]);
    assert!(!ok);
    assert!(err.contains("authentication required"), "{err}");

    // Save the bootstrap administrator token; the token is never printed.
    let token_file = cp.data_dir().join("admin.token");
    let out = cli.ok(&["login", "--token-file", token_file.to_str().unwrap()]);
    assert!(out.contains("as admin"), "{out}");
    assert!(!out.contains(cp.admin_token()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cli.credentials)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(cli.ok(&["whoami"]).contains("canopy-admin"));

    // A project in a new organization, and a read-only user with a password.
    cli.ok(&["org", "create", "acme", "--description", "Acme stores"]);
    cli.ok(&["project", "create", "shop", "--org", "acme"]);
    let list = cli.ok(&["project", "list"]);
    assert!(list.contains("shop") && list.contains("acme"), "{list}");
    let (ok, out, err) = cli.run_with_stdin(
        &[
            "user",
            "create",
            "alice",
            "--role",
            "shop_cat-r",
            "--role",
            "shop_ao-r",
            "--password",
            "--password-stdin",
        ],
        "correct horse battery\n",
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("shop_cat-r"), "{out}");
    assert!(cli.ok(&["user", "list"]).contains("alice"));

    // Alice logs in with her password (replacing the saved admin credential).
    let (ok, out, err) = cli.run_with_stdin(
        &["login", "-u", "alice", "--password-stdin"],
        "correct horse battery\n",
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("as alice"), "{out}");
    let (ok, _, err) = cli.run_with_stdin(&["login", "-u", "alice", "--password-stdin"], "nope\n");
    assert!(!ok);
    assert!(err.contains("wrong user name or password"), "{err}");
    // Reads work, writes and administration are refused with the role that is needed.
    cli.ok(&["-p", "shop", "catalog", "application", "list"]);
    let (ok, _, err) = cli.run(&[
        "-p",
        "shop",
        "catalog",
        "registry",
        "create",
        "r",
        "--type",
        "image",
        "--root-url",
        "https://r.example",
    ]);
    assert!(!ok);
    assert!(err.contains("cat-rw"), "{err}");
    let (ok, _, err) = cli.run(&["user", "list"]);
    assert!(!ok);
    assert!(err.contains("canopy-admin"), "{err}");
    // Another tenant's project looks like a missing one.
    let (ok, _, err) = cli.run(&["-p", "default", "catalog", "application", "list"]);
    assert!(!ok);
    assert!(err.contains("project default not found"), "{err}");

    // An API token of her own, usable with --token, revoked at once.
    let out = cli.ok(&["token", "create", "ci", "--ttl", "30d"]);
    let api = out
        .split_whitespace()
        .find(|w| w.starts_with("cnp_a_"))
        .expect("the token is shown once")
        .to_string();
    let id = cli.ok(&["token", "list"]);
    assert!(!id.contains(&api), "lists never show the token");
    let token_id = id
        .lines()
        .find(|l| l.contains(" ci "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let who = cli.ok(&["--token", &api, "whoami"]);
    assert!(who.contains("alice"), "{who}");
    cli.ok(&["token", "revoke", &token_id]);
    let (ok, _, err) = cli.run(&["--token", &api, "whoami"]);
    assert!(!ok);
    assert!(err.contains("revoked") || err.contains("invalid"), "{err}");

    // Logging out ends the session; an administrator deletes the project (asks for --yes).
    assert!(cli.ok(&["logout"]).contains("logged out"));
    let (ok, _, _) = cli.run(&["whoami"]);
    assert!(!ok);
    cli.ok(&["login", "--token-file", token_file.to_str().unwrap()]);
    let (ok, _, err) = cli.run(&["project", "delete", "shop"]);
    assert!(!ok);
    assert!(err.contains("--yes"), "{err}");
    cli.ok(&["project", "delete", "shop", "--yes"]);
    assert!(!cli.ok(&["project", "list"]).contains("shop"));
    let audit = cli.ok(&["audit", "list", "-A", "--limit", "100"]);
    assert!(audit.contains("/v1/projects/shop"), "{audit}");
    assert!(
        !audit.contains("correct horse"),
        "no secrets in the audit log"
    );
}

// Changing one's own password asks for the current one; an administrator setting someone
// else's does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_ones_own_password_asks_for_the_current_one() {
    let cp = TestControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        cp: &cp,
        credentials: dir.path().join("credentials.json"),
    };
    let token_file = cp.data_dir().join("admin.token");
    cli.ok(&["login", "--token-file", token_file.to_str().unwrap()]);
    let (ok, out, err) = cli.run_with_stdin(
        &[
            "user",
            "create",
            "bob",
            "--role",
            "default_cat-r",
            "--password",
            "--password-stdin",
        ],
        "bob's first password\n",
    );
    assert!(ok, "{out}{err}");
    // The administrator sets bob's password: one line, no current password.
    let (ok, out, err) = cli.run_with_stdin(
        &["user", "passwd", "bob", "--password-stdin"],
        "set by the admin\n",
    );
    assert!(ok, "{out}{err}");

    // Bob changes his own: the current one first, then the new one.
    let (ok, out, err) = cli.run_with_stdin(
        &["login", "-u", "bob", "--password-stdin"],
        "set by the admin\n",
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = cli.run_with_stdin(
        &["user", "passwd", "bob", "--password-stdin"],
        "not the current one\nbob's new password\n",
    );
    assert!(!ok);
    assert!(err.contains("current password"), "{err}");
    let (ok, out, err) = cli.run_with_stdin(
        &["user", "passwd", "bob", "--password-stdin"],
        "set by the admin\nbob's new password\n",
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("password of bob changed"), "{out}");
    let (ok, out, err) = cli.run_with_stdin(
        &["login", "-u", "bob", "--password-stdin"],
        "bob's new password\n",
    );
    assert!(ok, "{out}{err}");

    // Logging out with a saved API token forgets it and says it stays valid.
    let token = cli.ok(&["token", "create", "ci"]);
    let api = token
        .split_whitespace()
        .find(|w| w.starts_with("cnp_a_"))
        .unwrap()
        .to_string();
    let api_file = dir.path().join("api.token");
    std::fs::write(&api_file, &api).unwrap();
    cli.ok(&["login", "--token-file", api_file.to_str().unwrap()]);
    let out = cli.ok(&["logout"]);
    assert!(
        out.contains("stays valid") && out.contains("canopy token revoke"),
        "{out}"
    );
    assert!(cli.ok(&["--token", &api, "whoami"]).contains("bob"));
}
