//! A map by numeric id that holds a lone entry without allocating: a channel's local
//! subscribers, a user's sessions on this gateway.
//!
//! Most channels a gateway holds have one local subscriber (a user's personal channel,
//! with one connection of that user here), and most users one session here; a `HashMap`
//! allocates four slots for its first entry (80 to 150 bytes here), kept as long as the
//! entry. One entry is held inline; a second moves both into a map, and the map goes
//! again when one is left.

use std::collections::HashMap;

/// Values (`V`) by id.
#[derive(Default)]
pub enum SmallMap<V> {
    #[default]
    None,
    One(u64, V),
    Many(HashMap<u64, V>),
}

impl<V> SmallMap<V> {
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

    pub fn get_mut(&mut self, id: u64) -> Option<&mut V> {
        match self {
            Self::One(held, value) if *held == id => Some(value),
            Self::Many(map) => map.get_mut(&id),
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        let (one, many) = match self {
            Self::None => (None, None),
            Self::One(id, value) => (Some((*id, value)), None),
            Self::Many(map) => (None, Some(map.iter().map(|(id, value)| (*id, value)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(map: &SmallMap<&'static str>) -> Vec<&'static str> {
        let mut values: Vec<_> = map.values().copied().collect();
        values.sort_unstable();
        values
    }

    #[test]
    fn one_is_held_inline_and_many_in_a_map() {
        let mut map = SmallMap::default();
        assert!(map.is_empty());
        map.insert(1, "a");
        assert!(matches!(map, SmallMap::One(1, "a")));
        map.insert(1, "a again");
        assert_eq!(sorted(&map), ["a again"], "the same id replaces");
        map.insert(2, "b");
        map.insert(3, "c");
        assert!(matches!(map, SmallMap::Many(_)));
        assert_eq!(map.len(), 3);
        assert!(map.contains(2) && !map.contains(4));
        if let Some(value) = map.get_mut(2) {
            *value = "b again";
        }
        assert_eq!(map.get_mut(4), None);
        assert_eq!(sorted(&map), ["a again", "b again", "c"]);
        let mut ids: Vec<_> = map.iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn removing_down_to_one_gives_the_map_back() {
        let mut map = SmallMap::default();
        for (id, value) in [(1, "a"), (2, "b"), (3, "c")] {
            map.insert(id, value);
        }
        assert_eq!(map.remove(4), None);
        assert_eq!(map.remove(2), Some("b"));
        assert_eq!(map.len(), 2);
        assert_eq!(map.remove(1), Some("a"));
        assert!(matches!(map, SmallMap::One(3, "c")));
        assert_eq!(map.remove(1), None);
        assert_eq!(map.remove(3), Some("c"));
        assert!(map.is_empty());
        assert_eq!(map.remove(3), None);
        assert_eq!(map.values().count(), 0);
    }
}
