//! Every client connection of this gateway, found by user or by client id, so that
//! commands of the server API (disconnect a user, unsubscribe a user) reach the sessions
//! that hold them. Each session acts on its own commands, in its own loop.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::hub::ClientId;

/// What the server API asks of a session, about its connections of `user` (every one) or
/// its connection or socket `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Disconnect { user: String, client: String },
    Unsubscribe { user: String, channel: String },
}

pub type Commands = mpsc::UnboundedReceiver<Command>;

#[derive(Default)]
struct Inner {
    sessions: HashMap<ClientId, mpsc::UnboundedSender<Command>>,
    /// How many clients (native connections, Socket.IO sockets) of each user each session
    /// holds.
    by_user: HashMap<String, HashMap<ClientId, usize>>,
    by_client: HashMap<String, ClientId>,
}

#[derive(Default)]
pub struct Clients {
    inner: Mutex<Inner>,
}

impl Clients {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every step leaves the maps consistent, so a poisoned lock is still sound.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session; its commands arrive on the receiver.
    pub fn open(&self, session: ClientId) -> Commands {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner().sessions.insert(session, tx);
        rx
    }

    /// The session ended: it and all its clients are forgotten.
    pub fn close(&self, session: ClientId) {
        let mut inner = self.inner();
        inner.sessions.remove(&session);
        inner.by_user.retain(|_, sessions| {
            sessions.remove(&session);
            !sessions.is_empty()
        });
        inner.by_client.retain(|_, s| *s != session);
    }

    /// `session` now holds client `client` of `user` (empty for anonymous).
    pub fn add(&self, session: ClientId, client: &str, user: &str) {
        let mut inner = self.inner();
        inner.by_client.insert(client.to_string(), session);
        if !user.is_empty() {
            let sessions = inner.by_user.entry(user.to_string()).or_default();
            *sessions.entry(session).or_default() += 1;
        }
    }

    /// `session` no longer holds client `client` of `user`.
    pub fn remove(&self, session: ClientId, client: &str, user: &str) {
        let mut inner = self.inner();
        inner.by_client.remove(client);
        if let Some(sessions) = inner.by_user.get_mut(user) {
            if let Some(count) = sessions.get_mut(&session) {
                *count -= 1;
                if *count == 0 {
                    sessions.remove(&session);
                }
            }
            if sessions.is_empty() {
                inner.by_user.remove(user);
            }
        }
    }

    /// Sends `command` to the sessions holding `user`'s clients (or client `client`);
    /// returns how many sessions got it.
    pub fn send(&self, user: &str, client: &str, command: Command) -> u32 {
        let inner = self.inner();
        let mut targets: Vec<ClientId> = Vec::new();
        if !user.is_empty()
            && let Some(sessions) = inner.by_user.get(user)
        {
            targets.extend(sessions.keys());
        }
        if !client.is_empty()
            && let Some(session) = inner.by_client.get(client)
        {
            targets.push(*session);
        }
        targets.sort_unstable();
        targets.dedup();
        targets
            .iter()
            .filter_map(|session| inner.sessions.get(session))
            .filter(|tx| tx.send(command.clone()).is_ok())
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_reach_the_sessions_of_a_user_or_a_client() {
        let clients = Clients::default();
        let mut one = clients.open(1);
        let mut two = clients.open(2);
        clients.add(1, "c1", "alice");
        clients.add(2, "c2", "alice");
        clients.add(2, "c3", "bob");
        let kick = |user: &str, client: &str| Command::Disconnect {
            user: user.into(),
            client: client.into(),
        };
        assert_eq!(clients.send("alice", "", kick("alice", "")), 2);
        assert_eq!(one.try_recv().unwrap(), kick("alice", ""));
        assert_eq!(two.try_recv().unwrap(), kick("alice", ""));
        assert_eq!(clients.send("", "c3", kick("", "c3")), 1);
        assert!(one.try_recv().is_err());
        clients.remove(2, "c2", "alice");
        assert_eq!(clients.send("alice", "", kick("alice", "")), 1);
        clients.close(1);
        assert_eq!(clients.send("alice", "", kick("alice", "")), 0);
        assert_eq!(clients.send("nobody", "", kick("nobody", "")), 0);
    }
}
