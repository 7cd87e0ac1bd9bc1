//! `vane passwd`: adds, replaces or deletes a user in a password file.
//!
//! Only the SCRAM-SHA-256 credentials file of `[auth] scram_credentials` (MQTT 5.0 enhanced
//! authentication) is supported so far, selected with `--scram`; without `--scram` the command
//! will one day write a mosquitto-style password file for user name and password in CONNECT.
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
use vane_auth::scram::file::{format_line, parse_line, parse_str};
use vane_auth::scram::MIN_ITERATIONS;
use vane_auth::ScramCredentials;

/// The PBKDF2 iteration count of new credentials unless `--iterations` says otherwise.
const DEFAULT_ITERATIONS: u32 = 10_000;

/// Arguments of `vane passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Write the SCRAM-SHA-256 credentials file of `[auth] scram_credentials` (MQTT 5.0
    /// enhanced authentication). Required: it is the only format supported so far.
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
    /// PBKDF2 iteration count of the new credentials (at least 4096). Every connection of the
    /// user costs the broker this many HMAC rounds.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_ITERATIONS)..))]
    pub iterations: u32,
    /// Remove the user instead of setting a password.
    #[arg(long)]
    pub delete: bool,
}

/// Runs `vane passwd`.
pub fn run(args: PasswdArgs) -> Result<()> {
    if !args.scram {
        bail!(
            "only --scram is supported so far: `vane passwd --scram FILE USER` writes the \
             SCRAM-SHA-256 credentials file of `[auth] scram_credentials`"
        );
    }
    let path = target_path(&args.file)?;
    let display = path.display().to_string();
    let existing = read_existing(&path)?;
    let (text, message) = if args.delete {
        let text = existing.with_context(|| format!("cannot delete from {display}"))?;
        let text = delete_user(&text, &args.user)
            .with_context(|| format!("cannot delete {:?} from {display}", args.user))?;
        (text, format!("deleted user {:?} from {display}", args.user))
    } else {
        let password = read_password(&args)?;
        let credentials = ScramCredentials::from_password(&password, args.iterations)
            .with_context(|| format!("cannot derive credentials for {:?}", args.user))?;
        let line = format_line(&args.user, &credentials)
            .with_context(|| format!("cannot store user {:?}", args.user))?;
        let (text, replaced) = set_user(existing.as_deref().unwrap_or(""), &args.user, &line);
        let verb = if replaced { "replaced" } else { "added" };
        (text, format!("{verb} user {:?} in {display}", args.user))
    };
    // What is written must load in the broker.
    parse_str(&text).with_context(|| format!("the new {display} would not parse"))?;
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
fn read_existing(path: &Path) -> Result<Option<String>> {
    let text = match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    parse_str(&text)
        .with_context(|| format!("{} is not a valid credentials file", path.display()))?;
    Ok(Some(text))
}

/// The user name a non-comment line stores, `None` for blank lines and comments.
fn line_user(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // The file parsed as a whole, so each of its lines does.
    parse_line(line).ok().map(|(user, _)| user)
}

/// Replaces `user`'s line with `line` where it stands, keeping its line ending, or appends
/// `line`. Returns the new text and whether the user was there.
fn set_user(text: &str, user: &str, line: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    let mut replaced = false;
    for current in text.split_inclusive('\n') {
        if !replaced && line_user(current).as_deref() == Some(user) {
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
fn delete_user(text: &str, user: &str) -> Result<String> {
    let mut found = false;
    let kept: String = text
        .split_inclusive('\n')
        .filter(|current| {
            let is_user = line_user(current).as_deref() == Some(user);
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
        let credentials = ScramCredentials::from_password("pw", MIN_ITERATIONS).unwrap();
        format_line(user, &credentials).unwrap()
    }

    #[test]
    fn set_user_replaces_in_place_and_keeps_the_rest() {
        let (a, b, b2, c) = (line("a"), line("b"), line("b"), line("c"));
        let text = format!("# users\r\n{a}\r\n\n{b}\r\n# end");
        let (out, replaced) = set_user(&text, "b", &b2);
        assert!(replaced);
        assert_eq!(out, format!("# users\r\n{a}\r\n\n{b2}\r\n# end"));
        let (out, replaced) = set_user(&out, "c", &c);
        assert!(!replaced);
        assert_eq!(out, format!("# users\r\n{a}\r\n\n{b2}\r\n# end\n{c}\n"));
        assert_eq!(set_user("", "a", &a), (format!("{a}\n"), false));
    }

    #[test]
    fn delete_user_removes_only_that_line() {
        let (a, b) = (line("a"), line("b"));
        let text = format!("# a comment naming b\n{a}\n{b}\n");
        assert_eq!(
            delete_user(&text, "b").unwrap(),
            format!("# a comment naming b\n{a}\n")
        );
        assert!(delete_user(&text, "c").is_err());
        // A user name that is the prefix of another's line is not confused with it.
        assert!(delete_user(&format!("{a}\n"), "a:SCRAM-SHA-256").is_err());
    }
}
