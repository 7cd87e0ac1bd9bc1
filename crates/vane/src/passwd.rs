//! `vane passwd`: adds, replaces or deletes a user in a password file.
//!
//! Two formats: without `--scram`, the password file of `[auth] password_file` (user name and
//! password in CONNECT), in Mosquitto's format (`user:$7$iterations$salt$hash`,
//! PBKDF2-HMAC-SHA512); with `--scram`, the SCRAM-SHA-256 credentials file of
//! `[auth] scram_credentials` (MQTT 5.0 enhanced authentication).
//!
//! The file is edited line by line: the user's line is replaced where it stands (or appended),
//! and every other line, comments and blank lines included, is kept as it was. The new file is
//! written beside the old one and renamed over it, so a reader sees the old file or the new
//! one, never half of one; on unix it is readable by its owner only (mode 0600).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use vane_auth::scram::MIN_ITERATIONS;
use vane_auth::{PasswordHash, ScramCredentials};

/// The PBKDF2 iteration count of new SCRAM credentials unless `--iterations` says otherwise.
const DEFAULT_SCRAM_ITERATIONS: u32 = 10_000;

/// The PBKDF2-HMAC-SHA512 iteration count of new password file entries unless `--iterations`
/// says otherwise. Mosquitto writes 101, which a stolen file's hashes barely slow down; OWASP
/// (2023) suggests 210,000 for PBKDF2-HMAC-SHA512. Every CONNECT with a password pays it once
/// (about 40 ms of one core in a release build), on the blocking thread pool: 100,000 is a
/// thousand times Mosquitto's cost to an attacker while a 2-core broker still checks about 25
/// CONNECTs a second during a reconnect storm.
const DEFAULT_PASSWORD_ITERATIONS: u32 = 100_000;

/// The file formats `vane passwd` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `[auth] password_file`, Mosquitto's format.
    Password,
    /// `[auth] scram_credentials`.
    Scram,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Password => "password file",
            Format::Scram => "SCRAM credentials file",
        }
    }

    fn default_iterations(self) -> u32 {
        match self {
            Format::Password => DEFAULT_PASSWORD_ITERATIONS,
            Format::Scram => DEFAULT_SCRAM_ITERATIONS,
        }
    }

    fn min_iterations(self) -> u32 {
        match self {
            Format::Password => vane_auth::password::MIN_NEW_ITERATIONS,
            Format::Scram => MIN_ITERATIONS,
        }
    }

    /// Checks a whole file's text.
    fn parse(self, text: &str) -> Result<()> {
        match self {
            Format::Password => {
                vane_auth::PasswordFile::parse_str(text)?;
            }
            Format::Scram => {
                vane_auth::scram::file::parse_str(text)?;
            }
        }
        Ok(())
    }

    /// The user a line of a file that parsed stores.
    fn line_user(self, line: &str) -> Option<String> {
        match self {
            Format::Password => vane_auth::password::parse_line(line).ok().map(|(u, _)| u),
            Format::Scram => vane_auth::scram::file::parse_line(line)
                .ok()
                .map(|(u, _)| u),
        }
    }

    /// The line storing `user` with `password`.
    fn line(self, user: &str, password: &str, iterations: u32) -> Result<String> {
        Ok(match self {
            Format::Password => {
                let hash = PasswordHash::new(password, iterations)
                    .with_context(|| format!("cannot hash the password of {user:?}"))?;
                vane_auth::password::format_line(user, &hash)
                    .with_context(|| format!("cannot store user {user:?}"))?
            }
            Format::Scram => {
                let credentials = ScramCredentials::from_password(password, iterations)
                    .with_context(|| format!("cannot derive credentials for {user:?}"))?;
                vane_auth::scram::file::format_line(user, &credentials)
                    .with_context(|| format!("cannot store user {user:?}"))?
            }
        })
    }
}

