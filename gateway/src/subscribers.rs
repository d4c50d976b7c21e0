//! The local subscribers of one channel, by id: a map that holds a lone subscriber without
//! allocating.
//!
//! Most channels a gateway holds have one local subscriber (a user's personal channel,
//! with one connection of that user here), and a `HashMap` allocates four slots for its
//! first entry (about 150 bytes here), kept for the channel's whole life. One subscriber
//! is held inline; a second moves both into a map, and the map goes again when one is left.

use std::collections::HashMap;

/// Subscribers (`V`) by id.
#[derive(Default)]
pub enum Subscribers<V> {
    #[default]
    None,
    One(u64, V),
    Many(HashMap<u64, V>),
}

impl<V> Subscribers<V> {
    pub fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::One(..) => 1,
            Self::Many(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: u64) -> bool {
        match self {
            Self::None => false,
            Self::One(held, _) => *held == id,
            Self::Many(map) => map.contains_key(&id),
        }
    }

    /// Adds `value` as `id`, replacing the one that had that id.
    pub fn insert(&mut self, id: u64, value: V) {
        match std::mem::take(self) {
            Self::None => *self = Self::One(id, value),
            Self::One(held, _) if held == id => *self = Self::One(id, value),
            Self::One(held, first) => {
                *self = Self::Many(HashMap::from([(held, first), (id, value)]))
            }
            Self::Many(mut map) => {
                map.insert(id, value);
                *self = Self::Many(map);
            }
        }
    }

    /// Removes `id`; returns what it held.
    pub fn remove(&mut self, id: u64) -> Option<V> {
        match std::mem::take(self) {
            Self::One(held, value) if held == id => Some(value),
            Self::Many(mut map) => {
                let removed = map.remove(&id);
                *self = if map.len() > 1 {
                    Self::Many(map)
                } else {
                    map.into_iter()
                        .next()
                        .map_or(Self::None, |(last, value)| Self::One(last, value))
                };
                removed
            }
            unchanged => {
                *self = unchanged;
                None
            }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        let (one, many) = match self {
            Self::None => (None, None),
            Self::One(_, value) => (Some(value), None),
            Self::Many(map) => (None, Some(map.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(subscribers: &Subscribers<&'static str>) -> Vec<&'static str> {
        let mut values: Vec<_> = subscribers.values().copied().collect();
        values.sort_unstable();
        values
    }

    #[test]
    fn one_is_held_inline_and_many_in_a_map() {
        let mut subscribers = Subscribers::default();
        assert!(subscribers.is_empty());
        subscribers.insert(1, "a");
        assert!(matches!(subscribers, Subscribers::One(1, "a")));
        subscribers.insert(1, "a again");
        assert_eq!(sorted(&subscribers), ["a again"], "the same id replaces");
        subscribers.insert(2, "b");
        subscribers.insert(3, "c");
        assert!(matches!(subscribers, Subscribers::Many(_)));
        assert_eq!(subscribers.len(), 3);
        assert!(subscribers.contains(2) && !subscribers.contains(4));
        assert_eq!(sorted(&subscribers), ["a again", "b", "c"]);
    }

    #[test]
    fn removing_down_to_one_gives_the_map_back() {
        let mut subscribers = Subscribers::default();
        for (id, value) in [(1, "a"), (2, "b"), (3, "c")] {
            subscribers.insert(id, value);
        }
        assert_eq!(subscribers.remove(4), None);
        assert_eq!(subscribers.remove(2), Some("b"));
        assert_eq!(subscribers.len(), 2);
        assert_eq!(subscribers.remove(1), Some("a"));
        assert!(matches!(subscribers, Subscribers::One(3, "c")));
        assert_eq!(subscribers.remove(1), None);
        assert_eq!(subscribers.remove(3), Some("c"));
        assert!(subscribers.is_empty());
        assert_eq!(subscribers.remove(3), None);
        assert_eq!(subscribers.values().count(), 0);
    }
}
