//! A throwaway Docker engine for tests: its own `dockerd` with data, exec root and socket
//! in a temp folder, no bridge and no iptables rules (containers use the host network,
//! as the docker driver runs them), stopped and removed on drop.
//!
//! Images cannot be pulled here, so [`TempDocker::import_busybox`] builds one from
//! Debian's static busybox (`busybox-static`; `scripts/setup.d/agent.sh` installs it
//! with `docker.io`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TempDocker {
    dir: tempfile::TempDir,
    daemon: Child,
}

/// What every image of [`TempDocker::import_busybox`] serves at `/www`.
pub const BUSYBOX_INDEX: &str = "hello from a container\n";

impl TempDocker {
    /// Starts the engine; returns once it answers `/_ping`.
    pub async fn start() -> Self {
        let dockerd = which("dockerd").expect(
            "dockerd is missing: install Debian's docker.io (scripts/setup.d/agent.sh does)",
        );
        // Short: the engine's and containerd's sockets live under it (108-byte limit).
        let dir = tempfile::Builder::new()
            .prefix("bd-")
            .tempdir_in("/tmp")
            .expect("create a temp folder for dockerd");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("dockerd log");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let daemon = Command::new(dockerd)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--shutdown-timeout=2",
                "--data-root",
                &path("data"),
                "--exec-root",
                &path("exec"),
                "--pidfile",
                &path("docker.pid"),
                "--host",
                &format!("unix://{}", path("docker.sock")),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dockerd log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let mut docker = Self { dir, daemon };
        // Polled every 50 ms for at most 60 s.
        for _ in 0..1200 {
            if docker.ping() {
                return docker;
            }
            if let Ok(Some(status)) = docker.daemon.try_wait() {
                panic!("dockerd exited ({status}):\n{}", docker.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dockerd did not answer within 60 s:\n{}", docker.log_tail());
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn ping(&self) -> bool {
        self.get("/_ping").is_some_and(|(status, _)| status == 200)
    }

    /// One blocking `GET` against the engine: status and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = UnixStream::connect(self.socket()).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// Names of the containers (running or not) whose label `key` equals `value`.
    pub fn containers_labelled(&self, key: &str, value: &str) -> Vec<String> {
        let out = self.cli(&[
            "ps",
            "-a",
            "--filter",
            &format!("label={key}={value}"),
            "--format",
            "{{.Names}}",
        ]);
        out.lines().map(str::to_string).collect()
    }

    /// Runs the docker CLI against this engine; panics with its output on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("docker")
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .output()
            .expect("run the docker CLI (Debian's docker.io)");
        assert!(
            output.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Imports an image named `tag` whose file system is a static busybox (`/bin/sh`,
    /// `httpd`, `sleep`, ...) and `/www/index.html` holding [`BUSYBOX_INDEX`].
    pub fn import_busybox(&self, tag: &str) {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("busybox is missing: install Debian's busybox-static");
        let root = self
            .dir
            .path()
            .join(format!("rootfs-{}", tag.replace(['/', ':'], "_")));
        std::fs::create_dir_all(root.join("bin")).expect("rootfs");
        std::fs::create_dir_all(root.join("www")).expect("rootfs");
        std::fs::create_dir_all(root.join("tmp")).expect("rootfs");
        std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        for applet in [
            "sh", "httpd", "sleep", "echo", "cat", "env", "ls", "true", "false", "wget", "tty",
            "stty",
        ] {
            let link = root.join("bin").join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link).expect("applet link");
            }
        }
        std::fs::write(root.join("www/index.html"), BUSYBOX_INDEX).expect("index");
        let tar = root.with_extension("tar");
        let packed = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("run tar");
        assert!(packed.success(), "tar of the busybox root failed");
        let status = Command::new("docker")
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .args(["import", "-c", "ENV PATH=/bin", "-", tag])
            .stdin(std::fs::File::open(&tar).expect("the image tar"))
            .stdout(Stdio::null())
            .status()
            .expect("run docker import");
        assert!(status.success(), "docker import {tag} failed");
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for TempDocker {
    fn drop(&mut self) {
        // Containers first, so the engine's shutdown has nothing to wait for.
        if let Ok(output) = Command::new("docker")
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .args(["ps", "-aq"])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .arg("--host")
                    .arg(format!("unix://{}", self.socket().display()))
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        let pid = nix::unistd::Pid::from_raw(self.daemon.id() as i32);
        // With no containers left and a 2 s shutdown timeout the engine exits at once.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.daemon.wait();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