/// Arguments of `vane passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Write the SCRAM-SHA-256 credentials file of `[auth] scram_credentials` (MQTT 5.0
    /// enhanced authentication). Without it: the password file of `[auth] password_file`
    /// (user name and password in CONNECT), in Mosquitto's `user:$7$...` format.
    #[arg(long)]
    pub scram: bool,
    /// The password file; created (mode 0600) if it does not exist.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The user to add, replace or delete, in SASLprep form.
    #[arg(value_name = "USER")]
    pub user: String,
    /// The password. Visible to other local users in the process list: prefer --stdin or the
    /// prompt.
    #[arg(long, value_name = "PW", conflicts_with_all = ["stdin", "delete"])]
    pub password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "delete")]
    pub stdin: bool,
    /// PBKDF2 iteration count of the new entry. Password file: PBKDF2-HMAC-SHA512, default
    /// 100000, at least 1000. --scram: PBKDF2-HMAC-SHA256, default 10000, at least 4096.
    /// Every connection of the user costs the broker this many HMAC rounds.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: Option<u32>,
    /// Remove the user instead of setting a password.
    #[arg(long)]
    pub delete: bool,
}

/// Runs `vane passwd`.
pub fn run(args: PasswdArgs) -> Result<()> {
    let format = if args.scram {
        Format::Scram
    } else {
        Format::Password
    };
    let iterations = args
        .iterations
        .unwrap_or_else(|| format.default_iterations());
    if iterations < format.min_iterations() {
        bail!(
            "--iterations {iterations} is below the minimum of {} for a {}",
            format.min_iterations(),
            format.name()
        );
    }
    let path = target_path(&args.file)?;
    let display = path.display().to_string();
    let existing = read_existing(format, &path)?;
    let (text, message) = if args.delete {
        let text = existing.with_context(|| format!("cannot delete from {display}"))?;
        let text = delete_user(format, &text, &args.user)
            .with_context(|| format!("cannot delete {:?} from {display}", args.user))?;
        (text, format!("deleted user {:?} from {display}", args.user))
    } else {
        let password = read_password(&args)?;
        let line = format.line(&args.user, &password, iterations)?;
        let (text, replaced) =
            set_user(format, existing.as_deref().unwrap_or(""), &args.user, &line);
        let verb = if replaced { "replaced" } else { "added" };
        (text, format!("{verb} user {:?} in {display}", args.user))
    };
    // What is written must load in the broker.
    format
        .parse(&text)
        .with_context(|| format!("the new {display} would not parse"))?;
    write_atomically(&path, &text).with_context(|| format!("cannot write {display}"))?;
    println!("{message}");
    Ok(())
}

/// The file to write: a symbolic link is followed, so that the rename replaces its target.
fn target_path(file: &Path) -> Result<PathBuf> {
    match fs::symlink_metadata(file) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(file)
            .with_context(|| format!("cannot follow the link {}", file.display())),
        _ => Ok(file.to_owned()),
    }
}

/// The file's text, `None` when it does not exist yet. An existing file must parse: editing a
/// broken file would hide its errors until the broker refuses to start.
fn read_existing(format: Format, path: &Path) -> Result<Option<String>> {
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    format
        .parse(&text)
        .with_context(|| format!("{} is not a valid {}", path.display(), format.name()))?;
    Ok(Some(text))
}

/// The user name a non-comment line stores, `None` for blank lines and comments.
fn line_user(format: Format, line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // The file parsed as a whole, so each of its lines does.
    format.line_user(line)
}

