//! A replicated table that remembers which rows changed since the last snapshot.
//!
//! The history tables (jobs, workflows, request ids) grow with the cluster's age.
//! A snapshot that re-encoded them all would cost what the history weighs, every
//! few thousand entries, on every member at once; instead each snapshot writes
//! only the rows changed since the one before (see `state_machine.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Rows by key, plus the keys changed since [`Table::take_changes`] last ran.
#[derive(Debug, Clone)]
pub struct Table<V> {
    rows: BTreeMap<String, V>,
    changed: BTreeSet<String>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            rows: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }
}

/// Reads see the rows; every change goes through the methods below, which note it.
impl<V> Deref for Table<V> {
    type Target = BTreeMap<String, V>;
    fn deref(&self) -> &Self::Target {
        &self.rows
    }
}

impl<V> Table<V> {
    /// Insert or replace a row.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        self.changed.insert(key.clone());
        self.rows.insert(key, value)
    }

    /// Remove a row.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let removed = self.rows.remove(key);
        if removed.is_some() {
            self.changed.insert(key.to_string());
        }
        removed
    }

    /// A row to change in place (noted as changed whether or not the caller changes it).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let row = self.rows.get_mut(key)?;
        self.changed.insert(key.to_string());
        Some(row)
    }

    /// Put back a row read from the store: not a change.
    pub fn load(&mut self, key: String, value: V) {
        self.changed.remove(&key);
        self.rows.insert(key, value);
    }

    /// Note every row as changed, so the next snapshot writes the whole table.
    pub fn mark_all_changed(&mut self) {
        self.changed = self.rows.keys().cloned().collect();
    }

    /// How many rows changed since the last [`Table::take_changes`].
    pub fn changed_count(&self) -> usize {
        self.changed.len()
    }
}

impl<V: Clone> Table<V> {
    /// The rows changed since the last call, as they are now (`None`: removed); forgets them.
    pub fn take_changes(&mut self) -> Vec<(String, Option<V>)> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|k| {
                let row = self.rows.get(&k).cloned();
                (k, row)
            })
            .collect()
    }
}

impl<V> FromIterator<(String, V)> for Table<V> {
    /// A table holding these rows, none of them noted as changed.
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        Self {
            rows: iter.into_iter().collect(),
            changed: BTreeSet::new(),
        }
    }
}

/// Two tables are equal when their rows are: what changed since a snapshot is local.
impl<V: PartialEq> PartialEq for Table<V> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
    }
}

impl<V: Eq> Eq for Table<V> {}

/// Encoded as the plain map, so the snapshot format is the same as before tables existed.
impl<V: Serialize> Serialize for Table<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.rows.serialize(s)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Table<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, V>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_what_was_inserted_changed_or_removed_since_the_last_take() {
        let mut t: Table<u32> = [("a".to_string(), 1), ("b".to_string(), 2)].into_iter().collect();
        assert_eq!(t.take_changes(), vec![], "loaded rows are not changes");
        t.insert("c".into(), 3);
        *t.get_mut("a").unwrap() = 10;
        t.remove("b");
        t.remove("never-there");
        assert_eq!(
            t.take_changes(),
            vec![("a".into(), Some(10)), ("b".into(), None), ("c".into(), Some(3))]
        );
        assert_eq!(t.take_changes(), vec![]);
        // Inserted then removed before a take: written as removed (the store may hold it).
        t.insert("d".into(), 4);
        t.remove("d");
        assert_eq!(t.take_changes(), vec![("d".into(), None)]);
        t.mark_all_changed();
        assert_eq!(t.changed_count(), 2);
    }

    #[test]
    fn a_table_encodes_as_its_map() {
        let t: Table<u32> = [("a".to_string(), 1)].into_iter().collect();
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":1}"#);
        let back: Table<u32> = serde_json::from_str(r#"{"a":1}"#).unwrap();
        assert_eq!(back, t);
    }
}
