//! Rocket.Chat's dates: EJSON `{"$date": ms}` on the realtime API, ISO-8601 strings on REST.

use serde_json::Value;

/// Reads a Rocket.Chat date in either form, as epoch milliseconds.
pub fn epoch_ms(value: &Value) -> Option<u64> {
    if let Some(ms) = value.get("$date").and_then(Value::as_u64) {
        return Some(ms);
    }
    parse_iso(value.as_str()?)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to epoch milliseconds.
fn parse_iso(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, d) = (
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
    );
    let (hms, millis) = match time.split_once('.') {
        Some((_, frac)) if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) => {
            return None;
        }
        Some((hms, frac)) => (hms, format!("{frac:0<3}").get(..3)?.parse::<u64>().ok()?),
        None => (time, 0),
    };
    let mut time_parts = hms.split(':').map(|p| p.parse::<u64>());
    let (hh, mm, ss) = (
        time_parts.next()?.ok()?,
        time_parts.next()?.ok()?,
        time_parts.next()?.ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + millis)
}

/// Epoch milliseconds as ISO-8601 UTC with milliseconds, as REST date parameters expect.
pub fn iso(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let millis = epoch_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn both_forms_round_trip() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_718_000_000_123, "2024-06-10T06:13:20.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(iso(ms), text);
            assert_eq!(epoch_ms(&json!(text)), Some(ms));
        }
        assert_eq!(epoch_ms(&json!({"$date": 5})), Some(5));
        assert_eq!(
            epoch_ms(&json!("2000-02-29T00:00:00Z")),
            Some(951_782_400_000)
        );
        for bad in [
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-06-10T06:13:20",
            "2024-06-10T25:00:00Z",
            "2024-06-10T06:13:20.Z",
        ] {
            assert_eq!(epoch_ms(&json!(bad)), None, "{bad}");
        }
    }
}
