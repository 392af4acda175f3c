//! A private PostgreSQL cluster from the machine's own binaries (initdb + pg_ctl), on loopback with its
//! socket in the data directory. Used by `pgsse demo` and by the tests; as root it runs as `postgres`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no PostgreSQL server binaries found (install postgresql, or set PGSSE_PG_BIN to the directory holding initdb)"
    )]
    NoBinaries,
    #[error("running as root, but there is no `postgres` user to run the cluster as")]
    NoPostgresUser,
    #[error("{0} failed: {1}")]
    Command(String, String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Cluster {
    pub data_dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    /// `Some((uid, gid))` of `postgres` when we are root: initdb refuses to run as root.
    run_as: Option<(u32, u32)>,
    /// Set for the server's processes (a benchmark's `LD_PRELOAD`, say).
    env: Vec<(String, String)>,
}

impl Cluster {
    pub fn new(data_dir: impl Into<PathBuf>, port: u16) -> Result<Self, ClusterError> {
        let data_dir = std::path::absolute(data_dir.into())?;
        let run_as = if id(&["-u"])? == 0 { Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?)) } else { None };
        Ok(Self { data_dir, port, bin: find_bin_dir().ok_or(ClusterError::NoBinaries)?, run_as, env: Vec::new() })
    }

    /// Starts the server with `name=value` in its environment.
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn is_initialized(&self) -> bool {
        self.data_dir.join("PG_VERSION").exists()
    }

    /// Creates the cluster unless it exists. `fast` gives up durability against OS crashes for speed
    /// (tests, benchmarks, the demo) but keeps synchronous_commit: a commit that a server crash takes back
    /// would take back event ids that clients may already have seen.
    pub fn init(&self, fast: bool) -> Result<(), ClusterError> {
        if self.is_initialized() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.data_dir)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid))?;
        }
        let dir = self.data_dir.to_string_lossy().into_owned();
        self.run("initdb", &["-D", &dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C"])?;
        let mut conf = format!(
            "\n# pgsse\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nmax_connections = 300\n",
            self.port, dir
        );
        if fast {
            conf.push_str("fsync = off\nfull_page_writes = off\n");
        }
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;
        Ok(())
    }

    /// Starts the server and waits until it accepts connections. A server already running is left as is.
    pub fn start(&self) -> Result<(), ClusterError> {
        if self.is_running() {
            return Ok(());
        }
        let dir = self.data_dir.to_string_lossy().into_owned();
        let log = self.data_dir.join("postgres.log").to_string_lossy().into_owned();
        let port = format!("-p {}", self.port);
        self.run("pg_ctl", &["start", "-w", "-t", "60", "-D", &dir, "-l", &log, "-o", &port]).map(drop)
    }

    pub fn is_running(&self) -> bool {
        let dir = self.data_dir.to_string_lossy().into_owned();
        self.command("pg_ctl", &["status", "-D", &dir]).output().is_ok_and(|o| o.status.success())
    }

    /// `mode` is pg_ctl's: smart, fast or immediate (a crash, as far as clients can tell).
    pub fn stop(&self, mode: &str) -> Result<(), ClusterError> {
        let dir = self.data_dir.to_string_lossy().into_owned();
        self.run("pg_ctl", &["stop", "-w", "-D", &dir, "-m", mode]).map(drop)
    }

    /// A streaming standby of this (running) cluster in `data_dir` on `port`: a base backup with its
    /// recovery settings (`pg_basebackup -R`) and `extra` lines of configuration, started.
    pub fn standby(&self, data_dir: impl Into<PathBuf>, port: u16, extra: &str) -> Result<Cluster, ClusterError> {
        let standby = Cluster { data_dir: std::path::absolute(data_dir.into())?, port, ..self.clone_settings() };
        std::fs::create_dir_all(&standby.data_dir)?;
        // PostgreSQL refuses a data directory that others may read.
        std::fs::set_permissions(&standby.data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&standby.data_dir, Some(uid), Some(gid))?;
        }
        let dir = standby.data_dir.to_string_lossy().into_owned();
        let from = self.port.to_string();
        self.run(
            "pg_basebackup",
            &["-D", &dir, "-h", "127.0.0.1", "-p", &from, "-U", "postgres", "-R", "-X", "stream"],
        )?;
        let conf = format!("\n# pgsse standby\nport = {port}\nunix_socket_directories = '{dir}'\n{extra}\n");
        let conf_path = standby.data_dir.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;
        standby.start()?;
        Ok(standby)
    }

    /// Promotes a standby to a primary of its own (a new timeline).
    pub fn promote(&self) -> Result<(), ClusterError> {
        let dir = self.data_dir.to_string_lossy().into_owned();
        self.run("pg_ctl", &["promote", "-w", "-D", &dir]).map(drop)
    }

    fn clone_settings(&self) -> Cluster {
        Cluster {
            data_dir: self.data_dir.clone(),
            port: self.port,
            bin: self.bin.clone(),
            run_as: self.run_as,
            env: self.env.clone(),
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(_) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(exe).args(args);
                cmd
            }
            None => {
                let mut cmd = Command::new(exe);
                cmd.args(args);
                cmd
            }
        };
        cmd.envs(self.env.iter().map(|(name, value)| (name, value)));
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, ClusterError> {
        let out = self.command(program, args).output()?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(ClusterError::Command(program.into(), text));
        }
        Ok(out)
    }
}

fn id(args: &[&str]) -> Result<u32, ClusterError> {
    let out = Command::new("id").args(args).output()?;
    if !out.status.success() {
        return Err(ClusterError::NoPostgresUser);
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| ClusterError::NoPostgresUser)
}

/// `PGSSE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` (Debian's layout), else `initdb` on PATH.
pub(crate) fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PGSSE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| Path::new(dir).join("initdb").exists()))
}
