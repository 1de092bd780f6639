//! Backup (daily `HH:MM-HH:MM`) and maintenance (weekly `ddd:HH:MM-ddd:HH:MM`)
//! windows, in UTC: parsing for validation, and "is it now?" for the scheduler.

/// A daily window as the OpenAPI document states it (ECMA-262 regex; start and end differ).
pub const DAILY_PATTERN: &str =
    "^(?!([0-9]{2}:[0-9]{2})-\\1$)([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$";
/// A weekly window as the OpenAPI document states it.
pub const WEEKLY_PATTERN: &str = "^(?!([a-z]{3}:[0-9]{2}:[0-9]{2})-\\1$)(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]-(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]$";

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;

/// A window as minute offsets (from Monday 00:00 for weekly windows, from 00:00 for daily ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u32,
    end: u32,
    period: u32,
}

fn hh_mm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn day_hh_mm(s: &str) -> Option<u32> {
    let (day, hm) = s.split_once(':')?;
    let d = DAYS.iter().position(|&x| x == day)? as u32;
    Some(d * MINUTES_PER_DAY + hh_mm(hm)?)
}

impl Window {
    /// Parse a weekly maintenance window such as `sun:04:00-sun:05:00`.
    pub fn weekly(w: &str) -> Result<Self, String> {
        let parsed = w
            .split_once('-')
            .and_then(|(a, b)| Some((day_hh_mm(a)?, day_hh_mm(b)?)));
        Self::checked(
            w,
            parsed,
            MINUTES_PER_WEEK,
            "ddd:HH:MM-ddd:HH:MM, e.g. sun:03:00-sun:04:00",
        )
    }

    /// Parse a daily backup window such as `02:00-03:00`.
    pub fn daily(w: &str) -> Result<Self, String> {
        let parsed = w.split_once('-').and_then(|(a, b)| Some((hh_mm(a)?, hh_mm(b)?)));
        Self::checked(w, parsed, MINUTES_PER_DAY, "HH:MM-HH:MM, e.g. 02:00-03:00")
    }

    fn checked(w: &str, parsed: Option<(u32, u32)>, period: u32, form: &str) -> Result<Self, String> {
        match parsed {
            Some((start, end)) if start != end => Ok(Self { start, end, period }),
            Some(_) => Err(format!("window {w:?} is empty: its start and end are the same")),
            None => Err(format!("window {w:?} is not valid: use {form} (UTC)")),
        }
    }

    /// Whether `unix_ms` (UTC) falls inside the window; a window may wrap past the week's or day's end.
    pub fn contains(&self, unix_ms: u64) -> bool {
        let minute = unix_ms / 60_000;
        // 1970-01-01 was a Thursday: shift so that 0 is a Monday 00:00.
        let now = ((minute + 3 * u64::from(MINUTES_PER_DAY)) % u64::from(self.period)) as u32;
        if self.start < self.end {
            self.start <= now && now < self.end
        } else {
            now >= self.start || now < self.end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    // 2026-11-22 is a Sunday.
    const SUN_0430_MS: u64 = 1_795_321_800_000;

    #[test]
    fn weekly_windows_match_the_right_minutes() {
        assert!(Window::weekly("sun:04:00-sun:05:00").unwrap().contains(SUN_0430_MS));
        assert!(!Window::weekly("sun:05:00-sun:06:00").unwrap().contains(SUN_0430_MS));
        assert!(!Window::weekly("mon:04:00-mon:05:00").unwrap().contains(SUN_0430_MS));
        // Wrapping from Sunday night into Monday.
        assert!(Window::weekly("sun:04:00-mon:01:00").unwrap().contains(SUN_0430_MS));
        assert!(Window::weekly("sat:23:00-sun:04:31").unwrap().contains(SUN_0430_MS));
    }

    #[test]
    fn daily_windows_and_bad_input() {
        assert!(Window::daily("04:00-05:00").unwrap().contains(SUN_0430_MS));
        assert!(Window::daily("23:00-04:31").unwrap().contains(SUN_0430_MS));
        assert!(!Window::daily("05:00-06:00").unwrap().contains(SUN_0430_MS));
        for bad in [
            "2:00-3:00",
            "24:00-01:00",
            "02:00",
            "sun:04:00-sun:05:00",
            "03:00-03:00",
            "+1:00-02:00",
            "01:+0-02:00",
        ] {
            assert!(Window::daily(bad).is_err(), "{bad}");
        }
        for bad in ["funday:04:00-sun:05:00", "04:00-05:00", "sun:04:00"] {
            assert!(Window::weekly(bad).is_err(), "{bad}");
        }
    }
}
