//! A private PostgreSQL cluster for when `DATABASE_URL` is unset (see `contract.md`,
//! "Command line").
//!
//! [`ensure_running`] finds the PostgreSQL server programs installed on the machine
//! (`initdb`, `pg_ctl`, `postgres`, on `PATH` or under `/usr/lib/postgresql/*/bin`, the
//! highest version first), initialises a cluster in a data folder if there is none yet,
//! starts it if it is not running, creates the `escrow_ledger` database and returns its URL.
//! The server keeps running after the process exits, so that `migrate` and then `serve`
//! reuse it; [`PrivateCluster::stop`] stops it.
//!
//! `initdb` and `postgres` refuse to run as root: when we are root they run as the
//! unprivileged `postgres` system user (through `runuser`, or `setpriv`), the data folder is
//! handed to that user, and every folder above it must let that user through.
//!
//! The cluster listens on 127.0.0.1 only, on a port chosen from a hash of the data folder
//! (5433 to 7432, the next free one if that is taken), written with the rest of our settings
//! in `escrow-ledger.conf` inside the data folder; its unix socket lives in the data folder.
//! Authentication is `trust`: the cluster is for one developer's machine, never for
//! production.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

mod host;

use host::{
    absolute_data_dir, async_output, check, check_reachable, command_output, describe,
    find_programs, free_port, hash_port, io_error, port_is_free, run_as, Programs, RunAs, Wrapper,
};

/// The folder under which default data folders are made, one per working directory.
pub const DEFAULT_DATA_ROOT: &str = "/var/tmp/escrow-ledger";

/// The database the binary uses inside the private cluster.
pub const DATABASE_NAME: &str = "escrow_ledger";

/// The unprivileged system user that runs the cluster when we are root.
const SERVER_USER: &str = "postgres";

/// Our settings, included from `postgresql.conf`.
const CONF_FILE: &str = "escrow-ledger.conf";

/// The lowest port of the range the private cluster's port is chosen from.
const PORT_BASE: u16 = 5433;

/// How many ports the range holds.
const PORT_SPAN: u16 = 2000;

/// Longest unix socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A running private PostgreSQL cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateCluster {
    /// The cluster's data folder (absolute).
    pub data_dir: PathBuf,
    /// The TCP port it listens on, at 127.0.0.1.
    pub port: u16,
    /// The URL of the `escrow_ledger` database: `postgres://postgres@127.0.0.1:<port>/escrow_ledger`.
    pub url: String,
    programs: Programs,
    run_as: RunAs,
}

/// Why the private cluster could not be brought up (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The PostgreSQL server programs are not installed. Show the message to the user:
    /// it says how to install them or to set `DATABASE_URL` instead.
    #[error(
        "DATABASE_URL is unset and the PostgreSQL server programs (initdb, pg_ctl, postgres) \
         were not found on PATH or under /usr/lib/postgresql/*/bin: install them \
         (`apt-get install postgresql` on Debian or Ubuntu) or set DATABASE_URL to an \
         existing database"
    )]
    ProgramsNotFound,
    /// We are root and the `postgres` system user, which must run the server, does not
    /// exist. Show the message: installing the PostgreSQL package creates that user.
    #[error(
        "running as root, the private PostgreSQL cluster must run as the system user \
         `postgres`, which does not exist: install PostgreSQL (`apt-get install postgresql`) \
         or set DATABASE_URL"
    )]
    NoServerUser,
    /// We are root and neither `runuser` nor `setpriv` is installed to drop privileges.
    #[error(
        "running as root, neither `runuser` nor `setpriv` (util-linux) was found to run \
         PostgreSQL as the `postgres` user: install util-linux or set DATABASE_URL"
    )]
    NoPrivilegeDrop,
    /// A folder above the data folder does not let the server's user through (`/root` is
    /// `0700`). Choose another `ESCROW_LEDGER_DATA_DIR`.
    #[error(
        "the data folder {data_dir} is out of reach of the user `{user}`: {blocker} does not \
         let it through; choose another ESCROW_LEDGER_DATA_DIR (e.g. under /var/tmp)"
    )]
    Unreachable {
        /// The data folder asked for.
        data_dir: PathBuf,
        /// The user that runs the server.
        user: String,
        /// The folder that blocks it.
        blocker: PathBuf,
    },
    /// A file or folder of the cluster could not be read or written; the message names it.
    #[error("{what} {}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A program could not be started at all.
    #[error("could not run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A PostgreSQL program ran and failed; the message carries its output (and for a start,
    /// the end of the server log).
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// Every port of the range is taken.
    #[error("no free TCP port on 127.0.0.1 between {PORT_BASE} and {} for the private cluster", PORT_BASE + PORT_SPAN - 1)]
    NoFreePort,
    /// The cluster runs but the `escrow_ledger` database could not be reached or created.
    #[error("could not create the database {DATABASE_NAME} in the private cluster")]
    Database(#[from] sqlx::Error),
}

