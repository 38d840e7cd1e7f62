//! Writes a `key -> evidence` map as a JSON array of flat objects (`{"path": ..., "access":
//! ..., "first_seen": ..., ...}`), which reads better than objects keyed by composite keys.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Evidence;

#[derive(Serialize)]
struct EntryRef<'a, K> {
    #[serde(flatten)]
    key: &'a K,
    #[serde(flatten)]
    evidence: &'a Evidence,
}

#[derive(Deserialize)]
#[serde(bound = "K: DeserializeOwned")]
struct Entry<K> {
    #[serde(flatten)]
    key: K,
    #[serde(flatten)]
    evidence: Evidence,
}

pub fn serialize<K: Serialize, S: Serializer>(
    map: &BTreeMap<K, Evidence>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(map.iter().map(|(key, evidence)| EntryRef { key, evidence }))
}

pub fn deserialize<'de, K, D>(deserializer: D) -> Result<BTreeMap<K, Evidence>, D::Error>
where
    K: DeserializeOwned + Ord,
    D: Deserializer<'de>,
{
    let entries = Vec::<Entry<K>>::deserialize(deserializer)?;
    let mut map = BTreeMap::new();
    for entry in entries {
        match map.get_mut(&entry.key) {
            Some(existing) => Evidence::merge(existing, &entry.evidence),
            None => {
                map.insert(entry.key, entry.evidence);
            }
        }
    }
    Ok(map)
}
