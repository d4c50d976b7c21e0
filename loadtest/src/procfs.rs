//! What a process costs, read from `/proc`: resident memory and CPU time so far, and
//! their sums by kind of process (the processes of a Herald cluster named by kind).

use herald_testkit::Cluster;

/// Resident memory of `pid`, in bytes; `None` once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User and system CPU time `pid` has used, in seconds (`utime + stime` of its `stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// USER_HZ, 100 on every Linux architecture this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// `of` each process, summed by kind, in the order the kinds first appear.
pub fn by_kind<T: Copy + std::ops::AddAssign>(
    processes: &[(&'static str, u32)],
    of: impl Fn(u32) -> T,
) -> Vec<(&'static str, T)> {
    let mut kinds: Vec<(&'static str, T)> = Vec::new();
    for (kind, pid) in processes {
        let value = of(*pid);
        match kinds.iter_mut().find(|(k, _)| k == kind) {
            Some((_, sum)) => *sum += value,
            None => kinds.push((kind, value)),
        }
    }
    kinds
}

/// The server processes of a Herald cluster, by kind.
pub fn of_cluster(cluster: &Cluster) -> Vec<(&'static str, u32)> {
    let mut processes: Vec<(&'static str, u32)> = cluster
        .gateways
        .iter()
        .map(|g| ("gateways", g.pid()))
        .collect();
    processes.extend(cluster.routers.iter().map(|r| ("routers", r.pid())));
    processes.extend(cluster.nats.pid().map(|pid| ("nats", pid)));
    processes.extend(cluster.redis.pid().map(|pid| ("redis", pid)));
    processes
}

/// The value of `kind` in sums by kind; zero if it has none.
pub fn of_kind<T: Copy + Default>(kinds: &[(&str, T)], kind: &str) -> T {
    kinds
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(T::default(), |(_, value)| *value)
}
