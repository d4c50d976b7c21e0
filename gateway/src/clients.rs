//! Every client connection of this gateway, found by user or by client id, so that
//! commands of the server API (disconnect a user, unsubscribe a user) reach the sessions
//! that hold them. Each session acts on its own commands, in its own loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::hub::ClientId;
use crate::mailbox::{self, mailbox};
use crate::small_map::SmallMap;

/// What the server API asks of a session, about its connections of `user` (every one) or
/// its connection or socket `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Disconnect { user: String, client: String },
    Unsubscribe { user: String, channel: String },
    Subscribe { user: String, channel: String },
}

pub type Commands = mailbox::Receiver<Command>;

/// A client held here, and its user (empty for anonymous).
pub type Held = (Arc<str>, Arc<str>);

/// One session's registration: where its commands go, and the clients it holds with their
/// users (empty for anonymous), so that its end undoes exactly its own entries. Each name
/// is held once, shared with the maps (and a client's with the session that names it).
struct Session {
    commands: mailbox::Sender<Command>,
    clients: Vec<(Arc<str>, Arc<str>)>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<ClientId, Session>,
    /// How many clients (native connections, Socket.IO sockets) of each user each session
    /// holds.
    by_user: HashMap<Arc<str>, SmallMap<usize>>,
    by_client: HashMap<Arc<str>, ClientId>,
    /// The empty name of anonymous clients' user, shared by all of them.
    anonymous: Arc<str>,
}

impl Inner {
    /// Forgets client `client` of `user`, held by `session`.
    fn forget(&mut self, session: ClientId, client: &str, user: &str) {
        if self.by_client.get(client) == Some(&session) {
            self.by_client.remove(client);
        }
        if let Some(sessions) = self.by_user.get_mut(user) {
            if let Some(count) = sessions.get_mut(session) {
                *count -= 1;
                if *count == 0 {
                    sessions.remove(session);
                }
            }
            if sessions.is_empty() {
                self.by_user.remove(user);
            }
        }
    }
}

