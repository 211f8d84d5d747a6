//! Cron schedules exactly as crontab(5) writes them: five fields (minute, hour, day of month,
//! month, day of week) with numbers, `*`, ranges, lists, steps and month and weekday names, or
//! one of the macros `@yearly @annually @monthly @weekly @daily @midnight @hourly`. Evaluated
//! in UTC.
//!
//! `croner` evaluates the schedule. It also accepts extensions that crontab does not (`L`, `W`,
//! `#`, `?`, seconds and year fields), so every field is checked against crontab's grammar
//! first, which also gives users a precise reason. Where croner's meaning differs from cron's
//! (when the two day fields are ANDed), cron's is used.

use std::fmt;

use jiff::Timestamp;

/// A parsed, valid cron schedule.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    expression: String,
    cron: croner::Cron,
}

/// Why an expression is not a valid schedule; `Display` gives the sentence users see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronError {
    expression: String,
    reason: String,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid cron expression {:?}: {}",
            self.expression, self.reason
        )
    }
}

impl std::error::Error for CronError {}

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    first_name_value: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        first_name_value: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        first_name_value: 0,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        first_name_value: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        first_name_value: 1,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        first_name_value: 0,
    },
];

/// Parses a schedule. Surrounding whitespace is ignored, as in the seed's `' 0 1 * * *'`.
pub fn parse(expression: &str) -> Result<CronSchedule, CronError> {
    let trimmed = expression.trim();
    let fail = |reason: String| CronError {
        expression: expression.to_string(),
        reason,
    };
    let five_fields = if trimmed.starts_with('@') {
        let lower = trimmed.to_ascii_lowercase();
        match MACROS.iter().find(|(name, _)| *name == lower) {
            Some((_, fields)) => fields.to_string(),
            None => {
                let known: Vec<&str> = MACROS.iter().map(|(name, _)| *name).collect();
                return Err(fail(format!(
                    "unknown macro {trimmed:?} (expected one of {})",
                    known.join(" ")
                )));
            }
        }
    } else {
        let parts: Vec<&str> = trimmed.split_whitespace().collect();
        if parts.len() != FIELDS.len() {
            return Err(fail(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                parts.len()
            )));
        }
        let mut numeric = Vec::with_capacity(parts.len());
        for (part, field) in parts.iter().zip(FIELDS.iter()) {
            numeric.push(check_field(part, field).map_err(&fail)?);
        }
        numeric.join(" ")
    };
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .dom_and_dow(days_are_anded(&five_fields))
        .build()
        .parse(&five_fields)
        .map_err(|error| fail(error.to_string()))?;
    Ok(CronSchedule {
        expression: trimmed.to_string(),
        cron,
    })
}

/// Whether a day must match both day of month and day of week. crontab(5) ORs the two only
/// when both are restricted, and Vixie cron and cronie call a field unrestricted when it starts
/// with `*`, so `*/2` counts as unrestricted. croner calls only a literal `*` unrestricted and
/// would OR `*/2 * MON`; its AND mode gives cron's answer whenever either field starts with `*`
/// (a literal `*` matches every day, so ANDing with it changes nothing).
fn days_are_anded(five_fields: &str) -> bool {
    let mut fields = five_fields.split_whitespace().skip(2);
    let day_of_month = fields.next().unwrap_or_default();
    let day_of_week = fields.nth(1).unwrap_or_default();
    day_of_month.starts_with('*') || day_of_week.starts_with('*')
}

/// Checks one field against crontab's grammar and returns it with names replaced by numbers.
fn check_field(part: &str, field: &Field) -> Result<String, String> {
    let mut items = Vec::new();
    for item in part.split(',') {
        if item.is_empty() {
            return Err(format!("{}: empty list item in {part:?}", field.name));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let range = if range == "*" {
            "*".to_string()
        } else if let Some((low, high)) = range.split_once('-') {
            let low_value = value(low, field)?;
            let high_value = value(high, field)?;
            if low_value > high_value {
                return Err(format!("{}: range {range:?} runs backwards", field.name));
            }
            format!("{low_value}-{high_value}")
        } else {
            if step.is_some() {
                return Err(format!(
                    "{}: a step needs a range or `*` before it, as in \"*/{}\" or \"{range}-{}/{}\"",
                    field.name,
                    step.unwrap_or_default(),
                    field.max,
                    step.unwrap_or_default()
                ));
            }
            value(range, field)?.to_string()
        };
        let item = match step {
            Some(step) => {
                let step_value: u32 = step.parse().map_err(|_| {
                    format!("{}: step {step:?} is not a positive number", field.name)
                })?;
                if step_value == 0 || step_value > field.max {
                    return Err(format!(
                        "{}: step {step_value} is out of range 1-{}",
                        field.name, field.max
                    ));
                }
                format!("{range}/{step_value}")
            }
            None => range,
        };
        items.push(item);
    }
    Ok(items.join(","))
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    if let Some(index) = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(index as u32 + field.first_name_value);
    }
    let number: u32 = text.parse().map_err(|_| {
        if field.names.is_empty() {
            format!("{}: {text:?} is not a number", field.name)
        } else {
            format!(
                "{}: {text:?} is neither a number nor a name ({})",
                field.name,
                field.names.join(" ")
            )
        }
    })?;
    if number < field.min || number > field.max {
        return Err(format!(
            "{}: {number} is out of range {}-{}",
            field.name, field.min, field.max
        ));
    }
    Ok(number)
}

