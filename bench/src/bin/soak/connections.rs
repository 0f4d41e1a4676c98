//! The operator's established TCP connections per remote port, from `/proc/<pid>/net/tcp{,6}`
//! (every socket of the network namespace) restricted to the socket inodes among the process'
//! open file descriptors (`/proc/<pid>/fd/* -> socket:[inode]`).

use std::collections::{BTreeMap, HashSet};

/// `st` of an established connection in `/proc/net/tcp`.
const ESTABLISHED: &str = "01";

/// One row of `/proc/net/tcp`: the socket's inode, remote port and whether it is established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TcpRow {
    pub(crate) inode: u64,
    pub(crate) remote_port: u16,
    pub(crate) established: bool,
}

/// Parses `/proc/net/tcp` or `/proc/net/tcp6` (header skipped, malformed rows ignored).
pub(crate) fn parse_tcp_table(text: &str) -> Vec<TcpRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote = fields.get(2)?;
            let (_, port_hex) = remote.rsplit_once(':')?;
            Some(TcpRow {
                remote_port: u16::from_str_radix(port_hex, 16).ok()?,
                established: *fields.get(3)? == ESTABLISHED,
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The inode of a `/proc/<pid>/fd` link target `socket:[inode]`.
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Established connections among `rows` owned by `inodes`, counted per port of `ports` (every
/// port of `ports` appears, with 0 when none).
pub(crate) fn count_by_port(rows: &[TcpRow], inodes: &HashSet<u64>, ports: &[u16]) -> BTreeMap<u16, usize> {
    let mut counts: BTreeMap<u16, usize> = ports.iter().map(|p| (*p, 0)).collect();
    for row in rows {
        if row.established
            && inodes.contains(&row.inode)
            && let Some(c) = counts.get_mut(&row.remote_port)
        {
            *c += 1;
        }
    }
    counts
}

/// Counts `pid`'s established connections to each of `ports` now.
pub(crate) fn established(pid: u32, ports: &[u16]) -> std::io::Result<BTreeMap<u16, usize>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        // A descriptor closed while we list is simply not counted.
        let Ok(entry) = entry else { continue };
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(inode) = target.to_str().and_then(socket_inode)
        {
            inodes.insert(inode);
        }
    }
    let mut rows = Vec::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            rows.extend(parse_tcp_table(&text));
        }
    }
    Ok(count_by_port(&rows, &inodes, ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:2384 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C351 0100007F:2384 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C352 0100007F:1628 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:C353 0100007F:1628 01 00000000:00000000 00:00000000 00000000     0        0 1005 1 0000000000000000 20 4 30 10 -1
   garbage line
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:C360 0000000000000000FFFF00000100007F:11D6 01 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn counts_only_the_process_established_sockets_per_port() {
        let mut rows = parse_tcp_table(TCP);
        rows.extend(parse_tcp_table(TCP6));
        assert_eq!(rows.len(), 6);
        assert_eq!(
            rows[1],
            TcpRow {
                inode: 1002,
                remote_port: 9092,
                established: true
            }
        );
        // 1003 belongs to another process; 1005 and 2001 are ours; the TIME_WAIT row has no inode.
        let ours: HashSet<u64> = [1002, 1005, 2001, 9999].into_iter().collect();
        let counts = count_by_port(&rows, &ours, &[9092, 5672, 4566, 4222]);
        assert_eq!(counts[&9092], 1);
        assert_eq!(counts[&5672], 1);
        assert_eq!(counts[&4566], 1);
        assert_eq!(counts[&4222], 0);
        assert_eq!(counts.len(), 4);
    }

    #[test]
    fn reads_socket_inodes_from_fd_links() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn counts_this_process_own_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _server = listener.accept().unwrap();
        // Our connection to `port` (the accepted side's remote port is the client's, not `port`).
        let counts = established(std::process::id(), &[port]).unwrap();
        assert_eq!(counts[&port], 1);
    }
}
