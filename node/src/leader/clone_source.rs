//! Which copy a clone or restore reads from (seed 002): the most recently updated copy,
//! unless another copy updated within `prefer_near_within` of it is nearer the target
//! zone — then the nearest of those. Pure and table-tested; the planner records the
//! choice and its reason, which `ops describe` shows.

use std::collections::BTreeMap;

/// One copy a database can be cloned or restored from (a zone's store, the control
/// store, later a standby).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Its name, e.g. `zone-store:a` or `control-store`.
    pub id: String,
    /// The zone it is in (`None`: outside every zone, e.g. the control store).
    pub zone: Option<String>,
    /// When it last took an update from its source (Unix ms).
    pub updated_at_ms: u64,
}

/// Configured distances between zones (symmetric; a zone is at 0 from itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneDistances(BTreeMap<(String, String), u32>);

impl ZoneDistances {
    /// Distance `d` between zones `a` and `b`.
    pub fn with(mut self, a: &str, b: &str, d: u32) -> Self {
        self.0.insert(ordered(a, b), d);
        self
    }

    /// How far `copy` is from `target` (`u32::MAX`: unknown, after every known one).
    fn from(&self, copy: Option<&str>, target: &str) -> u32 {
        match copy {
            Some(z) if z == target => 0,
            Some(z) => self.0.get(&ordered(z, target)).copied().unwrap_or(u32::MAX - 1),
            None => u32::MAX,
        }
    }
}

impl std::str::FromStr for ZoneDistances {
    type Err = String;

    /// `a:b=1,a:c=5,b:c=2` (symmetric; a zone is at 0 from itself; pairs not given come
    /// after every given one).
    fn from_str(text: &str) -> Result<Self, String> {
        let mut zones = ZoneDistances::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("zone distance {pair:?} is not ZONE:ZONE=N (e.g. a:b=1)");
            let (zs, d) = pair.split_once('=').ok_or_else(bad)?;
            let (a, b) = zs.split_once(':').ok_or_else(bad)?;
            let d: u32 = d.trim().parse().map_err(|_| bad())?;
            let (a, b) = (a.trim(), b.trim());
            if a.is_empty() || b.is_empty() || a == b || d >= u32::MAX - 1 {
                return Err(bad());
            }
            zones = zones.with(a, b, d);
        }
        Ok(zones)
    }
}

fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.into(), b.into())
    } else {
        (b.into(), a.into())
    }
}

/// The copy chosen and why, in words for `ops describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The chosen copy's id.
    pub id: String,
    /// Why it was chosen.
    pub reason: String,
}

