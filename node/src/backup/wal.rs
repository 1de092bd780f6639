//! WAL positions and file names, and how archived WAL is laid out in a store. Pure
//! functions, unit-tested.
//!
//! Layout under `wal/<lineage>/`: a finished segment is `<segment>.<sha256>`; the segment
//! being written is uploaded as it grows, each new stretch as
//! `<segment>.partial.<start>-<end>.<sha256>` (byte offsets, 8 hex digits), so a second's
//! WAL costs one small object, not a re-upload of the segment; timeline history files are
//! `<tli>.history.<sha256>`. The checksum rides in the name, written with the object, so a
//! restore checks every byte it replays.

/// Bytes in a WAL segment (PostgreSQL's default, which Keel's instances use).
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// A WAL position (`X/Y` in PostgreSQL's notation) as a number.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A WAL position in PostgreSQL's notation.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The name of the segment holding `lsn` on `timeline`.
pub fn segment_name(timeline: u32, lsn: u64) -> String {
    let seg = lsn / SEGMENT_BYTES;
    let per_id = 0x1_0000_0000 / SEGMENT_BYTES;
    format!("{timeline:08X}{:08X}{:08X}", seg / per_id, seg % per_id)
}

/// The first WAL position of segment `name`, if it is a segment name.
pub fn segment_start(name: &str) -> Option<u64> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_id = 0x1_0000_0000 / SEGMENT_BYTES;
    Some((id * per_id + seg) * SEGMENT_BYTES)
}

/// The timeline of a segment or history file name.
pub fn timeline_of(name: &str) -> Option<u32> {
    u32::from_str_radix(name.get(..8)?, 16).ok()
}

/// What one archived object is, read from its key's last part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalObject {
    /// A whole segment.
    Segment {
        /// Its file name.
        name: String,
        /// Checksum.
        sha256: String,
    },
    /// A stretch `[start, end)` of a segment still being written when it was uploaded.
    Part {
        /// The segment's file name.
        name: String,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Checksum of the stretch.
        sha256: String,
    },
    /// A timeline history file.
    History {
        /// Its file name (`<tli>.history`).
        name: String,
        /// Checksum.
        sha256: String,
    },
}

fn sha_ok(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl WalObject {
    /// Read an object's file name (the key's last part); `None` for anything else.
    pub fn parse(file: &str) -> Option<Self> {
        let (stem, sha) = file.rsplit_once('.')?;
        if !sha_ok(sha) {
            return None;
        }
        let sha256 = sha.to_string();
        if let Some(name) = stem.strip_suffix(".history") {
            return (name.len() == 8 && timeline_of(name).is_some()).then(|| WalObject::History {
                name: stem.to_string(),
                sha256,
            });
        }
        if segment_start(stem).is_some() {
            return Some(WalObject::Segment {
                name: stem.to_string(),
                sha256,
            });
        }
        let (name, range) = stem.split_once(".partial.")?;
        let (a, b) = range.split_once('-')?;
        let (start, end) = (u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?);
        (segment_start(name).is_some() && a.len() == 8 && b.len() == 8 && start < end && end <= SEGMENT_BYTES).then(
            || WalObject::Part {
                name: name.to_string(),
                start,
                end,
                sha256,
            },
        )
    }

    /// Its file name in the store.
    pub fn file_name(&self) -> String {
        match self {
            WalObject::Segment { name, sha256 } | WalObject::History { name, sha256 } => format!("{name}.{sha256}"),
            WalObject::Part {
                name,
                start,
                end,
                sha256,
            } => format!("{name}.partial.{start:08x}-{end:08x}.{sha256}"),
        }
    }

    /// The segment or history file it belongs to.
    pub fn name(&self) -> &str {
        match self {
            WalObject::Segment { name, .. } | WalObject::Part { name, .. } | WalObject::History { name, .. } => name,
        }
    }
}

/// The parts that rebuild a segment from its start, in order, as far as they reach
/// without a hole (overlapping uploads after a restart of the archiver are fine).
pub fn part_chain(parts: &[WalObject]) -> Vec<WalObject> {
    let mut sorted: Vec<&WalObject> = parts.iter().filter(|p| matches!(p, WalObject::Part { .. })).collect();
    sorted.sort_by_key(|p| match p {
        WalObject::Part { start, end, .. } => (*start, std::cmp::Reverse(*end)),
        _ => unreachable!(),
    });
    let mut chain = Vec::new();
    let mut reached = 0;
    loop {
        // Of the parts starting at or before what is reached, the one reaching furthest.
        let next = sorted
            .iter()
            .filter_map(|p| match p {
                WalObject::Part { start, end, .. } if *start <= reached && *end > reached => Some((*end, *p)),
                _ => None,
            })
            .max_by_key(|(end, _)| *end);
        match next {
            Some((end, p)) => {
                chain.push((*p).clone());
                reached = end;
            }
            None => return chain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

    #[test]
    fn positions_and_segment_names_agree_with_postgres() {
        assert_eq!(parse_lsn("0/3000028"), Some(0x300_0028));
        assert_eq!(parse_lsn("1/A"), Some((1 << 32) | 0xA));
        assert_eq!(format_lsn(0x1_0300_0028), "1/3000028");
        assert_eq!(parse_lsn("nonsense"), None);
        // pg_walfile_name('0/3000028') on timeline 1.
        assert_eq!(segment_name(1, 0x300_0028), "000000010000000000000003");
        assert_eq!(segment_name(2, 0x1_0500_0000), "000000020000000100000005");
        assert_eq!(segment_start("000000020000000100000005"), Some(0x1_0500_0000));
        assert_eq!(segment_start("00000002.history"), None);
    }

    #[test]
    fn object_names_round_trip_and_foreign_files_are_ignored() {
        for o in [
            WalObject::Segment {
                name: "000000010000000000000003".into(),
                sha256: SHA.into(),
            },
            WalObject::Part {
                name: "000000010000000000000004".into(),
                start: 0x10,
                end: 0x2000,
                sha256: SHA.into(),
            },
            WalObject::History {
                name: "00000002.history".into(),
                sha256: SHA.into(),
            },
        ] {
            assert_eq!(WalObject::parse(&o.file_name()), Some(o.clone()));
        }
        let reversed = format!("000000010000000000000003.partial.00000010-00000005.{SHA}");
        for junk in ["000000010000000000000003", "x.history.abc", &reversed] {
            assert_eq!(WalObject::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn parts_chain_from_the_start_without_holes() {
        let part = |start, end| WalObject::Part {
            name: "000000010000000000000004".into(),
            start,
            end,
            sha256: SHA.into(),
        };
        let ends = |c: Vec<WalObject>| -> Vec<u64> {
            c.iter()
                .map(|p| match p {
                    WalObject::Part { end, .. } => *end,
                    _ => 0,
                })
                .collect()
        };
        assert_eq!(
            ends(part_chain(&[part(100, 200), part(0, 100), part(200, 350)])),
            [100, 200, 350]
        );
        // An archiver restarted from 0 uploaded an overlapping stretch: the furthest wins.
        assert_eq!(ends(part_chain(&[part(0, 100), part(0, 300), part(100, 200)])), [300]);
        // A hole stops the chain where the data stops being continuous.
        assert_eq!(ends(part_chain(&[part(0, 100), part(150, 200)])), [100]);
        assert!(part_chain(&[part(10, 20)]).is_empty(), "nothing from the start");
    }
}
