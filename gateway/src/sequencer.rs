//! Puts one channel's publications in offset order, with no gaps and no duplicates.
//!
//! Several routers publish concurrently, so publication N+1 can reach a gateway before N,
//! and the bus may lose a message during a reconnect. The sequencer delivers in order,
//! drops what was already delivered, and holds anything that arrives after a gap until the
//! gap is closed, by the late message or from history. Pure logic, no I/O: the feed task
//! drives it.

use std::collections::BTreeMap;

use herald_proto::bus::v1::{Position, Publication};

/// Publications held behind a gap at most; past this the gap is given up as lost.
pub const MAX_HELD: usize = 10_000;

#[derive(Debug)]
pub struct Sequencer {
    epoch: String,
    /// Offset of the last publication delivered.
    last: u64,
    held: BTreeMap<u64, Publication>,
}

/// What to do with a publication whose epoch is not the current one.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// In order: deliver these.
    Deliver(Vec<Publication>),
    /// Behind a gap, or a duplicate: nothing to deliver now.
    Nothing,
    /// From another epoch: ask the router which epoch is current. The publication is
    /// handed back.
    OtherEpoch(Box<Publication>),
}

impl Sequencer {
    pub fn new(position: &Position) -> Self {
        Self {
            epoch: position.epoch.clone(),
            last: position.offset,
            held: BTreeMap::new(),
        }
    }

    pub fn position(&self) -> Position {
        Position {
            offset: self.last,
            epoch: self.epoch.clone(),
        }
    }

    /// The offset range missing before the first held publication, if any.
    pub fn gap(&self) -> Option<(u64, u64)> {
        let (&first_held, _) = self.held.first_key_value()?;
        Some((self.last + 1, first_held - 1))
    }

    pub fn accept(&mut self, publication: Publication) -> Accepted {
        if self.epoch.is_empty() && self.last == 0 && publication.offset == 1 {
            // The channel had no stream yet: the epoch it starts is its continuation. (Any
            // other first publication goes by the router, which knows the current epoch.)
            self.epoch.clone_from(&publication.epoch);
        }
        if publication.epoch != self.epoch {
            return Accepted::OtherEpoch(Box::new(publication));
        }
        if publication.offset <= self.last || self.held.contains_key(&publication.offset) {
            return Accepted::Nothing;
        }
        if publication.offset == self.last + 1 {
            self.last += 1;
            let mut ready = vec![publication];
            self.release(&mut ready);
            Accepted::Deliver(ready)
        } else {
            self.held.insert(publication.offset, publication);
            if self.held.len() > MAX_HELD {
                Accepted::Deliver(self.skip_gap())
            } else {
                Accepted::Nothing
            }
        }
    }

    /// Fills the gap with publications read from history (in offset order) and returns
    /// everything that can now be delivered. History that does not reach back to the gap
    /// (trimmed) cannot fill it: the gap is skipped so delivery goes on. A `truncated`
    /// page (cut short to fit the bus) that filled the start of the gap leaves the rest for
    /// the next page.
    pub fn fill(&mut self, history: Vec<Publication>, truncated: bool) -> Vec<Publication> {
        let before = self.last;
        let mut ready = Vec::new();
        for publication in history {
            if publication.epoch == self.epoch && publication.offset == self.last + 1 {
                self.last += 1;
                self.held.remove(&publication.offset);
                ready.push(publication);
            }
        }
        let progressed = self.last > before;
        self.release(&mut ready);
        if self.gap().is_some() && !(truncated && progressed) {
            ready.extend(self.skip_gap());
        }
        ready
    }

    /// Starts over in a new epoch, before its first publication.
    pub fn restart(&mut self, epoch: String) {
        self.epoch = epoch;
        self.last = 0;
        self.held.clear();
    }

    /// Moves past a gap that cannot be filled, delivering what was held after it.
    fn skip_gap(&mut self) -> Vec<Publication> {
        let Some((lost_from, lost_to)) = self.gap() else {
            return Vec::new();
        };
        tracing::warn!(
            lost_from,
            lost_to,
            "publications lost: history no longer has them"
        );
        if let Some((&first, _)) = self.held.first_key_value() {
            self.last = first - 1;
        }
        let mut ready = Vec::new();
        self.release(&mut ready);
        ready
    }

