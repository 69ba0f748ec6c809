//! Instances outlive their agent by design, so a test that runs real agents must end their
//! instances itself, also when an assertion fails half-way.

use std::path::PathBuf;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// When dropped, kills the process group of every instance recorded under the given
/// agent data folders (`<dir>/instances/*/instance.json`), if that process still is the
/// one recorded (same pid and start time), so a recycled pid is never hit.
pub struct InstanceReaper {
    agent_dirs: Vec<PathBuf>,
}

impl InstanceReaper {
    pub fn new(agent_dirs: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        InstanceReaper {
            agent_dirs: agent_dirs.into_iter().map(Into::into).collect(),
        }
    }

    /// Kills now what [`Drop`] would kill later.
    pub fn reap(&self) {
        for dir in &self.agent_dirs {
            let Ok(entries) = std::fs::read_dir(dir.join("instances")) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Some((pid, ticks)) = recorded(&entry.path().join("instance.json"))
                    && start_ticks(pid) == Some(ticks)
                {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
    }
}

impl Drop for InstanceReaper {
    fn drop(&mut self) {
        self.reap();
    }
}

/// The pid and start ticks an agent recorded for an instance.
fn recorded(path: &std::path::Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    let handle = &record["handle"];
    Some((
        u32::try_from(handle["pid"].as_u64()?).ok()?,
        handle["start_ticks"].as_u64()?,
    ))
}

/// Field 22 of `/proc/PID/stat`, counted after the parenthesised command name (which may
/// itself hold spaces and parentheses).
fn start_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // After the state come fields 4..; start time is field 22, the 19th of these.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::start_ticks;

    #[test]
    fn reads_the_start_time_of_a_live_process() {
        let me = std::process::id();
        let ticks = start_ticks(me).expect("this process has a start time");
        assert_eq!(start_ticks(me), Some(ticks));
        assert_eq!(start_ticks(u32::MAX), None);
    }
}
