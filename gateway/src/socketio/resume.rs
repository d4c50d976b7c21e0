//! Resuming a socket after a lost connection (connection state recovery): the record the
//! routers kept, the events the client missed, then the live ones.

use herald_core::codes::Refusal;
use herald_core::rules::Action;
use herald_proto::bus::v1::{Position, SocketRecord};

use super::recovery::{self, Recovery};
use super::socket::{Conn, Socket};
use crate::access::Access;
use crate::catch_up::{self, Resumed, Returning};
use crate::hooks;
use crate::metrics::SOCKETIO;

impl Conn {
    /// Resumes the socket the client had, if its record and every event it missed can
    /// still be had, and the client is the same user, still allowed in every channel:
    /// the same sid and pid, its rooms, then exactly the missed events, in order. Gives
    /// `access` back when not: the client gets a fresh socket.
    pub(super) async fn resume(
        &self,
        namespace: &str,
        pid: &str,
        offset: Option<&str>,
        access: Access,
    ) -> Result<Socket, Access> {
        let Some(mut record) = self.records().take(pid).await else {
            return Err(access);
        };
        let channels = &self.ctx.channels;
        let allowed = record.marks.iter().all(|mark| {
            access
                .authorize(channels, &mark.channel, Action::Subscribe)
                .is_ok_and(|rules| rules.recovery)
        });
        if record.namespace != namespace
            || record.marks.is_empty()
            || record.user != access.user()
            || !allowed
        {
            return Err(access);
        }
        // The subscribe hook is asked again, as for a join: what it allowed then it may
        // refuse now. (Not for the personal channel, which it is never asked about.)
        let personal = channels.personal_channel(access.user());
        let client = access.client_info(&record.sid);
        for mark in &record.marks {
            if personal.as_ref() == Some(&mark.channel) {
                continue;
            }
            let about = || hooks::client(&client, SOCKETIO, namespace);
            if self
                .ctx
                .hooks
                .subscribe(&mark.channel, about)
                .await
                .is_err()
            {
                return Err(access);
            }
        }
        let upstream = &self.ctx.upstream;
        if self.settle_fresh_marks(&mut record).await.is_err() {
            return Err(access);
        }
        let starts = recovery::starting_points(&record, offset);
        let mut missed = Vec::with_capacity(starts.len());
        for (channel, from) in &starts {
            let history = channels.rules_for(channel).has_history();
            match catch_up::missed(upstream, channel, from, history).await {
                Some(publications) => missed.push(publications),
                None => return Err(access),
            }
        }
        let recovery = Recovery::new(pid.into());
        for (channel, from) in &starts {
            recovery.marks.set(channel, from);
        }
        let sid = record.sid.as_str().into();
        let mut socket = Socket::new(self, sid, namespace, access, Some(recovery));
        for mark in record.marks {
            socket.joined(mark.channel, mark.joined.unwrap_or_default());
        }
        // The reply first, so that no client sees events of a socket it was refused.
        self.reply_connect(&socket);
        let mut last: Vec<Position> = starts.iter().map(|(_, from)| from.clone()).collect();
        for publication in recovery::merge(missed) {
            if let Some(i) = starts.iter().position(|(c, _)| *c == publication.channel) {
                last[i] = Position {
                    offset: publication.offset,
                    epoch: publication.epoch.clone(),
                };
            }
            socket.subscriber.replay(&publication);
        }
        for ((channel, _), from) in starts.iter().zip(last) {
            let returning = self.returning(&socket, channel);
            match returning
                .subscribe_after(channel, from, |p| socket.subscriber.replay(p))
                .await
            {
                Ok(Resumed::Recovered(_)) => {}
                Ok(Resumed::Lost(_)) => {
                    tracing::debug!(channel, "cannot catch up a resumed socket")
                }
                Err(refusal) => {
                    tracing::debug!(channel, %refusal, "a resumed socket lost a channel");
                    continue;
                }
            }
            self.track(&socket, channel, true);
        }
        self.save(&socket).await;
        Ok(socket)
    }

    /// A socket that joined a channel before its first publication is marked at offset 0
    /// of the empty epoch, but the offsets its client echoes name the epoch the channel
    /// got since. Every publication of that epoch came after the join, so the mark becomes
    /// offset 0 of it, and the echoed offset can be read against it.
    async fn settle_fresh_marks(&self, record: &mut SocketRecord) -> Result<(), Refusal> {
        for mark in &mut record.marks {
            let joined = mark.joined.get_or_insert_with(Position::default);
            let channels = &self.ctx.channels;
            if !joined.epoch.is_empty() || !channels.rules_for(&mark.channel).has_history() {
                continue;
            }
            let current = self.ctx.upstream.position(&mark.channel).await?;
            *joined = Position {
                offset: 0,
                epoch: current.epoch,
            };
        }
        Ok(())
    }

    fn returning<'a>(&'a self, socket: &Socket, channel: &str) -> Returning<'a> {
        Returning {
            hub: &self.ctx.hub,
            upstream: &self.ctx.upstream,
            id: socket.id,
            subscriber: socket.subscriber.clone(),
            history: self.ctx.channels.rules_for(channel).has_history(),
        }
    }
}