    /// Moves held publications that are now in order to `ready`.
    fn release(&mut self, ready: &mut Vec<Publication>) {
        while let Some(next) = self.held.remove(&(self.last + 1)) {
            self.last += 1;
            ready.push(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(offset: u64) -> Publication {
        Publication {
            channel: "c".into(),
            offset,
            epoch: "e".into(),
            ..Default::default()
        }
    }

    fn start(offset: u64) -> Sequencer {
        Sequencer::new(&Position {
            offset,
            epoch: "e".into(),
        })
    }

    #[test]
    fn a_channel_without_a_stream_takes_the_epoch_it_starts() {
        let mut sequencer = Sequencer::new(&Position::default());
        // Not the start of an epoch: the router is asked which epoch is current.
        assert!(matches!(
            sequencer.accept(publication(2)),
            Accepted::OtherEpoch(_)
        ));
        assert_eq!(offsets(sequencer.accept(publication(1))), [1]);
        assert_eq!(offsets(sequencer.accept(publication(2))), [2]);
        assert_eq!(sequencer.position().epoch, "e");
    }

    fn offsets(accepted: Accepted) -> Vec<u64> {
        match accepted {
            Accepted::Deliver(ps) => ps.iter().map(|p| p.offset).collect(),
            Accepted::Nothing => vec![],
            Accepted::OtherEpoch(_) => panic!("unexpected epoch"),
        }
    }

    #[test]
    fn in_order_publications_pass_and_duplicates_drop() {
        let mut s = start(5);
        assert_eq!(offsets(s.accept(publication(6))), [6]);
        assert_eq!(offsets(s.accept(publication(6))), Vec::<u64>::new());
        assert_eq!(offsets(s.accept(publication(3))), Vec::<u64>::new());
        assert_eq!(offsets(s.accept(publication(7))), [7]);
    }

    #[test]
    fn a_late_publication_releases_the_ones_held_behind_it() {
        let mut s = start(0);
        assert_eq!(offsets(s.accept(publication(2))), Vec::<u64>::new());
        assert_eq!(offsets(s.accept(publication(3))), Vec::<u64>::new());
        assert_eq!(s.gap(), Some((1, 1)));
        assert_eq!(offsets(s.accept(publication(1))), [1, 2, 3]);
        assert_eq!(s.gap(), None);
    }

    #[test]
    fn history_fills_a_gap() {
        let mut s = start(10);
        s.accept(publication(14));
        assert_eq!(s.gap(), Some((11, 13)));
        let filled = s.fill((11..=14).map(publication).collect(), false);
        assert_eq!(
            filled.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [11, 12, 13, 14]
        );
        assert_eq!(s.position().offset, 14);
    }

    #[test]
    fn a_gap_history_cannot_fill_is_skipped() {
        let mut s = start(10);
        s.accept(publication(14));
        s.accept(publication(15));
        let filled = s.fill(vec![publication(13)], false);
        assert_eq!(
            filled.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [14, 15]
        );
        assert_eq!(s.gap(), None);
    }

    #[test]
    fn a_truncated_page_fills_part_of_a_gap_and_the_rest_waits() {
        let mut s = start(10);
        s.accept(publication(15));
        let filled = s.fill(vec![publication(11), publication(12)], true);
        assert_eq!(
            filled.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [11, 12]
        );
        assert_eq!(s.gap(), Some((13, 14)));
        let filled = s.fill(vec![publication(13), publication(14)], false);
        assert_eq!(
            filled.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [13, 14, 15]
        );
    }

    #[test]
    fn a_truncated_page_that_does_not_reach_the_gap_skips_it() {
        // History was trimmed: its first page starts after the gap, so waiting for more
        // pages would never close it.
        let mut s = start(10);
        s.accept(publication(15));
        let filled = s.fill(vec![publication(13)], true);
        assert_eq!(filled.iter().map(|p| p.offset).collect::<Vec<_>>(), [15]);
        assert_eq!(s.gap(), None);
    }

    #[test]
    fn another_epoch_is_reported_and_restart_begins_at_one() {
        let mut s = start(10);
        let mut other = publication(1);
        other.epoch = "f".into();
        assert_eq!(
            s.accept(other.clone()),
            Accepted::OtherEpoch(Box::new(other.clone()))
        );
        s.restart("f".into());
        assert_eq!(offsets(s.accept(other)), [1]);
    }
}
