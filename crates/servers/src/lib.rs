//! # tokendb-servers
//!
//! Throw-away `redis-server` and PostgreSQL processes, for the comparison (`benches/`) and for the
//! tests that run tokendb on PostgreSQL (`tests/`): one copy of the code that installs, starts and
//! stops them.
//!
//! Each server runs as an ordinary process bound to 127.0.0.1 on a free port, with its files in a
//! temporary directory, and is stopped when its guard is dropped (also on an error path or a panic
//! that unwinds). A missing binary is installed from the Debian packages (`redis-server`,
//! `postgresql`) when running as root with `apt-get`; otherwise starting fails with a message saying
//! what to install.
//!
//! PostgreSQL refuses to run as root, so as root `initdb`, `postgres` and `pg_ctl` run as the
//! `postgres` user (created if missing) through `runuser`, and its directory is handed to that user.
//! The postmaster is started in the foreground as a child of this process (through `runuser`, which
//! waits for it), not daemonized by `pg_ctl start`, so that it is reaped here when it stops. Its directory
//! must then sit below directories that user may enter: the `compare` binary makes its work directory
//! world-traversable for that reason.
//!
//! A test binary keeps its cluster in a `static` for the whole run, and Rust runs no destructor
//! of a `static`: so each cluster also has a watchdog, a `sh` process that waits for end-of-file
//! on a pipe only this process holds. When this process ends — normally, on a failed assertion,
//! or killed — the pipe closes and the watchdog stops the cluster and deletes its directory.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The error of every step here: a message (with its source) is all a caller needs.
pub type ServerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for a result whose error is a [`ServerError`].
pub type ServerResult<T> = Result<T, ServerError>;

/// A port on 127.0.0.1 that was free a moment ago (the OS picks it; another process could take it
/// before the server binds it, which then fails to start and says so).
pub fn free_port() -> ServerResult<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The full path of `name` if it is an executable file on `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether this process runs as root (effective uid 0), read from `/proc/self/status`.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Installs a Debian package with `apt-get` (refreshing the package lists once if the first try
/// fails). Only as root.
pub fn apt_install(package: &str) -> ServerResult<()> {
    if !is_root() || find_in_path("apt-get").is_none() {
        return Err(
            format!("install the Debian package `{package}` (needs root and apt-get)").into(),
        );
    }
    eprintln!("installing {package} with apt-get ...");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    if install()?.status.success() {
        return Ok(());
    }
    Command::new("apt-get")
        .args(["update", "-q"])
        .stdin(Stdio::null())
        .output()?;
    let out = install()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "apt-get install {package} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// The last lines of a log file, for an error message.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .get(lines.len().saturating_sub(5)..)
        .unwrap_or_default()
        .join(" | ")
}

/// A running `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl RedisServer {
    /// Settings passed to `redis-server`, for the report: a pure in-memory cache, as a GET
    /// comparison needs (persistence would not change a GET).
    pub const SETTINGS: &'static str = "redis-server on 127.0.0.1, persistence off (save \"\", appendonly no), default io-threads 1";

    /// Starts `redis-server` in a new temporary directory under `base` and waits until it answers
    /// `PING`.
    pub fn start(base: &Path) -> ServerResult<Self> {
        let bin = match find_in_path("redis-server") {
            Some(bin) => bin,
            None => {
                apt_install("redis-server")?;
                find_in_path("redis-server").ok_or("redis-server is still missing after install")?
            }
        };
        let dir = tempfile::Builder::new().prefix("redis-").tempdir_in(base)?;
        let port = free_port()?;
        let log = dir.path().join("redis.log");
        let child = Command::new(bin)
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = Self {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("redis-server exited ({status}): {}", log_tail(&log)).into());
            }
            match ping(server.addr) {
                Ok(()) => return Ok(server),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("redis-server did not answer in 10 s: {e}").into());
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Sends `PING` and expects `+PONG`.
fn ping(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other("unexpected reply to PING"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Nothing to save: persistence is off.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How PostgreSQL is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `shared_buffers`, in MiB: enough to hold the whole data set, as for the other systems.
    pub shared_buffers_mb: u64,
    /// `max_connections`: the write benchmarks open up to 64 at once, and closing ones linger
    /// briefly while the next measurement opens its own.
    pub max_connections: u32,
    /// `fsync` and `synchronous_commit`: on for every measurement; tests that prove logic,
    /// not the server's own durability, turn them off so a commit costs no disk flush.
    pub durable: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            shared_buffers_mb: 1024,
            max_connections: 200,
            durable: true,
        }
    }
}

