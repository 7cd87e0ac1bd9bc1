//! `vane passwd --scram`: the binary edits a SCRAM-SHA-256 credentials file that
//! `vane_auth::scram::file` parses and whose keys match the passwords given.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vane_auth::scram::file::parse_str;
use vane_auth::{
    CredentialStore, MemoryCredentialStore, PasswordFile, PasswordHash, ScramCredentials,
};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vane-passwd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `vane` with `args` in `dir`, with `stdin` as its standard input (none: /dev/null).
fn vane(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vane"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command.spawn().expect("run the vane binary");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for vane")
}

fn succeeds(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = vane(dir, args, stdin);
    assert!(
        out.status.success(),
        "vane {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = vane(dir, args, stdin);
    assert!(!out.status.success(), "vane {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn load(path: &Path) -> (String, MemoryCredentialStore) {
    let text = std::fs::read_to_string(path).expect("read the credentials file");
    let store = parse_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    (text, store)
}

/// The stored credentials are the ones `password` gives with the stored salt and count.
fn assert_password(store: &MemoryCredentialStore, user: &str, password: &str, iterations: u32) {
    let stored = store
        .scram(user)
        .unwrap_or_else(|| panic!("{user} missing"));
    assert_eq!(stored.iterations, iterations, "iterations of {user}");
    let derived = ScramCredentials::from_password_with_salt(password, &stored.salt, iterations)
        .expect("derive credentials");
    assert_eq!(
        derived.stored_key, stored.stored_key,
        "stored_key of {user}"
    );
    assert_eq!(
        derived.server_key, stored.server_key,
        "server_key of {user}"
    );
}

#[test]
fn add_replace_and_delete_users() {
    let dir = TempDir::new("cycle");
    let d = &dir.0;
    let file = dir.path("users.scram");

    let out = succeeds(
        d,
        &[
            "passwd",
            "--scram",
            "users.scram",
            "alice",
            "--password",
            "alice-pw",
        ],
        None,
    );
    assert!(out.contains("added"), "{out}");
    succeeds(
        d,
        &[
            "passwd",
            "--scram",
            "users.scram",
            "bob",
            "--stdin",
            "--iterations",
            "4096",
        ],
        Some("bob pw\n"),
    );
    let (text, store) = load(&file);
    assert_eq!(store.len(), 2);
    assert_password(&store, "alice", "alice-pw", 10_000);
    assert_password(&store, "bob", "bob pw", 4096);
    assert_eq!(text.lines().count(), 2);
    assert!(text.starts_with("alice:SCRAM-SHA-256:10000:"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }

    // Comments and blank lines written by hand survive every edit.
    std::fs::write(&file, format!("# Vane users\n\n{text}# end\n")).expect("write");
    let before = store.scram("alice").expect("alice");
    let out = succeeds(
        d,
        &["passwd", "--scram", "users.scram", "alice", "--stdin"],
        Some("new alice pw\r\n"),
    );
    assert!(out.contains("replaced"), "{out}");
    let (text, store) = load(&file);
    assert_eq!(store.len(), 2);
    assert_password(&store, "alice", "new alice pw", 10_000);
    assert_ne!(
        store.scram("alice").expect("alice").salt,
        before.salt,
        "a new salt"
    );
    assert_password(&store, "bob", "bob pw", 4096);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        (lines[0], lines[1], lines[4]),
        ("# Vane users", "", "# end")
    );
    assert!(lines[2].starts_with("alice:"), "replaced in place: {text}");

    let out = succeeds(
        d,
        &["passwd", "--scram", "users.scram", "bob", "--delete"],
        None,
    );
    assert!(out.contains("deleted"), "{out}");
    let (text, store) = load(&file);
    assert_eq!(store.len(), 1);
    assert!(store.scram("bob").is_none());
    assert_password(&store, "alice", "new alice pw", 10_000);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.starts_with("# Vane users\n\nalice:") && text.ends_with("# end\n"));

    // Deleting a user that is not there is an error and changes nothing.
    let err = fails(
        d,
        &["passwd", "--scram", "users.scram", "bob", "--delete"],
        None,
    );
    assert!(err.contains("no such user"), "{err}");
    assert_eq!(load(&file).0, text);
    // Nothing is left behind but the file.
    let names: Vec<_> = std::fs::read_dir(d)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["users.scram"]);
}

