//! The API a team published for its model: the path its clients `POST` to and the shape of the
//! request and answer (`POST /moderate` with `{"text": …}` answering a score and a label; a
//! ranking scorer's `/v1/rank:score` answering `{item_id, score}` per candidate). The sidecar
//! serves each one beside its standard routes and the route the controller creates matches
//! exactly these paths, both from the contract's [`PublicApi`] list, so they cannot disagree.
//!
//! A superseded API version stays listed with a [`Deprecation`]: its answers carry the
//! `Deprecation` header (RFC 9745), `Sunset` (RFC 8594) and a `successor-version` link.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The standard routes' paths, which a published API may not take (health, metrics, the Open
/// Inference Protocol, the predict and feedback routes). `/v1/rank:score` is not among them: a
/// published ranking API may take it over with its own shape.
pub const RESERVED_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/v1/feedback"];
/// Path prefixes of the standard routes.
pub const RESERVED_PREFIXES: [&str; 2] = ["/v2", "/v1/models/"];
/// The path of the standard ranking route.
pub const RANK_PATH: &str = "/v1/rank:score";
/// Most candidates one ranking request may score, unless the sidecar is told otherwise: what an
/// acceptance load check sends a ranking API per request.
pub const DEFAULT_MAX_CANDIDATES: usize = 50;

/// One API a team published for the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(self.path in ['/healthz', '/readyz', '/metrics', '/v1/feedback']) && !self.path.startsWith('/v2') && !self.path.startsWith('/v1/models/')",
    "message": "path is one of the sidecar's standard routes (/healthz, /readyz, /metrics, /v1/feedback, /v1/models/…, /v2…)",
    "fieldPath": ".path",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.labels) || self.shape == 'Classify'",
    "message": "labels name a Classify API's decisions",
    "fieldPath": ".labels",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.itemId) || self.shape == 'Rank'",
    "message": "itemId names a Rank API's candidates",
    "fieldPath": ".itemId",
    "reason": "FieldValueInvalid"
}]))]
pub struct PublicApi {
    /// The path clients `POST` to, e.g. `/moderate` or `/v1/rank:score`.
    #[schemars(length(min = 2, max = 256), regex(pattern = r"^/[A-Za-z0-9._~:@!$&'()*+,;=\-/]*$"))]
    pub path: String,
    pub shape: ApiShape,
    /// Classify: the label answered for a positive decision (score at or above the contract's
    /// threshold) and for a negative one; `positive` and `negative` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<DecisionLabels>,
    /// Rank: the candidate field naming the item, echoed as `item_id` in the answer (not a
    /// feature: it is not given to the model); `item_id` when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"))]
    pub item_id: Option<String>,
    /// A superseded API version: still served, its answers say since when it is deprecated, when
    /// it goes, and what replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<Deprecation>,
}

/// What a published API takes and answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ApiShape {
    /// One object of features (plus an optional `request_id`) answered with
    /// `{"score", "label", "model_version", "request_id"}`.
    Classify,
    /// `{"request_id"?, "context"?: {…}, "candidates": [{<itemId>, …features}, …]}` answered with
    /// `{"request_id", "served_model_version", "latency_ms", "results": [{"item_id", "score"}, …]}`,
    /// best first.
    Rank,
}

/// The labels a Classify API answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionLabels {
    #[schemars(length(min = 1, max = 64))]
    pub positive: String,
    #[schemars(length(min = 1, max = 64))]
    pub negative: String,
}

/// When a superseded API version was deprecated and when it goes (dates, midnight UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.sunset) || self.sunset > self.since",
    "message": "sunset must come after since",
    "fieldPath": ".sunset",
    "reason": "FieldValueInvalid"
}]))]
pub struct Deprecation {
    /// Deprecated since (`YYYY-MM-DD`): the `Deprecation` header.
    #[schemars(regex(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"))]
    pub since: String,
    /// Removed from (`YYYY-MM-DD`): the `Sunset` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"))]
    pub sunset: Option<String>,
    /// What replaces it (a path or URL): a `Link: <…>; rel="successor-version"` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^<>\s]+$"))]
    pub successor: Option<String>,
}