impl CronSchedule {
    /// The expression as written, without surrounding whitespace.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = to_chrono(after)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Timestamp::from_second(next.timestamp()).ok()
    }

    /// The last tick at or before `at`, if there is one within the last year and a day.
    pub fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let start = to_chrono(at)?;
        let previous = self.cron.find_previous_occurrence(&start, true).ok()?;
        let previous = Timestamp::from_second(previous.timestamp()).ok()?;
        let horizon = jiff::SignedDuration::from_hours(24 * 367);
        (at.duration_since(previous) <= horizon).then_some(previous)
    }
}

fn to_chrono(at: Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(at.as_second(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    fn next(expression: &str, after: &str) -> String {
        parse(expression)
            .expect("valid")
            .next_after(at(after))
            .expect("has a next tick")
            .to_string()
    }

    #[test]
    fn seed_schedule_with_leading_space_runs_daily_at_one() {
        assert_eq!(
            next(" 0 1 * * *", "2026-11-26T00:17:00Z"),
            "2026-11-26T01:00:00Z"
        );
        assert_eq!(
            next(" 0 1 * * *", "2026-11-26T01:00:00Z"),
            "2026-11-27T01:00:00Z"
        );
    }

    #[test]
    fn steps_ranges_lists_and_names_follow_crontab() {
        assert_eq!(
            next("*/15 * * * *", "2026-11-26T00:17:00Z"),
            "2026-11-26T00:30:00Z"
        );
        assert_eq!(
            next("1-30/5 * * * *", "2026-11-26T00:17:00Z"),
            "2026-11-26T00:21:00Z"
        );
        assert_eq!(
            next("0 4 * * mon-fri", "2026-11-27T05:00:00Z"),
            "2026-11-30T04:00:00Z"
        );
        assert_eq!(
            next("0 0 1 JAN,jul *", "2026-11-26T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("0 12 * * 7", "2026-11-26T00:00:00Z"),
            "2026-11-29T12:00:00Z"
        );
        assert_eq!(
            next("0 12 * * 0", "2026-11-26T00:00:00Z"),
            "2026-11-29T12:00:00Z"
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_match_either_as_in_vixie_cron() {
        // The 13th (a Sunday in December 2026) or any Friday, whichever comes first.
        assert_eq!(
            next("0 0 13 * FRI", "2026-11-26T00:00:00Z"),
            "2026-11-27T00:00:00Z"
        );
    }

    // crontab(5): "If both fields are restricted (i.e., do not start with *), the command will
    // be run when either field matches the current time." Vixie cron and cronie implement
    // "restricted" as "the field's first character is not `*`", so `*/2` is unrestricted and
    // the two day fields are ANDed. Calendar used below: 2026-11-26 is a Thursday; the Mondays
    // that follow are Nov 30, Dec 7, 14, 21 and 28.

    #[test]
    fn day_of_month_step_from_star_and_weekday_must_both_match() {
        // `*/2` over 1-31 is the odd days. Nov 30 is a Monday but even; Dec 7 is the first
        // Monday on an odd day, and Dec 21 the next (Dec 14 is even). Nov 27, an odd Friday,
        // must not fire: that would be the OR of the two fields.
        assert_eq!(
            next("0 0 */2 * MON", "2026-11-26T00:00:00Z"),
            "2026-12-07T00:00:00Z"
        );
        assert_eq!(
            next("0 0 */2 * MON", "2026-12-07T00:00:00Z"),
            "2026-12-21T00:00:00Z"
        );
        let schedule = parse("0 0 */2 * MON").expect("valid");
        assert_eq!(
            schedule
                .latest_at_or_before(at("2026-12-20T00:00:00Z"))
                .map(|t| t.to_string()),
            Some("2026-12-07T00:00:00Z".into())
        );
    }

    #[test]
    fn weekday_step_from_star_and_day_of_month_must_both_match() {
        // `*/2` over 0-7 is Sun, Tue, Thu and Sat. The 1st of December 2026 is a Tuesday, so
        // it fires then; Sat Nov 28 must not (it is not the 1st).
        assert_eq!(
            next("0 0 1 * */2", "2026-11-26T00:00:00Z"),
            "2026-12-01T00:00:00Z"
        );
        // Jan 1 2027 is a Friday, Feb 1 a Monday, Mar 1 a Monday, Apr 1 a Thursday.
        assert_eq!(
            next("0 0 1 * */2", "2026-12-01T00:00:00Z"),
            "2027-04-01T00:00:00Z"
        );
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 1st, the 15th and every Monday: Mon Nov 30, Tue Dec 1, Mon Dec 7, Mon Dec 14,
        // Tue Dec 15, in that order.
        let mut after = "2026-11-26T00:00:00Z".to_string();
        let mut ticks = Vec::new();
        for _ in 0..5 {
            after = next("0 0 1,15 * MON", &after);
            ticks.push(after.clone());
        }
        assert_eq!(
            ticks,
            [
                "2026-11-30T00:00:00Z",
                "2026-12-01T00:00:00Z",
                "2026-12-07T00:00:00Z",
                "2026-12-14T00:00:00Z",
                "2026-12-15T00:00:00Z",
            ]
        );
    }

    #[test]
    fn macros_expand_and_are_case_insensitive() {
        assert_eq!(
            next("@hourly", "2026-11-26T00:17:00Z"),
            "2026-11-26T01:00:00Z"
        );
        assert_eq!(
            next("@WEEKLY", "2026-11-26T00:17:00Z"),
            "2026-11-29T00:00:00Z"
        );
        assert_eq!(
            next("@annually", "2026-11-26T00:17:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@midnight", "2026-11-26T00:17:00Z"),
            "2026-11-27T00:00:00Z"
        );
    }

    #[test]
    fn latest_tick_at_or_before_includes_the_exact_tick() {
        let schedule = parse("0 1 * * *").expect("valid");
        assert_eq!(
            schedule
                .latest_at_or_before(at("2026-11-26T01:00:00Z"))
                .map(|t| t.to_string()),
            Some("2026-11-26T01:00:00Z".into())
        );
        assert_eq!(
            schedule
                .latest_at_or_before(at("2026-11-26T00:59:59Z"))
                .map(|t| t.to_string()),
            Some("2026-11-25T01:00:00Z".into())
        );
    }

    fn reason(expression: &str) -> String {
        parse(expression).expect_err("invalid").to_string()
    }

    #[test]
    fn six_field_cron_is_refused_with_the_count() {
        assert_eq!(
            reason("0 0 1 * * *"),
            "invalid cron expression \"0 0 1 * * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 6"
        );
    }

    #[test]
    fn four_fields_are_refused() {
        assert!(reason("0 1 * *").ends_with("found 4"));
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        assert!(reason("61 * * * *").ends_with("minute: 61 is out of range 0-59"));
        assert!(reason("0 24 * * *").ends_with("hour: 24 is out of range 0-23"));
        assert!(reason("0 0 0 * *").ends_with("day of month: 0 is out of range 1-31"));
        assert!(reason("0 0 * 13 *").ends_with("month: 13 is out of range 1-12"));
        assert!(reason("0 0 * * 8").ends_with("day of week: 8 is out of range 0-7"));
    }

    #[test]
    fn extensions_beyond_crontab_are_refused() {
        for expression in [
            "0 0 L * *",
            "0 0 * * 5#2",
            "0 0 ? * *",
            "0 0 15W * *",
            "@reboot",
        ] {
            assert!(parse(expression).is_err(), "{expression} must be refused");
        }
    }

    #[test]
    fn names_in_the_wrong_field_and_bad_steps_are_refused() {
        assert!(reason("0 0 * MON *").contains("month: \"MON\" is neither a number nor a name"));
        assert!(reason("*/0 * * * *").ends_with("minute: step 0 is out of range 1-59"));
        assert!(reason("5/15 * * * *").contains("a step needs a range or `*`"));
        assert!(reason("30-10 * * * *").ends_with("range \"30-10\" runs backwards"));
        assert!(reason("1,,2 * * * *").contains("empty list item"));
        assert!(reason("").contains("expected 5 fields"));
    }
}
