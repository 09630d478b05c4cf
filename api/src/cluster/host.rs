//! The host the private cluster runs on: where the server programs are, whom they run
//! as (root hands them to the `postgres` system user), free ports, and running commands.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use super::{default_data_dir, ClusterError, PORT_BASE, PORT_SPAN, SERVER_USER};

/// Where the PostgreSQL server programs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Programs {
    pub(super) initdb: PathBuf,
    pub(super) pg_ctl: PathBuf,
}

/// Whom the server programs run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RunAs {
    /// Ourselves: we are not root.
    Current,
    /// An unprivileged user, through a privilege-dropping wrapper.
    User {
        name: String,
        uid: u32,
        gid: u32,
        wrapper: Wrapper,
    },
}

/// The program that drops root's privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Wrapper {
    Runuser(PathBuf),
    Setpriv(PathBuf),
}

/// The server programs: the first folder on `PATH` that holds all three, else the highest
/// version under `/usr/lib/postgresql/*/bin`.
pub(super) fn find_programs() -> Option<Programs> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let version = entry
                .file_name()
                .to_string_lossy()
                .split('.')
                .map(|part| part.parse().unwrap_or(0))
                .collect();
            (version, entry.path().join("bin"))
        })
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));

    path_dirs
        .into_iter()
        .chain(versioned.into_iter().map(|(_, dir)| dir))
        .find(|dir| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|name| is_executable(&dir.join(name)))
        })
        .map(|dir| Programs {
            initdb: dir.join("initdb"),
            pg_ctl: dir.join("pg_ctl"),
        })
}

pub(super) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Ourselves when not root; the `postgres` user through `runuser` or `setpriv` when root.
pub(super) fn run_as() -> Result<RunAs, ClusterError> {
    if effective_uid() != Some(0) {
        return Ok(RunAs::Current);
    }
    let (uid, gid) = lookup_user(SERVER_USER).ok_or(ClusterError::NoServerUser)?;
    let wrapper = find_on_path_or_sbin("runuser")
        .map(Wrapper::Runuser)
        .or_else(|| find_on_path_or_sbin("setpriv").map(Wrapper::Setpriv))
        .ok_or(ClusterError::NoPrivilegeDrop)?;
    Ok(RunAs::User {
        name: SERVER_USER.to_owned(),
        uid,
        gid,
        wrapper,
    })
}

/// Our effective uid, from `/proc/self/status` (line `Uid: real effective saved fs`).
pub(super) fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The uid and gid of `user`, from `/etc/passwd`.
pub(super) fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

pub(super) fn find_on_path_or_sbin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// The data folder asked for, made absolute, or the default for the working directory.
pub(super) fn absolute_data_dir(data_dir: Option<PathBuf>) -> Result<PathBuf, ClusterError> {
    let cwd = || {
        std::env::current_dir().map_err(io_error(
            "could not read the working directory",
            Path::new("."),
        ))
    };
    Ok(match data_dir {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => cwd()?.join(dir),
        None => default_data_dir(&cwd()?),
    })
}

/// Fails when a folder above `dir` clearly does not let `uid` through.
pub(super) fn check_reachable(
    dir: &Path,
    user: &str,
    uid: u32,
    gid: u32,
) -> Result<(), ClusterError> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor).map_err(io_error("could not read", ancestor))?;
        let mode = meta.mode();
        let passes = if meta.uid() == uid {
            mode & 0o100 != 0
        } else {
            // A group bit may serve through a supplementary group: only a folder that lets
            // neither its group nor others through surely blocks.
            mode & 0o001 != 0 || (mode & 0o010 != 0 && (meta.gid() == gid || meta.gid() != 0))
        };
        if !passes {
            return Err(ClusterError::Unreachable {
                data_dir: dir.to_path_buf(),
                user: user.to_owned(),
                blocker: ancestor.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// The port the data folder hashes to, in `PORT_BASE..PORT_BASE + PORT_SPAN`.
pub(super) fn hash_port(data_dir: &Path) -> u16 {
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    PORT_BASE + u16::from_be_bytes([digest[0], digest[1]]) % PORT_SPAN
}

/// The first free port from `start` on, wrapping around the range.
pub(super) fn free_port(start: u16) -> Result<u16, ClusterError> {
    let offset = start.saturating_sub(PORT_BASE) % PORT_SPAN;
    (0..PORT_SPAN)
        .map(|step| PORT_BASE + (offset + step) % PORT_SPAN)
        .find(|&port| port_is_free(port))
        .ok_or(ClusterError::NoFreePort)
}

pub(super) fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

pub(super) fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ClusterError + 'a {
    move |source| ClusterError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn command_output(command: &mut Command) -> Result<Output, ClusterError> {
    command.output().map_err(|source| ClusterError::Spawn {
        program: display_program(command.get_program()),
        source,
    })
}

pub(super) async fn async_output(command: Command) -> Result<Output, ClusterError> {
    let program = display_program(command.get_program());
    tokio::process::Command::from(command)
        .output()
        .await
        .map_err(|source| ClusterError::Spawn { program, source })
}

pub(super) fn display_program(program: &OsStr) -> String {
    program.to_string_lossy().into_owned()
}

/// The command line, for messages.
pub(super) fn describe(command: &Command) -> String {
    let mut shown = display_program(command.get_program());
    for arg in command.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    shown
}

pub(super) fn check(command: String, output: &Output) -> Result<(), ClusterError> {
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(ClusterError::CommandFailed {
        command,
        status: output.status.to_string(),
        output: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_port_stays_in_range() {
        for dir in ["/a", "/b", "/var/tmp/escrow-ledger/x"] {
            let port = hash_port(Path::new(dir));
            assert!((PORT_BASE..PORT_BASE + PORT_SPAN).contains(&port));
        }
    }

    #[test]
    fn lookup_user_reads_passwd() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-here"), None);
    }
}
