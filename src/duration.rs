//! Durations as users write them in specs and on the command line: a whole number with one
//! unit, `90s`, `30m`, `36h` or `7d`.

use std::time::Duration;

/// Parses `<number><unit>` with unit `s`, `m`, `h` or `d`; a plain number is seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let count: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 30m, 36h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(count.saturating_mul(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_a_plain_number_are_read() {
        assert_eq!(parse("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse(" 36h "), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn other_units_signs_and_fractions_are_refused_with_the_text() {
        for bad in ["", "h", "1.5h", "-1h", "1w", "2 days", "1h30m"] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains(&format!("{:?}", bad.trim())), "{error}");
        }
    }
}
