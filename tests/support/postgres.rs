//! A real PostgreSQL (Debian's `postgresql` package) for the tests: initdb
//! and postgres in a temp dir on a free loopback port, stopped on drop.
//!
//! PostgreSQL refuses to run as root, and the tests run as root in CI: the
//! server then runs as the `postgres` user the package creates (`setpriv`).
//! It cannot start: the test panics with the server's log, never skips.
//!
//! `ISB_TEST_STORE=postgres` makes [`super::Bridge::start`] put every bridge
//! on its own database of one server shared by the test binary
//! ([`shared_url`]), so the whole suite runs on this backend too.

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, OnceLock};

use tempfile::TempDir;

use super::{free_port, read_log, wait_until};

/// The environment variable that selects the store of test bridges.
pub const STORE_VAR: &str = "ISB_TEST_STORE";

/// Where the Debian package installs the server programs.
fn bin(program: &str) -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = fs::read_dir(base)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (apt-get install postgresql; scripts/test does)",
                base.display()
            )
        })
        .filter_map(|e| Some(e.ok()?.path()))
        .collect();
    versions.sort();
    let newest = versions
        .last()
        .unwrap_or_else(|| panic!("no PostgreSQL in {}", base.display()));
    newest.join("bin").join(program)
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

pub struct Postgres {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    root: bool,
}

impl Postgres {
    /// initdb (trust authentication, user `postgres`) and start.
    pub fn start() -> Postgres {
        let dir = TempDir::with_prefix("isb-postgres-").expect("temp dir");
        let root = is_root();
        if root {
            let id = |flag: &str| -> u32 {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .expect("id");
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .expect("the postgres user exists (the postgresql package creates it)")
            };
            chown(dir.path(), Some(id("-u")), Some(id("-g"))).expect("chown the temp dir");
        }
        let mut pg = Postgres {
            port: free_port(),
            dir,
            child: None,
            root,
        };
        let data = pg.data();
        let out = pg
            .command(&bin("initdb"))
            .args([
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        check(&out, "initdb");
        pg.restart();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// A command run as the server's user, and killed (SIGINT: a fast
    /// shutdown) when the thread that started it ends.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("setpriv");
        if self.root {
            cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
        }
        cmd.arg("--pdeathsig=INT").arg("--").arg(program);
        cmd
    }

    /// Starts the server (again, after [`Postgres::stop`]) on the same port
    /// and data, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "postgres is running already");
        let log = fs::File::create(self.dir.path().join("postgres.log")).expect("postgres.log");
        let mut cmd = self.command(&bin("postgres"));
        cmd.args([
            "-D",
            &self.data(),
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
        ])
        .args(["-k", &self.dir.path().display().to_string()])
        // Speed over durability: the tests crash bridges, never this server.
        .args([
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log);
        // The death signal follows the thread that forks: started from a
        // thread that lives as long as the process, the server outlives
        // the test that started it but not the test binary.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        });
        let child = rx.recv().expect("spawner thread").expect("spawn postgres");
        self.child = Some(child);
        let up = wait_until(30, || self.psql("postgres", "SELECT 1").status.success());
        assert!(
            up,
            "postgres did not start on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("postgres.log"))
    }

    /// Runs one SQL statement with psql on database `db`.
    pub fn psql(&self, db: &str, sql: &str) -> Output {
        Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(["-c", sql])
            .output()
            .expect("run psql")
    }

    /// The text psql prints for `sql`, trimmed; panics if it fails.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, sql);
        check(&out, sql);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.query("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `ISB_TEST_STORE` asks for PostgreSQL; any other value than
/// `redb` (the default) or `postgres` is a mistake, not a silent default.
pub fn wanted() -> bool {
    match std::env::var(STORE_VAR).as_deref() {
        Ok("postgres") => true,
        Ok("redb") | Err(_) => false,
        Ok(other) => panic!("{STORE_VAR}={other}: expected postgres or redb"),
    }
}

/// The server this test binary's bridges share (started on first use,
/// stopped when the binary exits), and a fresh database on it.
pub fn shared_url() -> String {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            sweep_stale();
            Postgres::start()
        })
        .database()
}

/// A shared server is never dropped (statics are not), so its temp dir
/// stays behind when its test binary exits: the next one removes the dirs
/// whose server is gone and that are old enough not to be starting up.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for dir in entries.filter_map(|e| Some(e.ok()?.path())) {
        let named = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("isb-postgres-"));
        let old = fs::metadata(&dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 600));
        let live = fs::read_to_string(dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().next().map(str::to_owned))
            .is_some_and(|pid| Path::new("/proc").join(pid.trim()).exists());
        if named && old && !live {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}
