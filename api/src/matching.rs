//! An experiment's match (`Stage.match`) as the request-header rule a router writes, and as
//! people read it. Patterns are RE2 (what Envoy and Istio run), anchored at both ends so that
//! they mean the same under full-match and search semantics.

use crate::{KeyShare, TrafficMatch};

/// A key share picks among this many buckets: the key's last two hex digits.
pub const BUCKETS: u32 = 256;

/// How a request's header must look for the candidate to answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderRule {
    Exact { name: String, value: String },
    Regex { name: String, pattern: String },
}

impl HeaderRule {
    pub fn name(&self) -> &str {
        match self {
            HeaderRule::Exact { name, .. } | HeaderRule::Regex { name, .. } => name,
        }
    }
}

impl KeyShare {
    /// The buckets sent to the candidate (the lowest ones): `percent` of 256, rounded, at least 1.
    pub fn buckets(&self) -> u32 {
        ((self.percent.clamp(1, 100) as u32 * BUCKETS + 50) / 100).clamp(1, BUCKETS)
    }

    /// The share of keys that is, in percent.
    pub fn share_percent(&self) -> f64 {
        f64::from(self.buckets()) * 100.0 / f64::from(BUCKETS)
    }

    /// Whether a request with this key reaches the candidate (what the route's pattern decides).
    pub fn selects(&self, key: &str) -> bool {
        key_bucket(key).is_some_and(|b| b < self.buckets())
    }
}

/// A key's bucket: its last two hex digits as a number, None when it does not end in two.
pub fn key_bucket(key: &str) -> Option<u32> {
    let tail = key.get(key.len().checked_sub(2)?..)?;
    if !tail.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(tail, 16).ok()
}

/// RE2 with every metacharacter of `s` escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A character class of the hex digits `0..n` (both cases).
fn digits_below(n: u32) -> String {
    let mut class = String::from("[");
    for d in 0..n.min(16) {
        let c = char::from_digit(d, 16).expect("a hex digit");
        class.push(c);
        if c.is_ascii_alphabetic() {
            class.push(c.to_ascii_uppercase());
        }
    }
    class.push(']');
    class
}

/// A pattern for a value ending in two hex digits below `n` (1..=256).
fn low_buckets(n: u32) -> String {
    let (whole, rest) = (n / 16, n % 16);
    let mut alternatives = Vec::new();
    if whole > 0 {
        alternatives.push(format!("{}[0-9a-fA-F]", digits_below(whole)));
    }
    if rest > 0 {
        let lead = char::from_digit(whole, 16).expect("whole < 16 when rest > 0");
        let lead =
            if lead.is_ascii_alphabetic() { format!("[{lead}{}]", lead.to_ascii_uppercase()) } else { lead.into() };
        alternatives.push(format!("{lead}{}", digits_below(rest)));
    }
    format!("^.*(?:{})$", alternatives.join("|"))
}

impl TrafficMatch {
    /// The header rule a router writes for this match.
    pub fn header_rule(&self) -> HeaderRule {
        if let Some(h) = &self.header {
            HeaderRule::Exact { name: h.name.to_ascii_lowercase(), value: h.value.clone() }
        } else if let Some(c) = &self.cookie {
            // One cookie among others in the Cookie header (`a=1; ab=b; c=3`).
            let pattern = format!(r"^(?:.*;\s*)?{}={}(?:;.*)?$", escape(&c.name), escape(&c.value));
            HeaderRule::Regex { name: "cookie".into(), pattern }
        } else if let Some(k) = &self.key_share {
            HeaderRule::Regex { name: k.header.to_ascii_lowercase(), pattern: low_buckets(k.buckets()) }
        } else {
            // The apiserver refuses a match with none set (CEL); match nothing rather than all.
            HeaderRule::Exact { name: "x-modelrollout-unset-match".into(), value: "\u{1}".into() }
        }
    }

    /// The rule for people: `header x-user-id in 128/256 key buckets (50%)`.
    pub fn describe(&self) -> String {
        if let Some(h) = &self.header {
            format!("header {} = {}", h.name, h.value)
        } else if let Some(c) = &self.cookie {
            format!("cookie {}={}", c.name, c.value)
        } else if let Some(k) = &self.key_share {
            format!(
                "key header {}: last two hex digits below {:#04x} ({}/{BUCKETS} buckets, {}% of keys)",
                k.header,
                k.buckets(),
                k.buckets(),
                k.share_percent()
            )
        } else {
            "nothing".into()
        }
    }