/// Why a published API cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("api path `{0}` must start with `/`")]
    NotAPath(String),
    #[error("api path `{0}` is one of the sidecar's standard routes")]
    Reserved(String),
    #[error("api path `{0}` is published twice")]
    Duplicate(String),
    #[error("api `{path}`: {what}")]
    Shape { path: String, what: &'static str },
    #[error("api `{path}`: itemId `{item_id}` is an input feature")]
    ItemIdIsAFeature { path: String, item_id: String },
    #[error("api `{path}`: `{date}` is not a YYYY-MM-DD date")]
    BadDate { path: String, date: String },
    #[error("api `{path}`: sunset is not after since")]
    SunsetBeforeSince { path: String },
}

impl PublicApi {
    /// The candidate field naming the item (Rank).
    pub fn item_field(&self) -> &str {
        self.item_id.as_deref().unwrap_or("item_id")
    }

    /// The label of a decision (Classify).
    pub fn label(&self, positive: bool) -> &str {
        match (&self.labels, positive) {
            (Some(l), true) => &l.positive,
            (Some(l), false) => &l.negative,
            (None, true) => "positive",
            (None, false) => "negative",
        }
    }

    /// Whether `path` is one of the standard routes a published API may not take.
    pub fn reserved(path: &str) -> bool {
        RESERVED_PATHS.contains(&path) || RESERVED_PREFIXES.iter().any(|p| path.starts_with(p))
    }
}

/// What a deprecated API's answers carry, worked out once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeprecationHeaders {
    /// `@<unix seconds>` (RFC 9745).
    pub deprecation: String,
    /// An HTTP-date (RFC 8594).
    pub sunset: Option<String>,
    /// `<successor>; rel="successor-version"`.
    pub link: Option<String>,
}

impl Deprecation {
    /// The headers, or the date that is not one.
    pub fn headers(&self, path: &str) -> Result<DeprecationHeaders, ApiError> {
        let day = |d: &str| days_since_epoch(d).ok_or_else(|| ApiError::BadDate { path: path.into(), date: d.into() });
        let since = day(&self.since)?;
        let sunset = self.sunset.as_deref().map(day).transpose()?;
        if sunset.is_some_and(|s| s <= since) {
            return Err(ApiError::SunsetBeforeSince { path: path.into() });
        }
        Ok(DeprecationHeaders {
            deprecation: format!("@{}", since * 86_400),
            sunset: sunset.map(http_date),
            link: self.successor.as_ref().map(|s| format!("<{s}>; rel=\"successor-version\"")),
        })
    }
}

/// The API clients are told to use: the first published one not deprecated.
pub fn current(apis: &[PublicApi]) -> Option<&PublicApi> {
    apis.iter().find(|a| a.deprecation.is_none())
}

/// Checks a contract's published APIs against each other and its inputs.
pub fn check(apis: &[PublicApi], inputs: &[crate::Feature]) -> Result<(), ApiError> {
    for (i, api) in apis.iter().enumerate() {
        let path = || api.path.clone();
        if !api.path.starts_with('/') {
            return Err(ApiError::NotAPath(path()));
        }
        if PublicApi::reserved(&api.path) {
            return Err(ApiError::Reserved(path()));
        }
        if apis[..i].iter().any(|a| a.path == api.path) {
            return Err(ApiError::Duplicate(path()));
        }
        match api.shape {
            ApiShape::Classify if api.item_id.is_some() => {
                return Err(ApiError::Shape { path: path(), what: "itemId names a Rank API's candidates" });
            }
            ApiShape::Rank if api.labels.is_some() => {
                return Err(ApiError::Shape { path: path(), what: "labels name a Classify API's decisions" });
            }
            _ => {}
        }
        if api.shape == ApiShape::Rank && inputs.iter().any(|f| f.name == api.item_field()) {
            return Err(ApiError::ItemIdIsAFeature { path: path(), item_id: api.item_field().into() });
        }
        if let Some(d) = &api.deprecation {
            d.headers(&api.path)?;
        }
    }
    Ok(())
}