/// Replaces `user`'s line with `line` where it stands, keeping its line ending, or appends
/// `line`. Returns the new text and whether the user was there.
fn set_user(format: Format, text: &str, user: &str, line: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    let mut replaced = false;
    for current in text.split_inclusive('\n') {
        if !replaced && line_user(format, current).as_deref() == Some(user) {
            let body = current.trim_end_matches(['\r', '\n']);
            out.push_str(line);
            out.push_str(&current[body.len()..]);
            replaced = true;
        } else {
            out.push_str(current);
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, replaced)
}

/// Removes `user`'s line; an error when the user is not in the file.
fn delete_user(format: Format, text: &str, user: &str) -> Result<String> {
    let mut found = false;
    let kept: String = text
        .split_inclusive('\n')
        .filter(|current| {
            let is_user = line_user(format, current).as_deref() == Some(user);
            found |= is_user;
            !is_user
        })
        .collect();
    ensure!(found, "no such user");
    Ok(kept)
}

/// The password from `--password`, from standard input with `--stdin`, or typed at the
/// terminal twice.
fn read_password(args: &PasswdArgs) -> Result<String> {
    let password = if let Some(password) = &args.password {
        password.clone()
    } else if args.stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line)
            .to_owned()
    } else {
        ensure!(
            std::io::stdin().is_terminal(),
            "standard input is not a terminal: give the password with --password PW or --stdin"
        );
        let password = rpassword::prompt_password(format!("Password for {}: ", args.user))
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("Retype the password: ")
            .context("cannot read the password from the terminal")?;
        ensure!(password == again, "the passwords do not match");
        password
    };
    ensure!(!password.is_empty(), "the password is empty");
    Ok(password)
}

/// Writes `text` to a new file beside `path` (mode 0600 on unix), flushes it to disk and
/// renames it over `path`.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = dir.join(temp_name);

    let result = (|| -> Result<()> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&temp)
            .with_context(|| format!("cannot create {}", temp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", temp.display()))?;
        fs::rename(&temp, path)
            .with_context(|| format!("cannot rename {} to {}", temp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
        return result;
    }
    // Make the rename itself durable; not every platform can open a directory.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn line(user: &str) -> String {
        Format::Scram.line(user, "pw", MIN_ITERATIONS).unwrap()
    }

    #[test]
    fn set_user_replaces_in_place_and_keeps_the_rest() {
        let (a, b, b2, c) = (line("a"), line("b"), line("b"), line("c"));
        let text = format!("# users\r\n{a}\r\n\n{b}\r\n# end");
        let (out, replaced) = set_user(Format::Scram, &text, "b", &b2);
        assert!(replaced);
        assert_eq!(out, format!("# users\r\n{a}\r\n\n{b2}\r\n# end"));
        let (out, replaced) = set_user(Format::Scram, &out, "c", &c);
        assert!(!replaced);
        assert_eq!(out, format!("# users\r\n{a}\r\n\n{b2}\r\n# end\n{c}\n"));
        assert_eq!(
            set_user(Format::Scram, "", "a", &a),
            (format!("{a}\n"), false)
        );
    }

    #[test]
    fn delete_user_removes_only_that_line() {
        let (a, b) = (line("a"), line("b"));
        let text = format!("# a comment naming b\n{a}\n{b}\n");
        assert_eq!(
            delete_user(Format::Scram, &text, "b").unwrap(),
            format!("# a comment naming b\n{a}\n")
        );
        assert!(delete_user(Format::Scram, &text, "c").is_err());
        // A user name that is the prefix of another's line is not confused with it.
        assert!(delete_user(Format::Scram, &format!("{a}\n"), "a:SCRAM-SHA-256").is_err());
    }

    #[test]
    fn password_lines_are_found_by_user() {
        let a = Format::Password.line("a", "pw", 1000).unwrap();
        let b = Format::Password.line("b", "pw", 1000).unwrap();
        let text = format!("# mosquitto\n{a}\n{b}\n");
        Format::Password.parse(&text).unwrap();
        assert_eq!(
            delete_user(Format::Password, &text, "a").unwrap(),
            format!("# mosquitto\n{b}\n")
        );
        let (out, replaced) = set_user(Format::Password, &text, "b", &a.replace("a:", "b:"));
        assert!(replaced);
        assert_eq!(out.lines().count(), 3);
    }
}
