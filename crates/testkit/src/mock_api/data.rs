//! The deterministic data set: realistic nested order records, 300–600 bytes each.

use super::config::{Drift, DriftChange};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// 2024-01-01T00:00:00Z.
const BASE_EPOCH: i64 = 1_704_067_200;

/// The records, kept serialized: a page is a join of slices, which keeps the mock fast
/// enough to benchmark a client against.
pub(crate) struct DataSet {
    seed: u64,
    drift: Option<Drift>,
    malformed: Vec<u64>,
    /// Records served with another `updated_at` text.
    overrides: BTreeMap<u64, String>,
    /// `updated_at` of each record as Unix seconds, index `id - 1`.
    updated: Vec<i64>,
    /// Each record's JSON text, index `id - 1`.
    json: Vec<String>,
    /// The `updated_at` given by the latest touch.
    touch_clock: i64,
    /// The last `since` selection: a client pages through one selection, page after page,
    /// so each page costs its own records, not a scan of the whole set (which made a
    /// 10,000,000-record run spend its time here). Cleared when the records change.
    selected: Mutex<Option<(i64, Arc<Vec<usize>>)>>,
}

/// The records a request pages through, in id order.
pub(crate) enum Selection {
    /// Every record (no `since`): nothing to list.
    All(usize),
    /// The indexes of the records changed after a time.
    Some(Arc<Vec<usize>>),
}

impl Selection {
    /// How many records.
    pub(crate) fn len(&self) -> usize {
        match self {
            Selection::All(n) => *n,
            Selection::Some(v) => v.len(),
        }
    }

    /// The indexes of the records `start..end` of the selection.
    pub(crate) fn range(&self, start: usize, end: usize) -> Vec<usize> {
        match self {
            Selection::All(_) => (start..end).collect(),
            Selection::Some(v) => v[start..end].to_vec(),
        }
    }
}

impl DataSet {
    pub(crate) fn new(
        records: u64,
        seed: u64,
        drift: Option<Drift>,
        malformed: Vec<u64>,
        overrides: BTreeMap<u64, String>,
    ) -> Self {
        let mut set = DataSet {
            seed,
            drift,
            malformed,
            overrides,
            updated: Vec::with_capacity(records as usize),
            json: Vec::with_capacity(records as usize),
            touch_clock: BASE_EPOCH + (records as i64 + 2) * 60,
            selected: Mutex::new(None),
        };
        for id in 1..=records {
            let mut rng = SplitMix(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut updated = BASE_EPOCH + id as i64 * 60 + (rng.next() % 60) as i64;
            if let Some(at) = set.overrides.get(&id)
                && let Ok(t) = chrono::DateTime::parse_from_rfc3339(at)
            {
                updated = t.timestamp();
            }
            set.updated.push(updated);
            let text = set.render(id, updated);
            set.json.push(text);
        }
        set
    }

    pub(crate) fn len(&self) -> usize {
        self.json.len()
    }

    /// The ids (0-based indexes) of records changed after `since` (Unix seconds), in id
    /// order; all of them without `since`.
    pub(crate) fn select(&self, since: Option<i64>) -> Selection {
        let Some(since) = since else {
            return Selection::All(self.json.len());
        };
        let mut cached = self.selected.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, v)) = cached.as_ref()
            && *at == since
        {
            return Selection::Some(v.clone());
        }
        let v: Arc<Vec<usize>> = Arc::new(
            (0..self.json.len())
                .filter(|&i| self.updated[i] > since)
                .collect(),
        );
        *cached = Some((since, v.clone()));
        Selection::Some(v)
    }

    /// The JSON text of the record at `index`.
    pub(crate) fn json(&self, index: usize) -> &str {
        &self.json[index]
    }

    /// The record with this id, parsed.
    pub(crate) fn record(&self, id: u64) -> Option<Value> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        serde_json::from_str(self.json.get(index)?).ok()
    }

    /// Serves the malformed records well from now on (same `updated_at`, so an
    /// incremental read does not see them as changed).
    pub(crate) fn repair(&mut self) {
        *self.selected.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        for id in std::mem::take(&mut self.malformed) {
            let index = (id as usize).wrapping_sub(1);
            if index < self.json.len() {
                self.json[index] = self.render(id, self.updated[index]);
            }
        }
    }

    /// Gives the records a new `updated_at`, later than any before.
    pub(crate) fn touch(&mut self, ids: &[u64]) {
        *self.selected.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        self.touch_clock += 60;
        for &id in ids {
            let Some(index) = id.checked_sub(1).map(|i| i as usize) else {
                continue;
            };
            if index < self.json.len() {
                self.overrides.remove(&id);
                self.updated[index] = self.touch_clock;
                self.json[index] = self.render(id, self.touch_clock);
            }
        }
    }

    fn render(&self, id: u64, updated: i64) -> String {
        if self.malformed.contains(&id) {
            return format!("\"<<corrupted record {id}>>\"");
        }
        let mut value = record(self.seed, id, updated);
        if let (Some(drift), Value::Object(map)) = (&self.drift, &mut value)
            && id >= drift.from_id
        {
            apply_drift(map, drift.change, id);
        }
        if let (Some(at), Value::Object(map)) = (self.overrides.get(&id), &mut value) {
            map.insert("updated_at".to_owned(), Value::String(at.clone()));
        }
        value.to_string()
    }
}

/// An RFC 3339 UTC timestamp of Unix seconds.
pub(crate) fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn apply_drift(map: &mut Map<String, Value>, change: DriftChange, id: u64) {
    match change {
        DriftChange::Rename => {
            if let Some(status) = map.remove("status") {
                map.insert("state".to_owned(), status);
            }
        }
        DriftChange::Add => {
            map.insert("priority".to_owned(), json!(id % 5));
        }
        DriftChange::Retype => {
            if let Some(amount) = map.get("amount").and_then(Value::as_f64) {
                map.insert("amount".to_owned(), json!(format!("{amount:.2}")));
            }
        }
    }
}