/// The default data folder for a working directory: [`DEFAULT_DATA_ROOT`] and the first 16
/// bytes of the SHA-256 of the directory's path, in hex (short enough for the unix socket
/// path limit).
pub fn default_data_dir(working_dir: &Path) -> PathBuf {
    let digest = Sha256::digest(working_dir.as_os_str().as_encoded_bytes());
    Path::new(DEFAULT_DATA_ROOT).join(hex::encode(&digest[..16]))
}

/// Brings up the private cluster in `data_dir` (or, when `None`, in
/// [`default_data_dir`] of the working directory): initialises it if needed, starts it if
/// it is not running, creates the `escrow_ledger` database if missing, and returns where it
/// is. The server is left running.
pub async fn ensure_running(data_dir: Option<PathBuf>) -> Result<PrivateCluster, ClusterError> {
    let programs = find_programs().ok_or(ClusterError::ProgramsNotFound)?;
    let run_as = run_as()?;
    let data_dir = absolute_data_dir(data_dir)?;
    let mut cluster = PrivateCluster {
        data_dir,
        port: 0,
        url: String::new(),
        programs,
        run_as,
    };

    cluster.prepare_dir()?;
    if !cluster.data_dir.join("PG_VERSION").is_file() {
        cluster.initdb().await?;
    }
    cluster.port = match cluster.running_port().await? {
        Some(port) => port,
        None => cluster.start().await?,
    };
    cluster.url = format!(
        "postgres://postgres@127.0.0.1:{}/{DATABASE_NAME}",
        cluster.port
    );
    cluster.create_database().await?;

    tracing::info!(
        data_dir = %cluster.data_dir.display(),
        port = cluster.port,
        log = %cluster.data_dir.join("server.log").display(),
        "DATABASE_URL is unset: using a private PostgreSQL cluster (it keeps running; set \
         DATABASE_URL to use another database)"
    );
    Ok(cluster)
}

