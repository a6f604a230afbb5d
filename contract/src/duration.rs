//! The one duration type both binaries read: the CRD's fields, the sidecar's flags and the
//! controller's flags all go through [`Duration::parse`], and the CRD's schema is [`PATTERN`] and
//! [`MAX_LENGTH`] with one CEL rule (`duration(self)`, Go's `time.ParseDuration`, which refuses
//! what overflows). A value the apiserver admits is a value both binaries parse, and the reverse.
//!
//! The grammar is Go's, without a sign and with at least one unit: one or more `<number><unit>`,
//! where a number is digits with an optional fraction (`1`, `1.5`, never `.5` or `1.`) and a unit
//! is `ns`, `us`, `µs`, `ms`, `s`, `m` or `h`. `1h30m`, `1s500ms` and `500us` are durations; `0`,
//! `5`, `-1s`, `5d` and `1 s` are not. Like Go, the total must fit in an `i64` of nanoseconds
//! (about 292 years).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema pattern of a duration (RE2 and Rust `regex` syntax alike).
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// The longest duration text the schema admits (it bounds the CEL rule's cost, too).
pub const MAX_LENGTH: usize = 32;

/// The CEL rule the schema adds: Go's parser refuses a total that overflows, so the apiserver
/// does too.
pub const CEL_RULE: &str = "duration(self) >= duration('0s')";

const UNITS: [(&str, u128); 7] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration (e.g. 500ms, 30s, 5m, 1h30m; units ns, us, ms, s, m, h)")]
    Syntax(String),
    #[error("`{0}` is longer than {MAX_LENGTH} characters")]
    TooLong(String),
    #[error("`{0}` is too long a time (the most is about 292 years)")]
    Overflow(String),
}

/// A duration as written (`1h30m`), with its value. Serialises back to the text it was read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

impl Duration {
    /// Parses the text; see the module documentation for the grammar.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        if text.len() > MAX_LENGTH {
            return Err(DurationError::TooLong(text.into()));
        }
        let syntax = || DurationError::Syntax(text.into());
        let mut rest = text;
        let mut total: u128 = 0;
        if rest.is_empty() {
            return Err(syntax());
        }
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            if int_len == 0 {
                return Err(syntax());
            }
            let (int, after) = rest.split_at(int_len);
            let (frac, after) = match after.strip_prefix('.') {
                Some(f) => {
                    let n = f.bytes().take_while(u8::is_ascii_digit).count();
                    if n == 0 {
                        return Err(syntax());
                    }
                    f.split_at(n)
                }
                None => ("", after),
            };
            // The longest unit that matches: `ms` before `m`.
            let (unit, scale) =
                UNITS.iter().filter(|(u, _)| after.starts_with(u)).max_by_key(|(u, _)| u.len()).ok_or_else(syntax)?;
            rest = &after[unit.len()..];
            let overflow = || DurationError::Overflow(text.into());
            let whole: u128 = int.parse::<u128>().map_err(|_| overflow())?;
            let mut nanos = whole.checked_mul(*scale).ok_or_else(overflow)?;
            if !frac.is_empty() {
                // Digits beyond the nanosecond add nothing (Go truncates them too).
                let digits = &frac[..frac.len().min(24)];
                let f: u128 = digits.parse().map_err(|_| syntax())?;
                nanos += f * scale / 10u128.pow(digits.len() as u32);
            }
            total = total.checked_add(nanos).ok_or_else(overflow)?;
            if total > i64::MAX as u128 {
                return Err(overflow());
            }
        }
        let value = std::time::Duration::from_nanos(total as u64);
        Ok(Self { text: text.into(), value })
    }

    /// The value.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The text it was written as.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_zero(&self) -> bool {
        self.value.is_zero()
    }
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.value
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "maxLength": MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": CEL_RULE,
                "message": "must be a duration such as 500ms, 30s, 5m or 1h30m, at most about 292 years",
                "reason": "FieldValueInvalid"
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_durations() {
        let ms = |t: &str| Duration::parse(t).map(|d| d.get().as_nanos());
        assert_eq!(ms("500us"), Ok(500_000));
        assert_eq!(ms("500µs"), Ok(500_000));
        assert_eq!(ms("1s500ms"), Ok(1_500_000_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(ms("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(ms("0s"), Ok(0));
        assert_eq!(ms("10ns"), Ok(10));
        assert_eq!(ms("2562047h47m16.854775807s"), Ok(i64::MAX as u128));
        assert!(matches!(Duration::parse("2562047h47m16.854775808s"), Err(DurationError::Overflow(_))));
        for bad in ["", "0", "5", "-1s", "+1s", "5d", "1 s", ".5s", "1.s", "1s ", "s", "1μs", "1hh", "1e3s"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn keeps_its_text() {
        let d: Duration = serde_json::from_str(r#""1h30m""#).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""1h30m""#);
        assert!(serde_json::from_str::<Duration>(r#""1d""#).is_err());
    }

    /// The schema admits a text exactly when the pattern matches, it is short enough, and Go's
    /// parser takes it (the CEL rule). Every such text parses here; every other is refused.
    #[test]
    fn the_schema_and_the_parser_agree_on_every_text() {
        let pattern = regex::Regex::new(PATTERN).unwrap();
        let admitted = |t: &str| pattern.is_match(t) && t.len() <= MAX_LENGTH && go_parses(t);
        let alphabet: Vec<&str> =
            vec!["0", "1", "5", "9", ".", "ns", "us", "µs", "ms", "s", "m", "h", "d", "-", " ", "μs", "e"];
        // Every text of up to four symbols, and a deterministic sample of longer ones.
        let mut texts = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for t in &frontier {
                for a in &alphabet {
                    next.push(format!("{t}{a}"));
                }
            }
            texts.extend(next.iter().cloned());
            frontier = next;
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            let mut t = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 5 + (seed % 14) as usize;
            for i in 0..len {
                let r = seed.rotate_left(i as u32 * 5) ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
                t.push_str(alphabet[(r % alphabet.len() as u64) as usize]);
            }
            texts.push(t);
        }
        for long in ["9999999999999999999999999999h", "2562048h", "106751d", "1000000000000000000000000000000000s"] {
            texts.push(long.into());
        }
        let mut admitted_count = 0;
        for t in &texts {
            let ok = Duration::parse(t).is_ok();
            assert_eq!(ok, admitted(t), "{t:?}: parser says {ok}, schema says {}", admitted(t));
            admitted_count += usize::from(ok);
        }
        assert!(admitted_count > 1000, "the sample must hold many valid durations ({admitted_count})");
    }

    /// Go's `time.ParseDuration` on the pattern's language: the sum in nanoseconds must fit in an
    /// i64. Written apart from the parser above, digit by digit, as Go does.
    fn go_parses(t: &str) -> bool {
        let re = regex::Regex::new(r"([0-9]+)(?:\.([0-9]+))?(ns|us|µs|ms|s|m|h)").unwrap();
        let mut total: f64 = 0.0;
        let mut exact: u128 = 0;
        for c in re.captures_iter(t) {
            let unit: u128 = match &c[3] {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                _ => 3_600_000_000_000,
            };
            let Ok(int) = c[1].parse::<u128>() else { return false };
            let Some(v) = int.checked_mul(unit) else { return false };
            exact += v;
            total += v as f64;
            if let Some(f) = c.get(2) {
                let digits = &f.as_str()[..f.as_str().len().min(24)];
                exact += digits.parse::<u128>().unwrap() * unit / 10u128.pow(digits.len() as u32);
            }
        }
        total < 1e30 && exact <= i64::MAX as u128
    }
}