    pub fn key_share_percent(&self) -> Option<f64> {
        self.key_share.as_ref().map(KeyShare::share_percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeaderValue;

    fn share(percent: i32) -> TrafficMatch {
        TrafficMatch { header: None, cookie: None, key_share: Some(KeyShare { header: "X-User-Id".into(), percent }) }
    }

    /// Every share's pattern, compiled as RE2 syntax, selects exactly the keys whose bucket is
    /// below its count: what the route does and what the tests predict agree for all 256 endings.
    #[test]
    fn a_key_share_pattern_selects_exactly_its_buckets() {
        for percent in 1..=100 {
            let m = share(percent);
            let HeaderRule::Regex { name, pattern } = m.header_rule() else { panic!("a regex") };
            assert_eq!(name, "x-user-id");
            let re = regex::Regex::new(&pattern).unwrap();
            let k = m.key_share.as_ref().unwrap();
            for b in 0..BUCKETS {
                for key in [format!("3f2a9c0e-77b1-4c1e-9d2b-0000000000{b:02x}"), format!("user-{b:02X}")] {
                    assert_eq!(re.is_match(&key), b < k.buckets(), "{percent}% ({pattern}): {key}");
                    assert_eq!(k.selects(&key), b < k.buckets(), "{percent}%: {key}");
                }
            }
            for key in ["", "a", "user-zz", "user-0g"] {
                assert!(!re.is_match(key) && !k.selects(key), "{percent}%: `{key}` has no bucket");
            }
        }
        assert_eq!(share(50).key_share.unwrap().buckets(), 128);
        assert_eq!(share(1).key_share.unwrap().buckets(), 3);
        assert_eq!(share(100).key_share.unwrap().buckets(), 256);
    }

    #[test]
    fn a_larger_share_only_adds_keys() {
        for percent in 1..100 {
            let (a, b) = (share(percent).key_share.unwrap(), share(percent + 1).key_share.unwrap());
            for bucket in 0..BUCKETS {
                let key = format!("k{bucket:02x}");
                assert!(!a.selects(&key) || b.selects(&key), "{percent}% -> {}%: {key} switched arm", percent + 1);
            }
        }
    }

    #[test]
    fn a_cookie_matches_among_others_and_nothing_near_it() {
        let m = TrafficMatch {
            header: None,
            cookie: Some(HeaderValue { name: "ab.arm".into(), value: "b+1".into() }),
            key_share: None,
        };
        let HeaderRule::Regex { name, pattern } = m.header_rule() else { panic!("a regex") };
        assert_eq!(name, "cookie");
        let re = regex::Regex::new(&pattern).unwrap();
        for yes in ["ab.arm=b+1", "x=1; ab.arm=b+1", "ab.arm=b+1; y=2", "x=1;ab.arm=b+1;y=2"] {
            assert!(re.is_match(yes), "{yes}");
        }
        for no in ["ab.arm=b+12", "xab.arm=b+1", "abXarm=b+1", "ab.arm=bb1", "ab.arm=a", ""] {
            assert!(!re.is_match(no), "{no}");
        }
    }

    #[test]
    fn a_header_matches_exactly_by_its_lower_case_name() {
        let m = TrafficMatch {
            header: Some(HeaderValue { name: "X-Beta".into(), value: "yes".into() }),
            cookie: None,
            key_share: None,
        };
        assert_eq!(m.header_rule(), HeaderRule::Exact { name: "x-beta".into(), value: "yes".into() });
        assert_eq!(m.describe(), "header X-Beta = yes");
    }

    /// The longest cookie the CRD admits (a 256-character name and a 1024-character value, all
    /// metacharacters, each escaped) still makes a pattern a route's 4096-character header match
    /// can hold.
    #[test]
    fn the_longest_cookie_the_crd_admits_fits_a_route_header_match() {
        let m = TrafficMatch {
            header: None,
            cookie: Some(HeaderValue { name: "$".repeat(256), value: ".".repeat(1024) }),
            key_share: None,
        };
        let HeaderRule::Regex { pattern, .. } = m.header_rule() else { panic!("a cookie is a pattern") };
        assert!(pattern.len() <= 4096, "{} characters", pattern.len());
    }
}