impl PrivateCluster {
    /// Stops the cluster (fast shutdown: open sessions are cut) and waits until it is
    /// down. Stopping a cluster that is not running is not an error.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let mut command = self.server_command(&self.programs.pg_ctl);
        command.arg("-D").arg(&self.data_dir).arg("status");
        if command_output(&mut command)?.status.code() != Some(0) {
            return Ok(());
        }
        let mut command = self.server_command(&self.programs.pg_ctl);
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        let output = command_output(&mut command)?;
        check(describe(&command), &output)
    }

    /// Creates the data folder and its parents, and hands it to the server's user.
    fn prepare_dir(&self) -> Result<(), ClusterError> {
        let dir = &self.data_dir;
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(io_error("could not create", parent))?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_error("could not set the permissions of", dir))?;
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io_error("could not create", dir)(error)),
        }
        if let RunAs::User { name, uid, gid, .. } = &self.run_as {
            check_reachable(dir, name, *uid, *gid)?;
            let meta = fs::metadata(dir).map_err(io_error("could not read", dir))?;
            if meta.uid() != *uid {
                std::os::unix::fs::chown(dir, Some(*uid), Some(*gid))
                    .map_err(io_error("could not hand to the postgres user", dir))?;
            }
        }
        Ok(())
    }

    /// Runs `initdb` and writes our settings.
    async fn initdb(&mut self) -> Result<(), ClusterError> {
        let mut command = self.server_command(&self.programs.initdb);
        command.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        let shown = describe(&command);
        let output = async_output(command).await?;
        check(shown, &output)?;

        let conf = self.data_dir.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).map_err(io_error("could not read", &conf))?;
        text.push_str("\n# Added by escrow-ledger.\ninclude_if_exists = '");
        text.push_str(CONF_FILE);
        text.push_str("'\n");
        fs::write(&conf, text).map_err(io_error("could not write", &conf))?;
        self.port = free_port(hash_port(&self.data_dir))?;
        self.write_conf()
    }

    /// Writes `escrow-ledger.conf` for the current port.
    fn write_conf(&self) -> Result<(), ClusterError> {
        let dir = self.data_dir.to_string_lossy();
        let socket = dir.len() + "/.s.PGSQL.65535".len() <= MAX_SOCKET_PATH;
        let mut text = String::from(
            "# Written by escrow-ledger: the settings of its private cluster.\n\
             listen_addresses = '127.0.0.1'\n",
        );
        let _ = writeln!(text, "port = {}", self.port);
        if socket {
            let _ = writeln!(
                text,
                "unix_socket_directories = '{}'",
                dir.replace('\'', "''")
            );
        } else {
            // The path is too long for a unix socket: TCP only.
            text.push_str("unix_socket_directories = ''\n");
        }
        let path = self.data_dir.join(CONF_FILE);
        fs::write(&path, text).map_err(io_error("could not write", &path))?;
        if let RunAs::User { uid, gid, .. } = &self.run_as {
            std::os::unix::fs::chown(&path, Some(*uid), Some(*gid))
                .map_err(io_error("could not hand to the postgres user", &path))?;
        }
        Ok(())
    }

    /// The port in `escrow-ledger.conf`, if it is there.
    fn configured_port(&self) -> Option<u16> {
        let text = fs::read_to_string(self.data_dir.join(CONF_FILE)).ok()?;
        text.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "port").then(|| value.trim().parse().ok())?
        })
    }

    /// `Some(port)` when the server runs (the port from `postmaster.pid`), `None` when not.
    async fn running_port(&self) -> Result<Option<u16>, ClusterError> {
        let mut command = self.server_command(&self.programs.pg_ctl);
        command.arg("-D").arg(&self.data_dir).arg("status");
        let output = async_output(command).await?;
        if output.status.code() != Some(0) {
            return Ok(None);
        }
        let pid_file = self.data_dir.join("postmaster.pid");
        let text = fs::read_to_string(&pid_file).map_err(io_error("could not read", &pid_file))?;
        // Line 4 of postmaster.pid is the port.
        Ok(text
            .lines()
            .nth(3)
            .and_then(|line| line.trim().parse().ok()))
    }

    /// Starts the server (on a new port if its own is taken) and returns its port.
    async fn start(&mut self) -> Result<u16, ClusterError> {
        self.port = match self.configured_port() {
            Some(port) if port_is_free(port) => port,
            Some(port) => free_port(port)?,
            None => free_port(hash_port(&self.data_dir))?,
        };
        self.write_conf()?;

        let log = self.data_dir.join("server.log");
        let mut command = self.server_command(&self.programs.pg_ctl);
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"]);
        let shown = describe(&command);
        let output = async_output(command).await?;
        if output.status.success() {
            return Ok(self.port);
        }
        // Another process may have started it meanwhile.
        if let Some(port) = self.running_port().await? {
            return Ok(port);
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        if let Ok(server_log) = fs::read_to_string(&log) {
            let tail: Vec<&str> = server_log.lines().rev().take(20).collect();
            text.push_str("\n--- end of ");
            text.push_str(&log.to_string_lossy());
            text.push_str(" ---\n");
            for line in tail.iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        Err(ClusterError::CommandFailed {
            command: shown,
            status: output.status.to_string(),
            output: text,
        })
    }

    /// Creates the `escrow_ledger` database if it is missing.
    async fn create_database(&self) -> Result<(), ClusterError> {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut conn = PgConnection::connect(&admin).await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(DATABASE_NAME)
                .fetch_optional(&mut conn)
                .await?;
        if exists.is_none() {
            // DATABASE_NAME is a constant identifier, not input.
            let created = sqlx::query(&format!("CREATE DATABASE {DATABASE_NAME}"))
                .execute(&mut conn)
                .await;
            match created {
                Ok(_) => {}
                // 42P04 duplicate_database: another process created it meanwhile.
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
                Err(error) => return Err(error.into()),
            }
        }
        conn.close().await?;
        Ok(())
    }

    /// A command that runs `program` as the server's user, from `/` (root's working
    /// directory may be out of that user's reach).
    fn server_command(&self, program: &Path) -> Command {
        let mut command = match &self.run_as {
            RunAs::Current => Command::new(program),
            RunAs::User {
                name,
                wrapper: Wrapper::Runuser(runuser),
                ..
            } => {
                let mut command = Command::new(runuser);
                command.args(["-u", name.as_str(), "--"]).arg(program);
                command
            }
            RunAs::User {
                uid,
                gid,
                wrapper: Wrapper::Setpriv(setpriv),
                ..
            } => {
                let mut command = Command::new(setpriv);
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args(["--clear-groups", "--"])
                    .arg(program);
                command
            }
        };
        command
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_data_dir_is_stable_and_short() {
        let a = default_data_dir(Path::new("/root/work/escrow-ledger"));
        assert_eq!(a, default_data_dir(Path::new("/root/work/escrow-ledger")));
        assert_ne!(a, default_data_dir(Path::new("/root/work/other")));
        assert!(a.starts_with(DEFAULT_DATA_ROOT));
        assert_eq!(a.file_name().map(std::ffi::OsStr::len), Some(32));
    }
}