/// A running PostgreSQL cluster, stopped (`pg_ctl stop -m fast`) and deleted when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    bin_dir: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    settings: String,
    /// The postmaster (or the `runuser` that waits for it), while it runs.
    child: Option<Child>,
    /// The watchdog's stdin: closed when this process ends, which makes it stop the cluster.
    watchdog: Option<Child>,
    _dir: TempDir,
}

impl PostgresServer {
    /// The user PostgreSQL runs as when this process is root.
    pub const OS_USER: &'static str = "postgres";

    /// Creates a cluster with `initdb` in a new temporary directory under `base`, configures it and
    /// starts the postmaster, and waits until it accepts connections.
    pub fn start(base: &Path, options: PostgresOptions) -> ServerResult<Self> {
        let bin_dir = match postgres_bin_dir() {
            Some(dir) => dir,
            None => {
                apt_install("postgresql")?;
                postgres_bin_dir().ok_or("PostgreSQL binaries are still missing after install")?
            }
        };
        let run_as = is_root().then_some(Self::OS_USER);
        let dir = cluster_dir(base, "postgres-", run_as)?;
        let data = dir.path().join("data");
        let port = free_port()?;
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = ''\n\
             max_connections = {max_connections}\n\
             shared_buffers = {shared_buffers}MB\n\
             fsync = {durable}\n\
             synchronous_commit = {durable}\n\
             full_page_writes = on\n\
             max_wal_size = 4GB\n\
             checkpoint_timeout = 30min\n\
             huge_pages = off\n\
             jit = off\n",
            max_connections = options.max_connections,
            shared_buffers = options.shared_buffers_mb,
            durable = if options.durable { "on" } else { "off" },
        );
        let mut server = Self {
            bin_dir,
            data,
            port,
            run_as,
            settings,
            child: None,
            watchdog: None,
            _dir: dir,
        };