/// Every session's clients. Each call costs what the session itself holds, not what the
/// gateway holds: a drain that ends every session stays linear.
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
        let (commands, rx) = mailbox();
        let registration = Session {
            commands,
            clients: Vec::new(),
        };
        self.inner().sessions.insert(session, registration);
        rx
    }

    /// The session ended: it and all its clients are forgotten.
    pub fn close(&self, session: ClientId) {
        let mut inner = self.inner();
        let Some(registration) = inner.sessions.remove(&session) else {
            return;
        };
        for (client, user) in &registration.clients {
            inner.forget(session, client, user);
        }
    }

    /// `session` now holds client `client` of `user` (empty for anonymous).
    pub fn add(&self, session: ClientId, client: &Arc<str>, user: &str) {
        let mut inner = self.inner();
        // A user with other clients here has a name to share already.
        let user: Arc<str> = match inner.by_user.get_key_value(user) {
            Some((name, _)) => name.clone(),
            None if user.is_empty() => inner.anonymous.clone(),
            None => user.into(),
        };
        let Some(registration) = inner.sessions.get_mut(&session) else {
            return;
        };
        let clients = &mut registration.clients;
        if clients.capacity() == 0 {
            // A session mostly holds one client: one slot, not a vector's four.
            clients.reserve_exact(1);
        }
        clients.push((client.clone(), user.clone()));
        inner.by_client.insert(client.clone(), session);
        if !user.is_empty() {
            let sessions = inner.by_user.entry(user).or_default();
            match sessions.get_mut(session) {
                Some(count) => *count += 1,
                None => sessions.insert(session, 1),
            }
        }
    }

    /// `session` no longer holds client `client` of `user`.
    pub fn remove(&self, session: ClientId, client: &str, user: &str) {
        let mut inner = self.inner();
        let Some(registration) = inner.sessions.get_mut(&session) else {
            return;
        };
        let held = registration
            .clients
            .iter()
            .position(|(c, u)| **c == *client && **u == *user);
        if let Some(index) = held {
            registration.clients.swap_remove(index);
            inner.forget(session, client, user);
        }
    }

    /// The clients held here (only `user`'s, unless `user` is empty), each with its user,
    /// by client id: the first `limit`, and whether there were more.
    pub fn list(&self, user: &str, limit: usize) -> (Vec<Held>, bool) {
        let mut found: Vec<Held> = {
            let inner = self.inner();
            let held = |session: &ClientId| inner.sessions.get(session);
            let sessions: Vec<&Session> = match user {
                "" => inner.sessions.values().collect(),
                user => inner.by_user.get(user).map_or_else(Vec::new, |sessions| {
                    sessions.iter().filter_map(|(s, _)| held(&s)).collect()
                }),
            };
            let mut matching: Vec<&Held> = sessions
                .iter()
                .flat_map(|session| session.clients.iter())
                .filter(|(_, u)| user.is_empty() || **u == *user)
                .collect();
            // Only the first `limit` and one more (to tell that there were more) are
            // cloned: linear work under the lock every connect needs, whatever the limit.
            if matching.len() > limit + 1 {
                matching.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
                matching.truncate(limit + 1);
            }
            matching.into_iter().cloned().collect()
        };
        // Sorted outside the lock: sessions come and go meanwhile.
        found.sort_unstable();
        let truncated = found.len() > limit;
        found.truncate(limit);
        (found, truncated)
    }

    /// How many users and clients are registered; for tests of the bookkeeping.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let inner = self.inner();
        (inner.by_user.len(), inner.by_client.len())
    }

    /// Sends `command` to the sessions holding `user`'s clients (or client `client`);
    /// returns how many sessions got it.
    pub fn send(&self, user: &str, client: &str, command: Command) -> u32 {
        let inner = self.inner();
        let mut targets: Vec<ClientId> = Vec::new();
        if !user.is_empty()
            && let Some(sessions) = inner.by_user.get(user)
        {
            targets.extend(sessions.iter().map(|(session, _)| session));
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
            .filter(|s| s.commands.send(command.clone()).is_ok())
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
        clients.add(1, &"c1".into(), "alice");
        clients.add(2, &"c2".into(), "alice");
        clients.add(2, &"c3".into(), "bob");
        let kick = |user: &str, client: &str| Command::Disconnect {
            user: user.into(),
            client: client.into(),
        };
        assert_eq!(clients.send("alice", "", kick("alice", "")), 2);
        assert_eq!(one.try_recv().expect("a command"), kick("alice", ""));
        assert_eq!(two.try_recv().expect("a command"), kick("alice", ""));
        assert_eq!(clients.send("", "c3", kick("", "c3")), 1);
        assert!(one.try_recv().is_none());
        clients.remove(2, "c2", "alice");
        assert_eq!(clients.send("alice", "", kick("alice", "")), 1);
        clients.close(1);
        assert_eq!(clients.send("alice", "", kick("alice", "")), 0);
        assert_eq!(clients.send("nobody", "", kick("nobody", "")), 0);
    }

    #[test]
    fn a_closed_session_leaves_nothing_and_touches_no_other() {
        let clients = Clients::default();
        let _one = clients.open(1);
        let mut two = clients.open(2);
        clients.add(1, &"a1".into(), "alice");
        clients.add(1, &"a2".into(), "alice");
        clients.add(1, &"anon".into(), "");
        clients.add(2, &"b1".into(), "bob");
        clients.add(2, &"a3".into(), "alice");
        clients.close(1);
        assert_eq!(
            clients.sizes(),
            (2, 2),
            "bob and alice (on session 2) remain"
        );
        let kick = Command::Disconnect {
            user: "alice".into(),
            client: String::new(),
        };
        assert_eq!(clients.send("alice", "", kick.clone()), 1);
        assert_eq!(two.try_recv().expect("a command"), kick);
        clients.close(2);
        assert_eq!(clients.sizes(), (0, 0));
        // A client added to a session that has ended is not kept.
        clients.add(2, &"late".into(), "carol");
        assert_eq!(clients.sizes(), (0, 0));
    }

    #[test]
    fn clients_are_listed_by_id_for_everyone_or_one_user() {
        let clients = Clients::default();
        let (_one, _two) = (clients.open(1), clients.open(2));
        clients.add(1, &"c".into(), "alice");
        clients.add(1, &"a".into(), "");
        clients.add(2, &"b".into(), "alice");
        clients.add(2, &"d".into(), "bob");
        let names = |(list, truncated): (Vec<Held>, bool)| {
            let names: Vec<String> = list.iter().map(|(c, u)| format!("{c}:{u}")).collect();
            (names, truncated)
        };
        assert_eq!(
            names(clients.list("", 10)),
            (
                vec![
                    "a:".into(),
                    "b:alice".into(),
                    "c:alice".into(),
                    "d:bob".into()
                ],
                false
            )
        );
        assert_eq!(
            names(clients.list("alice", 10)),
            (vec!["b:alice".into(), "c:alice".into()], false)
        );
        assert_eq!(
            names(clients.list("", 2)),
            (vec!["a:".into(), "b:alice".into()], true)
        );
        assert_eq!(names(clients.list("carol", 10)), (vec![], false));
    }
}