/// Choose among `copies` for a target in `target_zone`.
pub fn choose(copies: &[Copy], target_zone: &str, prefer_near_within_ms: u64, zones: &ZoneDistances) -> Option<Choice> {
    let newest = copies.iter().map(|c| c.updated_at_ms).max()?;
    let recent: Vec<&Copy> = copies
        .iter()
        .filter(|c| newest - c.updated_at_ms <= prefer_near_within_ms)
        .collect();
    // Nearest first; among equally near, the more recent; then by id, so the choice is stable.
    let best = recent
        .iter()
        .min_by(|a, b| {
            let (da, db) = (
                zones.from(a.zone.as_deref(), target_zone),
                zones.from(b.zone.as_deref(), target_zone),
            );
            da.cmp(&db)
                .then(b.updated_at_ms.cmp(&a.updated_at_ms))
                .then(a.id.cmp(&b.id))
        })
        .expect("the newest copy is among the recent ones");
    let lag_s = (newest - best.updated_at_ms) as f64 / 1000.0;
    let reason = if recent.len() == 1 {
        format!(
            "{} is the most recently updated copy; no other was updated within {} s of it",
            best.id,
            prefer_near_within_ms / 1000
        )
    } else if best.updated_at_ms == newest && zones.from(best.zone.as_deref(), target_zone) == 0 {
        format!(
            "{} is the most recently updated copy and in the target zone {target_zone}",
            best.id
        )
    } else {
        format!(
            "{} is the nearest to zone {target_zone} of the {} copies updated within {} s of the newest ({lag_s:.0} s behind it)",
            best.id,
            recent.len(),
            prefer_near_within_ms / 1000
        )
    };
    Some(Choice {
        id: best.id.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn copy(id: &str, zone: Option<&str>, updated_min: u64) -> Copy {
        Copy {
            id: id.into(),
            zone: zone.map(str::to_string),
            updated_at_ms: updated_min * MIN,
        }
    }

    #[test]
    fn the_rule_as_a_table() {
        let zones = ZoneDistances::default()
            .with("a", "b", 1)
            .with("a", "c", 5)
            .with("b", "c", 2);
        // (copies, target zone, prefer-near-within minutes, chosen)
        let cases: Vec<(Vec<Copy>, &str, u64, Option<&str>)> = vec![
            (vec![], "a", 15, None),
            (vec![copy("store:b", Some("b"), 100)], "a", 15, Some("store:b")),
            // The newest wins when no other is within the period, however near it is.
            (
                vec![copy("store:c", Some("c"), 100), copy("store:a", Some("a"), 80)],
                "a",
                15,
                Some("store:c"),
            ),
            // Within the period: the nearer one, even if a little older.
            (
                vec![copy("store:c", Some("c"), 100), copy("store:a", Some("a"), 90)],
                "a",
                15,
                Some("store:a"),
            ),
            // Exactly at the period's edge still counts as within.
            (
                vec![copy("store:c", Some("c"), 100), copy("store:a", Some("a"), 85)],
                "a",
                15,
                Some("store:a"),
            ),
            // Nearest by the configured distances when none is in the target zone.
            (
                vec![copy("store:c", Some("c"), 100), copy("store:b", Some("b"), 99)],
                "a",
                15,
                Some("store:b"),
            ),
            // Zones with no configured distance come after every known one; outside every
            // zone (the control store) comes last.
            (
                vec![copy("control", None, 100), copy("store:z", Some("z"), 100)],
                "a",
                15,
                Some("store:z"),
            ),
            (
                vec![copy("control", None, 100), copy("store:a", Some("a"), 50)],
                "a",
                15,
                Some("control"),
            ),
            // Equally near: the more recent; equally recent: by id, so the choice is stable.
            (
                vec![copy("store:a2", Some("a"), 95), copy("store:a1", Some("a"), 99)],
                "a",
                15,
                Some("store:a1"),
            ),
            (
                vec![copy("y", Some("a"), 99), copy("x", Some("a"), 99)],
                "a",
                15,
                Some("x"),
            ),
            // A zero period: only the newest.
            (
                vec![copy("store:c", Some("c"), 100), copy("store:a", Some("a"), 99)],
                "a",
                0,
                Some("store:c"),
            ),
        ];
        for (i, (copies, target, within_min, want)) in cases.into_iter().enumerate() {
            let got = choose(&copies, target, within_min * MIN, &zones);
            assert_eq!(
                got.as_ref().map(|c| c.id.as_str()),
                want,
                "case {i}: {copies:?} → {got:?}"
            );
        }
    }

    #[test]
    fn the_reason_says_why() {
        let zones = ZoneDistances::default().with("a", "c", 5);
        let near = choose(
            &[copy("store:c", Some("c"), 100), copy("store:a", Some("a"), 90)],
            "a",
            15 * MIN,
            &zones,
        )
        .unwrap();
        assert!(
            near.reason.contains("nearest to zone a") && near.reason.contains("600 s behind"),
            "{}",
            near.reason
        );
        let newest = choose(
            &[copy("store:c", Some("c"), 100), copy("store:a", Some("a"), 10)],
            "a",
            15 * MIN,
            &zones,
        )
        .unwrap();
        assert!(newest.reason.contains("most recently updated"), "{}", newest.reason);
    }

    #[test]
    fn distances_parse_from_the_flag_and_bad_ones_are_refused() {
        let zones: ZoneDistances = "a:b=1, a:c=5,b:c=2".parse().unwrap();
        assert_eq!(
            zones,
            ZoneDistances::default()
                .with("a", "b", 1)
                .with("c", "a", 5)
                .with("b", "c", 2)
        );
        assert_eq!("".parse::<ZoneDistances>().unwrap(), ZoneDistances::default());
        for bad in ["a:b", "a=1", "a:a=1", "a:b=x", ":b=1"] {
            assert!(bad.parse::<ZoneDistances>().is_err(), "{bad}");
        }
    }
}
