//! Process and socket listings of one instance, read from `/proc`.
//!
//! An instance's processes are its root process (the process driver's group leader, or
//! a container's init) and every descendant: following parent links covers a shell's
//! children and a container's whole tree alike, where a process group would miss
//! programs that made their own group.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One process as `ps` would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub state: char,
    pub rss_kib: u64,
    pub command: String,
}

/// Parses `/proc/<pid>/stat`: fields counted from the last `)` (the name may hold any
/// character). `page_kib` converts resident pages.
pub fn parse_stat(pid: u32, text: &str, page_kib: u64) -> Option<Proc> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    Some(Proc {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        rss_kib: fields.get(21)?.parse::<u64>().ok()? * page_kib,
        command: name,
    })
}

fn read_proc(pid: u32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut proc = parse_stat(pid, &text, 4)?;
    // The full command line when readable (kernel threads and zombies have none).
    if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.is_empty() {
            proc.command = args.join(" ");
        }
    }
    Some(proc)
}

/// Every process on the machine.
fn all_processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_proc)
        .collect()
}

/// `root` and its descendants, parents before children.
pub fn tree(root: u32, all: &[Proc]) -> Vec<Proc> {
    let mut children: HashMap<u32, Vec<&Proc>> = HashMap::new();
    for proc in all {
        children.entry(proc.ppid).or_default().push(proc);
    }
    let Some(top) = all.iter().find(|p| p.pid == root) else {
        return Vec::new();
    };
    let mut out = vec![top.clone()];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i].pid;
        if let Some(kids) = children.get(&pid) {
            let mut kids: Vec<&Proc> = kids.clone();
            kids.sort_by_key(|p| p.pid);
            out.extend(kids.into_iter().cloned());
        }
        i += 1;
    }
    out
}

pub fn processes_of(root: u32) -> Vec<Proc> {
    tree(root, &all_processes())
}

pub fn format_process(p: &Proc) -> String {
    format!(
        "{:>7} {:>7} {} {:>9} KiB  {}",
        p.pid, p.ppid, p.state, p.rss_kib, p.command
    )
}

pub const PROCESS_HEADER: &str = "    PID    PPID S       RSS      COMMAND";

/// Listening TCP sockets from `/proc/net/tcp` or `tcp6`: inode -> local address.
pub fn parse_listening(text: &str, v6: bool) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if fields.len() < 10 || fields[3] != "0A" {
            continue;
        }
        let Some(addr) = decode_addr(fields[1], v6) else {
            continue;
        };
        if let Ok(inode) = fields[9].parse() {
            out.insert(inode, addr);
        }
    }
    out
}

fn decode_addr(field: &str, v6: bool) -> Option<String> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if !v6 {
        let raw = u32::from_str_radix(ip, 16).ok()?;
        // The kernel prints the address in host byte order (little endian here).
        let ip = std::net::Ipv4Addr::from(raw.swap_bytes());
        return Some(format!("{ip}:{port}"));
    }
    if ip.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (word, chunk) in ip.as_bytes().chunks(8).enumerate() {
        let raw = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        bytes[word * 4..word * 4 + 4].copy_from_slice(&raw.swap_bytes().to_be_bytes());
    }
    Some(format!("[{}]:{port}", std::net::Ipv6Addr::from(bytes)))
}

/// Socket inodes a process holds open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_string();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// `tcp ADDR pid PID COMMAND` for each listening socket of `procs`.
pub fn listening_ports(procs: &[Proc]) -> Vec<String> {
    let mut listening = BTreeMap::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(file) {
            listening.extend(parse_listening(&text, v6));
        }
    }
    let mut out = Vec::new();
    for proc in procs {
        for inode in socket_inodes(proc.pid) {
            if let Some(addr) = listening.get(&inode) {
                out.push(format!("tcp {addr} pid {} {}", proc.pid, proc.command));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let text = "42 (my (odd) app) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123 1000000 250 18446744073709551615";
        let p = parse_stat(42, text, 4).unwrap();
        assert_eq!(p.ppid, 7);
        assert_eq!(p.state, 'S');
        assert_eq!(p.rss_kib, 1000);
        assert_eq!(p.command, "my (odd) app");
        assert!(parse_stat(1, "garbage", 4).is_none());
    }

    #[test]
    fn the_tree_holds_the_root_and_every_descendant_only() {
        let p = |pid, ppid| Proc {
            pid,
            ppid,
            state: 'S',
            rss_kib: 0,
            command: String::new(),
        };
        let all = vec![p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(13, 10), p(20, 1)];
        let pids: Vec<u32> = tree(10, &all).iter().map(|p| p.pid).collect();
        assert_eq!(pids, [10, 11, 13, 12]);
        assert!(tree(99, &all).is_empty());
    }

    #[test]
    fn listening_sockets_decode_for_both_families() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 12346 1";
        let got = parse_listening(v4, false);
        assert_eq!(got.len(), 1, "only LISTEN (0A) rows");
        assert_eq!(got[&12345], "127.0.0.1:8080");
        let v6 = "header\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1";
        assert_eq!(parse_listening(v6, true)[&777], "[::1]:8080");
    }
}
