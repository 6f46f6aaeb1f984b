//! Dates as Rocket.Chat writes them: `Date.prototype.toISOString()` on REST
//! (`YYYY-MM-DDTHH:MM:SS.sssZ`, UTC). Written here by counting days rather than shared with the
//! gateway's parser, so a mistake in one is caught by the other.

const DAY_MS: u64 = 86_400_000;

fn is_leap(year: u64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn month_lengths(year: u64) -> [u64; 12] {
    let feb = if is_leap(year) { 29 } else { 28 };
    [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
}

fn year_days(year: u64) -> u64 {
    if is_leap(year) { 366 } else { 365 }
}

/// Epoch milliseconds (from 1970) as `Date.prototype.toISOString()` writes them.
pub fn iso(epoch_ms: u64) -> String {
    let mut days = epoch_ms / DAY_MS;
    let in_day = epoch_ms % DAY_MS;
    let mut year = 1970;
    while days >= year_days(year) {
        days -= year_days(year);
        year += 1;
    }
    let mut month = 0;
    for len in month_lengths(year) {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    let secs = in_day / 1000;
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        month + 1,
        days + 1,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1000
    )
}

/// Reads an ISO-8601 UTC date (`YYYY-MM-DDTHH:MM:SS[.fff]Z`, from 1970 on) as epoch milliseconds,
/// as the `Match` checks of Rocket.Chat's REST routes accept it. `None` for anything else.
pub fn parse_iso(text: &str) -> Option<u64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let numbers = |part: &str, sep: char| -> Option<Vec<u64>> {
        part.split(sep).map(|n| n.parse().ok()).collect()
    };
    let [year, month, day] = numbers(date, '-')?[..] else {
        return None;
    };
    let (clock, millis) = match time.split_once('.') {
        None => (time, 0),
        Some((clock, frac)) => {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // JavaScript's Date keeps milliseconds and drops finer digits.
            let millis: String = frac.chars().chain("00".chars()).take(3).collect();
            (clock, millis.parse::<u64>().ok()?)
        }
    };
    let [hour, minute, second] = numbers(clock, ':')?[..] else {
        return None;
    };
    let lengths = month_lengths(year);
    if year < 1970 || !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let month_index = usize::try_from(month - 1).ok()?;
    if day == 0 || day > lengths[month_index] {
        return None;
    }
    let days: u64 = (1970..year).map(year_days).sum::<u64>()
        + lengths[..month_index].iter().sum::<u64>()
        + (day - 1);
    Some(days * DAY_MS + ((hour * 60 + minute) * 60 + second) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_round_trip() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_718_000_000_123, "2024-06-10T06:13:20.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
        ] {
            assert_eq!(iso(ms), text);
            assert_eq!(parse_iso(text), Some(ms), "{text}");
        }
        assert_eq!(parse_iso("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_iso("2024-06-10T06:13:20.1Z"), Some(1_718_000_000_100));
        assert_eq!(
            parse_iso("2024-06-10T06:13:20.1239Z"),
            Some(1_718_000_000_123)
        );
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-06-10T06:13:20",
            "2024-06-10T25:00:00Z",
            "2024-06-10T06:13:20.Z",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }
}