        let mut cmd = server.pg_command("initdb");
        cmd.arg("-D")
            .arg(&server.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ])
            .args(["--no-instructions"]);
        run_checked(cmd, "initdb")?;
        append_conf(
            &server.data,
            &format!("\n# tokendb-servers\n{}", server.settings),
        )?;

        server.launch()?;
        Ok(server)
    }

    /// Starts the postmaster of the data directory and waits until it accepts connections.
    fn launch(&mut self) -> ServerResult<()> {
        let log = self.data.with_file_name("postgres.log");
        let log_file = File::create(&log)?;
        // Output goes to a file, never to a pipe nobody reads.
        self.child = Some(
            self.pg_command("postgres")
                .arg("-D")
                .arg(&self.data)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .spawn()?,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
                self.child = None;
                return Err(format!("postgres exited ({status}): {}", log_tail(&log)).into());
            }
            match self.config().connect(postgres::NoTls) {
                Ok(_) => {
                    self.watchdog = Some(self.start_watchdog()?);
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "postgres did not accept connections in 60 s: {e}: {}",
                        log_tail(&log)
                    )
                    .into());
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Starts a streaming standby of this server: a base backup (`pg_basebackup -R`) in a new
    /// temporary directory under `base`, started on its own port; this server is then told to
    /// wait for it at every commit (`synchronous_standby_names = '*'`), so a commit acknowledged
    /// by this server is on the standby too.
    ///
    /// # Errors
    /// If the backup, the start or the configuration fails.
    pub fn start_synchronous_standby(&self, base: &Path) -> ServerResult<Self> {
        let dir = cluster_dir(base, "postgres-standby-", self.run_as)?;
        let port = free_port()?;
        let mut standby = Self {
            bin_dir: self.bin_dir.clone(),
            data: dir.path().join("data"),
            port,
            run_as: self.run_as,
            settings: self.settings.replace(
                &format!("port = {}\n", self.port),
                &format!("port = {port}\n"),
            ),
            child: None,
            watchdog: None,
            _dir: dir,
        };
        let mut cmd = standby.pg_command("pg_basebackup");
        cmd.arg("-D")
            .arg(&standby.data)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-R", "-X", "stream", "-c", "fast"]);
        run_checked(cmd, "pg_basebackup")?;
        append_conf(
            &standby.data,
            &format!("\n# tokendb-servers standby\nport = {port}\n"),
        )?;
        standby.launch()?;
        let mut client = self.config().connect(postgres::NoTls)?;
        client.batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'")?;
        client.batch_execute("SELECT pg_reload_conf()")?;
        // Wait until the standby streams synchronously.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sync = client
                .query_opt(
                    "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'",
                    &[],
                )?
                .is_some();
            if sync {
                return Ok(standby);
            }
            if Instant::now() > deadline {
                return Err("the standby did not become synchronous in 30 s".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Turns TLS on (`ssl = on`) with this certificate chain and key (PEM), by a configuration
    /// reload: connections may then use TLS, and `hostssl` rules could require it.
    ///
    /// # Errors
    /// If the files cannot be written or the server refuses the settings.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> ServerResult<()> {
        let cert = self.data.join("server.crt");
        let key = self.data.join("server.key");
        fs::write(&cert, cert_pem)?;
        fs::write(&key, key_pem)?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))?;
        if let Some(user) = self.run_as {
            let (uid, gid) = os_user_ids(user)?;
            std::os::unix::fs::chown(&cert, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&key, Some(uid), Some(gid))?;
        }
        let mut client = self.config().connect(postgres::NoTls)?;
        // One statement per call: several in one string run as one transaction block, which
        // ALTER SYSTEM refuses.
        for sql in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
        ] {
            client.batch_execute(sql)?;
        }
        let reloaded: bool = client.query_one("SELECT pg_reload_conf()", &[])?.get(0);
        if !reloaded {
            return Err("pg_reload_conf() refused".into());
        }
        // The reload is asynchronous: wait until a new session sees ssl = on.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = self.config().connect(postgres::NoTls)?;
            let on: String = c.query_one("SHOW ssl", &[])?.get(0);
            if on == "on" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("ssl did not turn on after a reload".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the postmaster with `SIGKILL`, as a machine failure would stop it (its backends
    /// exit when they notice). The directory stays until the guard is dropped.
    ///
    /// # Errors
    /// If the postmaster's pid cannot be read.
    pub fn kill_hard(&mut self) -> ServerResult<()> {
        let pid_file = fs::read_to_string(self.data.join("postmaster.pid"))?;
        let pid = pid_file
            .lines()
            .next()
            .filter(|p| p.parse::<u32>().is_ok())
            .ok_or("no pid in postmaster.pid")?;
        Command::new("kill").args(["-KILL", pid]).status()?;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        Ok(())
    }

    /// Promotes a standby to primary (`pg_ctl promote -w`).
    ///
    /// # Errors
    /// If `pg_ctl` fails.
    pub fn promote(&self) -> ServerResult<()> {
        let out = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "promote"])
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl promote failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into())
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A client configuration for the `postgres` database as the `postgres` superuser, over TCP.
    pub fn config(&self) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// A connection URL for the `postgres` database as the `postgres` superuser, over TCP.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The settings added to `postgresql.conf`, one per line.
    pub fn settings(&self) -> &str {
        &self.settings
    }

    /// The major version directory of the binaries, e.g. `15`.
    pub fn version(&self) -> String {
        self.bin_dir
            .parent()
            .and_then(Path::file_name)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Stops the server (`pg_ctl stop -m fast -w`: clients disconnected, a shutdown checkpoint) and
    /// reaps it; also done on drop.
    pub fn stop(&mut self) -> ServerResult<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // Stopped here, so the watchdog is not needed any more: kill it before it acts.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let stopped = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if stopped {
            child.wait()?;
            return Ok(());
        }
        // Last resort: kill the postmaster named in its pid file, then what we started.
        let pid_file = fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
        if let Some(pid) = pid_file.lines().next().filter(|p| p.parse::<u32>().is_ok()) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        let _ = child.kill();
        child.wait()?;
        Err("pg_ctl stop failed; the postmaster was killed".into())
    }

    /// Starts the watchdog: `sh` reads its stdin (a pipe whose writing end only this process
    /// holds) until end-of-file, then stops the cluster immediately and deletes its directory.
    fn start_watchdog(&self) -> ServerResult<Child> {
        let stop = self.pg_command("pg_ctl");
        let mut argv: Vec<std::ffi::OsString> = vec![stop.get_program().to_owned()];
        argv.extend(stop.get_args().map(ToOwned::to_owned));
        argv.extend(
            ["-D".into(), self.data.clone().into_os_string()]
                .into_iter()
                .chain(["-m", "immediate", "-w", "-t", "30", "stop"].map(Into::into)),
        );
        let dir = self
            .data
            .parent()
            .ok_or("the data directory has no parent")?
            .to_owned();
        Ok(Command::new("sh")
            .arg("-c")
            .arg("while read -r _; do :; done; \"$@\" >/dev/null 2>&1; rm -rf \"$0\"")
            .arg(dir)
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    /// A command running PostgreSQL's binary `name`, as [`Self::OS_USER`] when we are root.
    fn pg_command(&self, name: &str) -> Command {
        let bin = self.bin_dir.join(name);
        match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(bin);
                cmd
            }
            None => Command::new(bin),
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: {e}");
        }
    }
}

