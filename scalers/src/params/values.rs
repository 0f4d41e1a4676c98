//! What the parser produces: typed values ([`ParamValue`]) with their [`Origin`], collected in
//! [`ParsedParams`], and the redacted views of them (secrets hidden, URL credentials masked).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;

use super::Source;

/// A typed parameter value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// String or enum value.
    Str(String),
    /// Integer value.
    Int(i64),
    /// Float value.
    Float(f64),
    /// Boolean value.
    Bool(bool),
    /// List value.
    List(Vec<String>),
}

/// Where a parsed value came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "detail")]
pub enum Origin {
    /// Read from a source.
    Source(Source),
    /// The declared default.
    Default,
    /// Would come from a source that is not available here (the target's env, or an unresolved
    /// authenticationRef); the text says which.
    Unresolved(String),
}

/// One parsed parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The value (`None` when unresolved).
    pub value: Option<ParamValue>,
    /// Where it came from.
    pub origin: Origin,
    /// Whether it is a credential.
    pub secret: bool,
    /// Whether `user:password@` must be masked when shown.
    pub masks_userinfo: bool,
}

/// The result of parsing a trigger: typed values by parameter name, plus warnings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedParams {
    pub(super) values: BTreeMap<&'static str, Parsed>,
    /// Non-fatal notes: unknown metadata keys, deprecated parameters, unresolved env.
    pub warnings: Vec<String>,
    /// The metadata a [`Rule::PassMetadata`](super::Rule::PassMetadata) trigger passes on to its
    /// server; empty for every other trigger.
    pub(super) passed: PassedMetadata,
}

/// A trigger's metadata kept whole for its server (KEDA's `scalerMetadata`): every key as given,
/// a `<key>FromEnv` key with the environment variable's value. Its values may come from Secrets:
/// `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq)]
pub struct PassedMetadata(pub BTreeMap<String, String>);

impl std::fmt::Debug for PassedMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl ParsedParams {
    /// The parsed entry of a parameter, if it has one.
    pub fn get(&self, name: &str) -> Option<&Parsed> {
        self.values.get(name)
    }
    /// Whether a source gave this parameter a value (not a default, not unresolved). A bool counts
    /// only when true.
    pub fn is_set(&self, name: &str) -> bool {
        match self.values.get(name) {
            Some(Parsed {
                origin: Origin::Source(_),
                value: Some(ParamValue::Bool(b)),
                ..
            }) => *b,
            Some(Parsed {
                origin: Origin::Source(_),
                ..
            }) => true,
            _ => false,
        }
    }
    /// Whether the parameter is known to come from a source that is not available here.
    pub fn is_unresolved(&self, name: &str) -> bool {
        matches!(
            self.values.get(name),
            Some(Parsed {
                origin: Origin::Unresolved(_),
                ..
            })
        )
    }
    /// String value (also enums).
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.values.get(name)?.value.as_ref()? {
            ParamValue::Str(s) => Some(s),
            _ => None,
        }
    }
    /// Integer value.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.values.get(name)?.value.as_ref()? {
            ParamValue::Int(v) => Some(*v),
            _ => None,
        }
    }
    /// Float value (integers widen).
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.values.get(name)?.value.as_ref()? {
            ParamValue::Float(v) => Some(*v),
            ParamValue::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    /// Boolean value.
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.values.get(name)?.value.as_ref()? {
            ParamValue::Bool(v) => Some(*v),
            _ => None,
        }
    }
    /// List value.
    pub fn list(&self, name: &str) -> Option<&[String]> {
        match self.values.get(name)?.value.as_ref()? {
            ParamValue::List(v) => Some(v),
            _ => None,
        }
    }
    /// The metadata to pass on to the server (see [`PassedMetadata`]).
    pub fn passed_metadata(&self) -> &PassedMetadata {
        &self.passed
    }
    /// Marks a parameter as secret after the fact (its value came from a Secret), so that every
    /// view redacts it.
    pub fn mark_secret(&mut self, name: &str) {
        if let Some(p) = self.values.get_mut(name) {
            p.secret = true;
        }
    }
    /// JSON view with every secret value replaced by `<redacted>`.
    pub fn redacted_json(&self) -> Json {
        let mut out = serde_json::Map::new();
        for (name, p) in &self.values {
            let value = match (&p.value, p.secret) {
                (Some(_), true) => Json::String("<redacted>".into()),
                (Some(ParamValue::Str(s)), false) if p.masks_userinfo => Json::String(mask_userinfo(s)),
                (Some(v), false) => serde_json::to_value(v).unwrap_or(Json::Null),
                (None, _) => Json::Null,
            };
            let origin = match &p.origin {
                Origin::Source(Source::Metadata) => "metadata".to_string(),
                Origin::Source(Source::AuthParams) => "authParams".to_string(),
                Origin::Source(Source::ResolvedEnv) => "env".to_string(),
                Origin::Default => "default".to_string(),
                Origin::Unresolved(what) => format!("unresolved: {what}"),
            };
            out.insert(
                name.to_string(),
                serde_json::json!({ "value": value, "from": origin }),
            );
        }
        Json::Object(out)
    }
}

/// Replaces the `user:password@` part of a URL-like string with `<redacted>@`.
pub fn mask_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>@{}", &s[..scheme_end + 3], &rest[at + 1..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(
            mask_userinfo("amqp://u:p@host:5672/vh"),
            "amqp://<redacted>@host:5672/vh"
        );
        assert_eq!(mask_userinfo("http://host/a@b"), "http://host/a@b");
        assert_eq!(mask_userinfo("plain"), "plain");
    }
}
