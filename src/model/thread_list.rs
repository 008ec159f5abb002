//! The threads of a process sample, shared between samples while nothing changes.
//!
//! At seed scale a process that does not move is carried from its last full read
//! sample after sample; its thread list is the same every time, so the sampler's kept
//! copy, the timeline's latest and previous samples share one list. Writing to it
//! (`DerefMut`, `&mut` iteration) copies it first when it is shared.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ThreadSample;

/// A process's threads: reads as a `Vec<ThreadSample>`, clones in O(1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadList(Arc<Vec<ThreadSample>>);

impl ThreadList {
    /// Whether `self` and `other` are one shared list (not merely equal).
    pub fn shares(&self, other: &ThreadList) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for ThreadList {
    type Target = Vec<ThreadSample>;

    fn deref(&self) -> &Vec<ThreadSample> {
        &self.0
    }
}

impl DerefMut for ThreadList {
    /// Copies the list first when another sample shares it.
    fn deref_mut(&mut self) -> &mut Vec<ThreadSample> {
        Arc::make_mut(&mut self.0)
    }
}

impl From<Vec<ThreadSample>> for ThreadList {
    fn from(threads: Vec<ThreadSample>) -> Self {
        ThreadList(Arc::new(threads))
    }
}

impl FromIterator<ThreadSample> for ThreadList {
    fn from_iter<I: IntoIterator<Item = ThreadSample>>(iter: I) -> Self {
        ThreadList(Arc::new(iter.into_iter().collect()))
    }
}

impl<'a> IntoIterator for &'a ThreadList {
    type Item = &'a ThreadSample;
    type IntoIter = std::slice::Iter<'a, ThreadSample>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut ThreadList {
    type Item = &'a mut ThreadSample;
    type IntoIter = std::slice::IterMut<'a, ThreadSample>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::make_mut(&mut self.0).iter_mut()
    }
}

impl Serialize for ThreadList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.as_slice().serialize(serializer)
    }
}

impl schemars::JsonSchema for ThreadList {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ThreadList".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Vec::<ThreadSample>::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for ThreadList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<ThreadSample>::deserialize(deserializer).map(ThreadList::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(tid: i32) -> ThreadSample {
        ThreadSample {
            tid,
            state: 'S',
            ..ThreadSample::default()
        }
    }

    #[test]
    fn clones_share_until_one_is_written() {
        let list: ThreadList = vec![thread(1), thread(2)].into();
        let mut copy = list.clone();
        assert!(copy.shares(&list));
        copy[0].state = 'R';
        assert!(!copy.shares(&list));
        assert_eq!(list[0].state, 'S');
        assert_eq!(copy[0].state, 'R');
        for t in &mut copy {
            t.tid += 10;
        }
        assert_eq!(list.iter().map(|t| t.tid).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(copy.iter().map(|t| t.tid).collect::<Vec<_>>(), [11, 12]);
    }

    #[test]
    fn serialises_as_a_plain_list() {
        let list: ThreadList = vec![thread(3)].into();
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, serde_json::to_string(&vec![thread(3)]).unwrap());
        let back: ThreadList = serde_json::from_str(&json).unwrap();
        assert_eq!(back, list);
    }
}