/// A new temporary directory under `base` for a cluster, owned by `run_as` when given.
fn cluster_dir(base: &Path, prefix: &str, run_as: Option<&str>) -> ServerResult<TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(base)?;
    if let Some(user) = run_as {
        let (uid, gid) = os_user_ids(user)?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
    }
    Ok(dir)
}

/// Runs `cmd` to completion; an unsuccessful exit is an error carrying its stderr.
fn run_checked(mut cmd: Command, what: &str) -> ServerResult<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', " | ")
    )
    .into())
}

/// Appends `text` to the cluster's `postgresql.conf`.
fn append_conf(data: &Path, text: &str) -> ServerResult<()> {
    OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?
        .write_all(text.as_bytes())?;
    Ok(())
}

/// The `bin` directory of the newest PostgreSQL under `/usr/lib/postgresql`, or the one `pg_ctl` on
/// `PATH` lives in.
fn postgres_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let pg_ctl = fs::canonicalize(find_in_path("pg_ctl")?).ok()?;
    pg_ctl
        .parent()
        .filter(|d| has_tools(d))
        .map(Path::to_path_buf)
}

/// The uid and gid of OS user `user`, creating it (as a system user) if it does not exist.
fn os_user_ids(user: &str) -> ServerResult<(u32, u32)> {
    let lookup = || -> Option<(u32, u32)> {
        let passwd = fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == user).then_some(())?;
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
    };
    if let Some(ids) = lookup() {
        return Ok(ids);
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            user,
        ])
        .status()?;
    if !status.success() {
        return Err(format!("cannot create the OS user {user}").into());
    }
    lookup().ok_or_else(|| format!("OS user {user} missing after useradd").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_and_path_lookup() {
        assert!(free_port().unwrap() > 0);
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("no-such-binary-tokendb").is_none());
    }
}
