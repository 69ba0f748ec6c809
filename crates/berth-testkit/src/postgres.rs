//! A throwaway PostgreSQL server for tests: its own cluster in a temp folder, reached over
//! a Unix socket in that folder (no TCP port to collide with), stopped and removed on drop.
//!
//! Uses the server binaries of Debian's `postgresql` package (`scripts/setup.d/store.sh`
//! installs it). PostgreSQL refuses to run as root, so under root the cluster belongs to
//! the `postgres` system user the package creates, and its tools run through `runuser`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl TempPostgres {
    /// Creates and starts a cluster; returns once it accepts connections.
    pub fn start() -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("berth-pg-")
            .tempdir()
            .expect("create a temp folder for PostgreSQL");
        let as_postgres = nix::unistd::geteuid().is_root();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("the postgres system user exists (install Debian's postgresql)");
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))
                .expect("hand the cluster folder to the postgres user");
        }
        let pg = TempPostgres {
            dir,
            bin,
            as_postgres,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "berth",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c full_page_writes=off",
            pg.socket_dir().display()
        );
        pg.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-o",
                &options,
                "-l",
                path_str(&pg.dir.path().join("server.log")),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        pg
    }

    /// Connection settings for the database `name` (created by [`Self::create_database`],
    /// or `postgres`, which always exists), in libpq's key=value form.
    pub fn url(&self, name: &str) -> String {
        format!(
            "host={} user=berth dbname={name}",
            self.socket_dir().display()
        )
    }

    /// Creates an empty database and returns its connection settings.
    pub fn create_database(&self, name: &str) -> String {
        self.run(
            "createdb",
            &["-h", path_str(&self.socket_dir()), "-U", "berth", name],
        );
        self.url(name)
    }

    /// Stops the server (fast shutdown: open sessions are cut), keeping its files, so a
    /// test can see what a client does while the database is down.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", path_str(&self.data_dir()), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts a stopped server again on the same files and socket.
    pub fn restart(&self) {
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off",
            self.socket_dir().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data_dir()),
                "-o",
                &options,
                "-l",
                path_str(&self.dir.path().join("server.log")),
                "-w",
                "start",
            ],
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let args = ["-D", path_str(&data), "-m", "immediate", "stop"];
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        // Already stopped is fine; the folder goes either way.
        let _ = command.args(args).output();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// The newest installed server's `bin` folder (`/usr/lib/postgresql/<major>/bin`).
fn server_bin_dir() -> PathBuf {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL server binaries in /usr/lib/postgresql/*/bin: run scripts/test (it installs Debian's postgresql)")
}