/// Days from 1970-01-01 to a `YYYY-MM-DD` date (proleptic Gregorian), None when it is not one.
fn days_since_epoch(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The IMF-fixdate of midnight UTC on a day since the epoch: `Sun, 06 Nov 1994 00:00:00 GMT`.
fn http_date(days: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    // civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    format!("{weekday}, {d:02} {} {y:04} 00:00:00 GMT", MONTHS[(m - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Feature, FeatureType};

    fn api(path: &str, shape: ApiShape) -> PublicApi {
        PublicApi { path: path.into(), shape, labels: None, item_id: None, deprecation: None }
    }

    #[test]
    fn dates_turn_into_the_headers_the_rfcs_write() {
        assert_eq!(days_since_epoch("1970-01-01"), Some(0));
        assert_eq!(days_since_epoch("2000-03-01"), Some(11_017));
        assert_eq!(days_since_epoch("2024-02-29"), Some(19_782));
        assert_eq!(days_since_epoch("2023-02-29"), None, "not a leap year");
        assert_eq!(days_since_epoch("2026-13-01"), None);
        assert_eq!(days_since_epoch("26-01-01"), None);
        // RFC 8594's own example day, and RFC 9745's timestamp of 2023-06-30 (@1688169599 is a
        // second before midnight; a day starts at @1688083200).
        assert_eq!(http_date(days_since_epoch("1994-11-06").unwrap()), "Sun, 06 Nov 1994 00:00:00 GMT");
        let d = Deprecation {
            since: "2023-06-30".into(),
            sunset: Some("2027-01-31".into()),
            successor: Some("/v2/moderate".into()),
        };
        let h = d.headers("/moderate").unwrap();
        assert_eq!(h.deprecation, "@1688083200");
        assert_eq!(h.sunset.as_deref(), Some("Sun, 31 Jan 2027 00:00:00 GMT"));
        assert_eq!(h.link.as_deref(), Some("</v2/moderate>; rel=\"successor-version\""));
        let backwards = Deprecation { sunset: Some("2023-06-30".into()), ..d };
        assert_eq!(backwards.headers("/m"), Err(ApiError::SunsetBeforeSince { path: "/m".into() }));
    }

    #[test]
    fn published_apis_are_refused_where_they_clash() {
        let text = Feature {
            name: "text".into(),
            kind: FeatureType::String,
            min: None,
            max: None,
            categories: None,
            max_length: Some(300),
            nullable: false,
        };
        let inputs = [text];
        assert_eq!(check(&[api("/moderate", ApiShape::Classify), api(RANK_PATH, ApiShape::Rank)], &inputs), Ok(()));
        for reserved in ["/metrics", "/v1/feedback", "/v2/models/x/infer", "/v1/models/x:predict", "/healthz"] {
            assert_eq!(check(&[api(reserved, ApiShape::Classify)], &inputs), Err(ApiError::Reserved(reserved.into())));
        }
        assert_eq!(check(&[api("moderate", ApiShape::Classify)], &inputs), Err(ApiError::NotAPath("moderate".into())));
        assert_eq!(
            check(&[api("/m", ApiShape::Classify), api("/m", ApiShape::Rank)], &inputs),
            Err(ApiError::Duplicate("/m".into()))
        );
        let item_is_text = PublicApi { item_id: Some("text".into()), ..api("/rank", ApiShape::Rank) };
        assert!(matches!(check(&[item_is_text], &inputs), Err(ApiError::ItemIdIsAFeature { .. })));
        let labelled_rank = PublicApi {
            labels: Some(DecisionLabels { positive: "a".into(), negative: "b".into() }),
            ..api("/rank", ApiShape::Rank)
        };
        assert!(matches!(check(&[labelled_rank], &inputs), Err(ApiError::Shape { .. })));
        let bad_date = PublicApi {
            deprecation: Some(Deprecation { since: "2026-02-30".into(), sunset: None, successor: None }),
            ..api("/old", ApiShape::Classify)
        };
        assert!(matches!(check(&[bad_date], &inputs), Err(ApiError::BadDate { .. })));
    }

    #[test]
    fn labels_and_item_ids_default_to_their_plain_names() {
        let a = api("/moderate", ApiShape::Classify);
        assert_eq!((a.label(true), a.label(false)), ("positive", "negative"));
        assert_eq!(api("/r", ApiShape::Rank).item_field(), "item_id");
    }
}
