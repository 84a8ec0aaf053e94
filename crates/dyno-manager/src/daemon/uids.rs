//! The apps' unprivileged uids: one per app name, stable across runs, from a range the
//! operator may choose (`--uid-range`; every daemon on a host shares the default one).

/// Where the daemon draws the apps' unprivileged uids from by default (one per app name): far
/// above the uids of people and system services, and below the 32-bit limit.
pub const UID_BASE: u32 = 800_000;
pub const UID_SPAN: u32 = 100_000;

/// A range of uids for apps, `START-END` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub count: u32,
}

impl Default for UidRange {
    fn default() -> Self {
        UidRange {
            first: UID_BASE,
            count: UID_SPAN,
        }
    }
}

/// A `--uid-range` that is not `START-END` with `0 < START <= END < 2^32 - 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected START-END, e.g. 800000-899999 (uids above 0)")]
pub struct UidRangeError(String);

impl std::str::FromStr for UidRange {
    type Err = UidRangeError;
    fn from_str(s: &str) -> Result<UidRange, UidRangeError> {
        let bad = || UidRangeError(s.to_string());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (first, last): (u32, u32) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if first == 0 || last < first || last == u32::MAX {
            return Err(bad());
        }
        Ok(UidRange {
            first,
            count: last - first + 1,
        })
    }
}

/// One uid per app name, stable across runs.
pub fn app_uid(app: &str) -> u32 {
    app_uid_in(app, UidRange::default())
}

/// One uid per app name within `range`, stable across runs.
pub fn app_uid_in(app: &str, range: UidRange) -> u32 {
    // FNV-1a: stable, tiny, good enough to spread names over the range.
    let hash = app.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    range.first + (hash % u64::from(range.count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_and_in_range() {
        let a = app_uid("hello");
        assert_eq!(a, app_uid("hello"));
        assert!((UID_BASE..UID_BASE + UID_SPAN).contains(&a));
        assert_ne!(app_uid("hello"), app_uid("world"));
        let range: UidRange = "5000-5009".parse().unwrap();
        assert!((5000..=5009).contains(&app_uid_in("hello", range)));
        assert!("0-10".parse::<UidRange>().is_err());
        assert!("10-5".parse::<UidRange>().is_err());
        assert!("x".parse::<UidRange>().is_err());
    }
}
