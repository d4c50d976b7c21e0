//! What a load-generator process tells the coordinator of the crowd run, one line on its
//! stdout each time it is asked: `key=value` pairs, so both sides share one format.

use anyhow::{Context, bail};

/// A generator's connections once they are all open.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opened {
    pub ok: u64,
    pub failed: u64,
    /// When the generator began opening, and when its last connection was up (µs since
    /// the Unix epoch: the processes share one clock).
    pub start_us: u64,
    pub end_us: u64,
}

/// A generator's connections at the moment it was asked, after `broadcasts` broadcasts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Status {
    /// Connections that have received every broadcast so far.
    pub complete: u64,
    /// Broadcast deliveries missing, over the connections it opened (one the server
    /// closed misses all).
    pub missing: u64,
    /// Broadcast deliveries beyond the first of each: duplicates.
    pub extra: u64,
    /// Connections the server closed.
    pub cut: u64,
    /// Socket.IO heartbeats answered (the server's pings), native pings sent and answered.
    pub pongs: u64,
    pub pings: u64,
    pub answered: u64,
    /// Delivery latency of the broadcasts, from the send time in the payload, µs.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Opened {
    pub fn line(&self) -> String {
        format!(
            "opened ok={} failed={} start_us={} end_us={}",
            self.ok, self.failed, self.start_us, self.end_us
        )
    }

    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let fields = fields(line, "opened")?;
        Ok(Self {
            ok: field(&fields, "ok")?,
            failed: field(&fields, "failed")?,
            start_us: field(&fields, "start_us")?,
            end_us: field(&fields, "end_us")?,
        })
    }
}

impl Status {
    pub fn line(&self) -> String {
        format!(
            "status complete={} missing={} extra={} cut={} pongs={} pings={} answered={} p50_us={} p99_us={} max_us={}",
            self.complete,
            self.missing,
            self.extra,
            self.cut,
            self.pongs,
            self.pings,
            self.answered,
            self.p50_us,
            self.p99_us,
            self.max_us
        )
    }

    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let fields = fields(line, "status")?;
        Ok(Self {
            complete: field(&fields, "complete")?,
            missing: field(&fields, "missing")?,
            extra: field(&fields, "extra")?,
            cut: field(&fields, "cut")?,
            pongs: field(&fields, "pongs")?,
            pings: field(&fields, "pings")?,
            answered: field(&fields, "answered")?,
            p50_us: field(&fields, "p50_us")?,
            p99_us: field(&fields, "p99_us")?,
            max_us: field(&fields, "max_us")?,
        })
    }

    /// The sums over generators; latencies are the worst generator's.
    pub fn add(&mut self, other: &Status) {
        self.complete += other.complete;
        self.missing += other.missing;
        self.extra += other.extra;
        self.cut += other.cut;
        self.pongs += other.pongs;
        self.pings += other.pings;
        self.answered += other.answered;
        self.p50_us = self.p50_us.max(other.p50_us);
        self.p99_us = self.p99_us.max(other.p99_us);
        self.max_us = self.max_us.max(other.max_us);
    }
}

fn fields<'a>(line: &'a str, kind: &str) -> anyhow::Result<Vec<(&'a str, &'a str)>> {
    let mut words = line.split_whitespace();
    if words.next() != Some(kind) {
        bail!("expected a {kind} line from a generator, got {line:?}");
    }
    Ok(words.filter_map(|w| w.split_once('=')).collect())
}

fn field(fields: &[(&str, &str)], key: &str) -> anyhow::Result<u64> {
    let (_, value) = fields
        .iter()
        .find(|(k, _)| *k == key)
        .with_context(|| format!("no {key} in a generator's line"))?;
    value
        .parse()
        .with_context(|| format!("{key}={value} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_as_written() {
        let status = Status {
            complete: 3,
            missing: 4,
            extra: 2,
            cut: 1,
            pongs: 5,
            pings: 6,
            answered: 6,
            p50_us: 700,
            p99_us: 900,
            max_us: 1000,
        };
        let back = Status::parse(&status.line()).unwrap();
        assert_eq!(back.line(), status.line());
        let opened = Opened {
            ok: 9,
            failed: 1,
            start_us: 10,
            end_us: 20,
        };
        assert_eq!(Opened::parse(&opened.line()).unwrap().line(), opened.line());
        assert!(Status::parse(&opened.line()).is_err());
    }
}