#[test]
fn without_scram_a_mosquitto_password_file_is_written() {
    let dir = TempDir::new("mosquitto");
    let d = &dir.0;
    let file = dir.path("passwd");
    // A file mosquitto_passwd could have written (101 iterations), kept as it is.
    let legacy = {
        let first = PasswordHash::with_salt("old", b"0123456789ab".to_vec(), 101);
        vane_auth::password::format_line("dev", &first).expect("line")
    };
    std::fs::write(&file, format!("# from mosquitto\n{legacy}\n")).expect("write");
    let out = succeeds(
        d,
        &[
            "passwd",
            "passwd",
            "alice",
            "--password",
            "pw1",
            "--iterations",
            "1000",
        ],
        None,
    );
    assert!(out.contains("added user \"alice\""), "{out}");
    let out = succeeds(
        d,
        &["passwd", "passwd", "bob", "--stdin", "--iterations", "2000"],
        Some("pw2\n"),
    );
    assert!(out.contains("added user \"bob\""), "{out}");
    let text = std::fs::read_to_string(&file).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["# from mosquitto", legacy.as_str()]);
    assert!(lines[2].starts_with("alice:$7$1000$"), "{text}");
    assert!(lines[3].starts_with("bob:$7$2000$"), "{text}");
    let users = PasswordFile::parse_str(&text).expect("parses");
    assert!(users.verify("alice", b"pw1"));
    assert!(users.verify("bob", b"pw2"));
    assert!(users.verify("dev", b"old"));
    assert!(!users.verify("alice", b"pw2"));

    // Replace in place, with the default iteration count.
    succeeds(d, &["passwd", "passwd", "alice", "--password", "pw3"], None);
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text
        .lines()
        .nth(2)
        .expect("line 3")
        .starts_with("alice:$7$100000$"));
    let users = PasswordFile::parse_str(&text).expect("parses");
    assert!(users.verify("alice", b"pw3"));
    assert!(!users.verify("alice", b"pw1"));

    // Delete.
    let out = succeeds(d, &["passwd", "passwd", "bob", "--delete"], None);
    assert!(out.contains("deleted user \"bob\""), "{out}");
    let users =
        PasswordFile::parse_str(&std::fs::read_to_string(&file).expect("read")).expect("parses");
    assert!(users.get("bob").is_none());
    assert_eq!(users.len(), 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Weak counts, user names with ':', and a broken file are refused.
    let err = fails(
        d,
        &[
            "passwd",
            "passwd",
            "eve",
            "--password",
            "pw",
            "--iterations",
            "999",
        ],
        None,
    );
    assert!(err.contains("999"), "{err}");
    let err = fails(d, &["passwd", "passwd", "e:ve", "--password", "pw"], None);
    assert!(err.contains("invalid user name"), "{err}");
    let broken = dir.path("broken");
    std::fs::write(&broken, "alice:plaintext\n").expect("write");
    let err = fails(d, &["passwd", "broken", "bob", "--password", "pw"], None);
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn without_a_terminal_the_password_must_be_given() {
    let dir = TempDir::new("notty");
    let err = fails(&dir.0, &["passwd", "--scram", "users", "alice"], None);
    assert!(err.contains("not a terminal"), "{err}");
    assert!(!dir.path("users").exists());
    let err = fails(
        &dir.0,
        &["passwd", "--scram", "users", "alice", "--stdin"],
        Some("\n"),
    );
    assert!(err.contains("the password is empty"), "{err}");
}

#[test]
fn weak_iteration_counts_and_bad_user_names_are_refused() {
    let dir = TempDir::new("refused");
    let d = &dir.0;
    let err = fails(
        d,
        &[
            "passwd",
            "--scram",
            "users",
            "alice",
            "--password",
            "pw",
            "--iterations",
            "4095",
        ],
        None,
    );
    assert!(err.contains("4095"), "{err}");
    for user in ["#root", " padded", "a\u{AD}b"] {
        let err = fails(
            d,
            &["passwd", "--scram", "users", user, "--password", "pw"],
            None,
        );
        assert!(err.contains("invalid user name"), "{user:?}: {err}");
    }
    let err = fails(
        d,
        &[
            "passwd",
            "--scram",
            "users",
            "alice",
            "--password",
            "pw",
            "--delete",
        ],
        None,
    );
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(!dir.path("users").exists());
}

#[test]
fn an_invalid_file_is_not_edited() {
    let dir = TempDir::new("invalid");
    let file = dir.path("users");
    let broken = "# users\nalice:SCRAM-SHA-256:4096\n";
    std::fs::write(&file, broken).expect("write");
    let err = fails(
        &dir.0,
        &["passwd", "--scram", "users", "bob", "--password", "pw"],
        None,
    );
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), broken);
}