const FIRST: &[&str] = &[
    "Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Dennis", "Frances", "Ken", "Hedy",
    "Edsger", "Radia", "Tim", "Sophie", "Niklaus", "Karen",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Turing",
    "Liskov",
    "Ritchie",
    "Allen",
    "Thompson",
    "Lamarr",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Wilson",
    "Wirth",
    "Jones",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Lyon", "FR", "69002"),
    ("Berlin", "DE", "10115"),
    ("Madrid", "ES", "28001"),
    ("Milano", "IT", "20121"),
    ("Rotterdam", "NL", "3011"),
    ("Kraków", "PL", "31-001"),
    ("Porto", "PT", "4000-001"),
    ("Göteborg", "SE", "411 01"),
];
const STREETS: &[&str] = &[
    "Rue de la République",
    "Unter den Linden",
    "Calle Mayor",
    "Via Torino",
    "Coolsingel",
    "Floriańska",
    "Rua de Santa Catarina",
    "Kungsportsavenyen",
];
const STATUSES: &[&str] = &[
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];
const PRODUCTS: &[&str] = &[
    "Espresso beans 1kg",
    "Ceramic mug",
    "Pour-over kettle",
    "Burr grinder",
    "Paper filters (100)",
    "Milk frother",
    "Travel tumbler",
    "Descaling tablets",
];
const TAGS: &[&str] = &[
    "gift",
    "priority",
    "wholesale",
    "repeat",
    "promo",
    "fragile",
];
const CURRENCIES: &[&str] = &["EUR", "EUR", "EUR", "USD", "GBP", "PLN", "SEK"];

fn pick<'a>(rng: &mut SplitMix, list: &[&'a str]) -> &'a str {
    list[(rng.next() % list.len() as u64) as usize]
}

/// One order record. Deterministic in `(seed, id, updated)`.
fn record(seed: u64, id: u64, updated: i64) -> Value {
    let mut rng = SplitMix(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5);
    let first = pick(&mut rng, FIRST);
    let last = pick(&mut rng, LAST);
    let (city, country, postcode) = CITIES[(rng.next() % CITIES.len() as u64) as usize];
    let street = STREETS[(rng.next() % STREETS.len() as u64) as usize];
    let n_items = 1 + rng.next() % 3;
    let mut total = 0.0;
    let items: Vec<Value> = (0..n_items)
        .map(|_| {
            let qty = 1 + rng.next() % 4;
            let price = (200 + rng.next() % 9800) as f64 / 100.0;
            total += qty as f64 * price;
            json!({
                "sku": format!("SKU-{:05}", rng.next() % 100_000),
                "name": pick(&mut rng, PRODUCTS),
                "qty": qty,
                "price": price,
            })
        })
        .collect();
    let n_tags = rng.next() % 3;
    let tags: Vec<&str> = (0..n_tags).map(|_| pick(&mut rng, TAGS)).collect();
    let notes = match rng.next() % 3 {
        0 => Value::Null,
        1 => json!("leave at the door"),
        _ => json!("call before delivery"),
    };
    json!({
        "id": id,
        "updated_at": rfc3339(updated),
        "created_at": rfc3339(BASE_EPOCH + id as i64 * 30),
        "status": pick(&mut rng, STATUSES),
        "amount": (total * 100.0).round() / 100.0,
        "currency": pick(&mut rng, CURRENCIES),
        "customer": {
            "id": 10_000 + rng.next() % 90_000,
            "name": format!("{first} {last}"),
            "email": format!("{}.{}@example.com", first.to_lowercase(), last.to_lowercase()),
            "address": {
                "street": format!("{} {}", 1 + rng.next() % 120, street),
                "city": city,
                "country": country,
                "postcode": postcode,
            },
        },
        "items": items,
        "tags": tags,
        "notes": notes,
    })
}

/// A tiny deterministic generator (SplitMix64): no dependency, same numbers everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_nested_and_sized_like_real_ones() {
        let a = DataSet::new(200, 7, None, vec![], BTreeMap::new());
        let b = DataSet::new(200, 7, None, vec![], BTreeMap::new());
        for i in 0..200 {
            assert_eq!(a.json(i), b.json(i));
            let len = a.json(i).len();
            assert!(
                (300..=600).contains(&len),
                "record {} is {len} bytes",
                i + 1
            );
        }
        let r = a.record(5).unwrap();
        assert_eq!(r["id"], 5);
        assert!(r["customer"]["address"]["city"].is_string());
        assert!(r["items"].as_array().is_some_and(|i| !i.is_empty()));
    }

    #[test]
    fn touch_moves_updated_at_past_every_other_record() {
        let mut set = DataSet::new(50, 1, None, vec![], BTreeMap::new());
        let max = *set.updated.iter().max().unwrap();
        // A selection is kept for the pages after the first, and renewed by a touch.
        assert_eq!(set.select(Some(max)).len(), 0);
        set.touch(&[3, 9]);
        let touched = set.select(Some(max));
        assert_eq!(touched.range(0, touched.len()), vec![2, 8]);
        assert_eq!(set.select(None).range(48, 50), vec![48, 49]);
    }

    #[test]
    fn drift_and_malformed_records_apply_from_their_ids() {
        let drift = Drift {
            from_id: 3,
            change: DriftChange::Rename,
        };
        let set = DataSet::new(5, 1, Some(drift), vec![5], BTreeMap::new());
        assert!(set.record(2).unwrap().get("status").is_some());
        assert!(set.record(3).unwrap().get("state").is_some());
        assert!(set.record(5).unwrap().is_string());
    }
}
