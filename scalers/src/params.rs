//! Declarative trigger parameters and the one parser driven by them.
//!
//! A scaler lists its parameters as [`Param`] values; [`parse`] reads each from the allowed
//! [`Source`]s in order, applies defaults, converts types, enforces bounds and [`Rule`]s, and
//! reports every problem with the parameter's name. Secret parameters never show their value in
//! an error or in [`ParsedParams`]' redacted view.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value as Json;

/// Where a parameter value may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// `triggers[].metadata.<name>`.
    Metadata,
    /// The auth params resolved from the trigger's authenticationRef.
    AuthParams,
    /// `triggers[].metadata.<name>FromEnv`, naming an env var of the scale target's container.
    ResolvedEnv,
}

/// Sources: metadata only.
pub const META: &[Source] = &[Source::Metadata];
/// Sources: metadata, then `<name>FromEnv`.
pub const META_ENV: &[Source] = &[Source::Metadata, Source::ResolvedEnv];
/// Sources: metadata, then auth params.
pub const META_AUTH: &[Source] = &[Source::Metadata, Source::AuthParams];
/// Sources: metadata, auth params, then `<name>FromEnv`.
pub const META_AUTH_ENV: &[Source] = &[Source::Metadata, Source::AuthParams, Source::ResolvedEnv];
/// Sources: auth params only (credentials).
pub const AUTH: &[Source] = &[Source::AuthParams];
/// Sources: auth params, then `<name>FromEnv`.
pub const AUTH_ENV: &[Source] = &[Source::AuthParams, Source::ResolvedEnv];

/// The type a parameter value is converted to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    /// Any string.
    String,
    /// A whole number.
    Int,
    /// A floating-point number.
    Float,
    /// `true` or `false` (case-insensitive).
    Bool,
    /// One of a fixed set of strings (matched case-insensitively, stored in the declared case).
    Enum(&'static [&'static str]),
    /// A comma-separated list of non-empty strings.
    List,
}

/// One declared parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Name, as in KEDA's docs.
    pub name: &'static str,
    /// Value type.
    pub ty: ParamType,
    /// Default used when no source has a value.
    pub default: Option<&'static str>,
    /// Missing and without default is an error.
    pub required: bool,
    /// Sources, in lookup order.
    pub from: &'static [Source],
    /// Credential: never printed.
    pub secret: bool,
    /// Lower bound for numbers; `min_exclusive` makes it strict.
    pub min: Option<f64>,
    /// Whether `min` is exclusive.
    pub min_exclusive: bool,
    /// Deprecation note, reported as a warning when the parameter is used.
    pub deprecated: Option<&'static str>,
    /// A URL that may carry `user:password@`: shown with the credentials masked.
    pub masks_userinfo: bool,
}

impl Param {
    const fn new(name: &'static str, ty: ParamType) -> Self {
        Param {
            name,
            ty,
            default: None,
            required: false,
            from: META,
            secret: false,
            min: None,
            min_exclusive: false,
            deprecated: None,
            masks_userinfo: false,
        }
    }
    /// A string parameter.
    pub const fn string(name: &'static str) -> Self {
        Self::new(name, ParamType::String)
    }
    /// An integer parameter.
    pub const fn int(name: &'static str) -> Self {
        Self::new(name, ParamType::Int)
    }
    /// A float parameter.
    pub const fn float(name: &'static str) -> Self {
        Self::new(name, ParamType::Float)
    }
    /// A boolean parameter.
    pub const fn bool(name: &'static str) -> Self {
        Self::new(name, ParamType::Bool)
    }
    /// An enum parameter.
    pub const fn one_of(name: &'static str, values: &'static [&'static str]) -> Self {
        Self::new(name, ParamType::Enum(values))
    }
    /// A comma-separated list parameter.
    pub const fn list(name: &'static str) -> Self {
        Self::new(name, ParamType::List)
    }
    /// Sets the default.
    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }
    /// Marks the parameter required.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// Sets the sources, in lookup order.
    pub const fn from(mut self, sources: &'static [Source]) -> Self {
        self.from = sources;
        self
    }
    /// Marks the parameter as a credential.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
    /// Requires value ≥ min.
    pub const fn min(mut self, min: f64) -> Self {
        self.min = Some(min);
        self
    }
    /// Requires value > min.
    pub const fn above(mut self, min: f64) -> Self {
        self.min = Some(min);
        self.min_exclusive = true;
        self
    }
    /// Marks the parameter as a URL whose `user:password@` part must be masked when shown.
    pub const fn masks_userinfo(mut self) -> Self {
        self.masks_userinfo = true;
        self
    }
    /// Marks the parameter deprecated.
    pub const fn deprecated(mut self, note: &'static str) -> Self {
        self.deprecated = Some(note);
        self
    }
}

/// A rule between parameters. "Set" means given by a source (not defaulted); a bool counts as set
/// only when true.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// At most one of these may be set.
    Exclusive(&'static [&'static str]),
    /// At least one of these must be set.
    AnyOf(&'static [&'static str]),
    /// Either all or none of these are set.
    Together(&'static [&'static str]),
    /// When the first is set, the second must be set too.
    Requires(&'static str, &'static str),
}

/// A scaler's whole parameter declaration.
#[derive(Debug)]
pub struct ScalerDecl {
    /// Trigger type, e.g. `kafka`.
    pub trigger_type: &'static str,
    /// Parameters.
    pub params: &'static [Param],
    /// Rules between parameters.
    pub rules: &'static [Rule],
    /// Scaler-specific checks that need the parsed values (run only when parsing succeeded).
    pub check: fn(&ParsedParams) -> Vec<ParamError>,
    /// The metric name's detail part, e.g. the topic: `s<index>-<type>-<detail>`.
    pub metric_detail: fn(&ParsedParams) -> String,
    /// The HPA target and the activation threshold, from the parsed parameters.
    pub thresholds: fn(&ParsedParams) -> Thresholds,
    /// Configuration that works but often surprises users (shown in the object's Ready message
    /// and by `ebb validate`); [`no_warnings`] for most scalers.
    pub warnings: fn(&ParsedParams) -> Vec<String>,
}

/// The `warnings` of a scaler whose configurations hold no surprise.
pub fn no_warnings(_: &ParsedParams) -> Vec<String> {
    Vec::new()
}

/// A trigger's HPA target (per replica for AverageValue) and its activation threshold: the trigger is
/// active when its value is strictly greater than `activation`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// HPA target value.
    pub target: f64,
    /// Activation threshold.
    pub activation: f64,
}

impl ScalerDecl {
    /// Looks a parameter up by name.
    pub fn param(&self, name: &str) -> Option<&'static Param> {
        self.params.iter().find(|p| p.name == name)
    }
}

/// Everything a trigger's parameters may be read from.
#[derive(Debug, Clone, Copy)]
pub struct TriggerInput<'a> {
    /// The trigger's metadata.
    pub metadata: &'a BTreeMap<String, String>,
    /// Auth params resolved from the authenticationRef. `None` means "an authenticationRef is set but
    /// could not be resolved here": parameters it would supply are then left unresolved, not missing.
    pub auth_params: Option<&'a BTreeMap<String, String>>,
    /// The target container's environment, when known. `None` means "not available here"
    /// (e.g. `ebb validate` without the Deployment): `FromEnv` values are then left unresolved.
    pub resolved_env: Option<&'a BTreeMap<String, String>>,
}

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
    values: BTreeMap<&'static str, Parsed>,
    /// Non-fatal notes: unknown metadata keys, deprecated parameters, unresolved env.
    pub warnings: Vec<String>,
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

/// One problem with one parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// Parameter name (or several, joined, for rules).
    pub param: String,
    /// What was wrong. Never contains a secret value.
    pub problem: String,
}

impl ParamError {
    /// Creates a parameter error.
    pub fn new(param: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.problem)
    }
}

/// A trigger that failed to parse: its index, its type, and each parameter problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("triggers[{index}] ({trigger_type}): {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct TriggerParseError {
    /// Index in `spec.triggers`.
    pub index: usize,
    /// Trigger type.
    pub trigger_type: String,
    /// Every problem found.
    pub errors: Vec<ParamError>,
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

/// Shows a value in an error, unless the parameter is a secret.
fn shown(param: &Param, raw: &str) -> String {
    if param.secret {
        "(value hidden)".to_string()
    } else if param.masks_userinfo {
        format!("{:?}", mask_userinfo(raw))
    } else {
        format!("{raw:?}")
    }
}

fn convert(param: &Param, raw: &str) -> Result<ParamValue, String> {
    let trimmed = raw.trim();
    let value = match param.ty {
        ParamType::String => ParamValue::Str(raw.to_string()),
        ParamType::Int => ParamValue::Int(
            trimmed
                .parse::<i64>()
                .map_err(|_| format!("must be a whole number, got {}", shown(param, raw)))?,
        ),
        ParamType::Float => {
            let v = trimmed
                .parse::<f64>()
                .map_err(|_| format!("must be a number, got {}", shown(param, raw)))?;
            if !v.is_finite() {
                return Err(format!("must be a finite number, got {}", shown(param, raw)));
            }
            ParamValue::Float(v)
        }
        ParamType::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" => ParamValue::Bool(true),
            "false" => ParamValue::Bool(false),
            _ => return Err(format!("must be true or false, got {}", shown(param, raw))),
        },
        ParamType::Enum(allowed) => match allowed.iter().find(|a| a.eq_ignore_ascii_case(trimmed)) {
            Some(a) => ParamValue::Str(a.to_string()),
            None => {
                return Err(format!(
                    "must be one of {}, got {}",
                    allowed.join(", "),
                    shown(param, raw)
                ));
            }
        },
        ParamType::List => {
            let items: Vec<String> = trimmed
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if items.is_empty() {
                return Err("must be a comma-separated list with at least one item".to_string());
            }
            ParamValue::List(items)
        }
    };
    if let Some(min) = param.min {
        let n = match &value {
            ParamValue::Int(v) => Some(*v as f64),
            ParamValue::Float(v) => Some(*v),
            _ => None,
        };
        if let Some(n) = n {
            let ok = if param.min_exclusive { n > min } else { n >= min };
            if !ok {
                let cmp = if param.min_exclusive {
                    "greater than"
                } else {
                    "at least"
                };
                return Err(format!("must be {cmp} {min}, got {}", shown(param, raw)));
            }
        }
    }
    Ok(value)
}

/// Looks a parameter up in its sources, in order. Empty strings count as absent (KEDA does the same).
fn lookup(param: &Param, input: &TriggerInput<'_>) -> Result<Option<(String, Origin)>, String> {
    for source in param.from {
        match source {
            Source::Metadata => {
                if let Some(v) = input.metadata.get(param.name).filter(|v| !v.is_empty()) {
                    return Ok(Some((v.clone(), Origin::Source(Source::Metadata))));
                }
            }
            Source::AuthParams => match input.auth_params {
                None => {
                    return Ok(Some((
                        String::new(),
                        Origin::Unresolved("the authenticationRef".to_string()),
                    )));
                }
                Some(auth) => {
                    if let Some(v) = auth.get(param.name).filter(|v| !v.is_empty()) {
                        return Ok(Some((v.clone(), Origin::Source(Source::AuthParams))));
                    }
                }
            },
            Source::ResolvedEnv => {
                let key = format!("{}FromEnv", param.name);
                let Some(var) = input.metadata.get(&key).filter(|v| !v.is_empty()) else {
                    continue;
                };
                match input.resolved_env {
                    None => {
                        let what = format!("environment variable {var:?} of the target container");
                        return Ok(Some((String::new(), Origin::Unresolved(what))));
                    }
                    Some(env) => match env.get(var) {
                        Some(v) if !v.is_empty() => {
                            return Ok(Some((v.clone(), Origin::Source(Source::ResolvedEnv))));
                        }
                        _ => {
                            return Err(format!(
                                "{key} names environment variable {var:?}, which the target container does not set"
                            ));
                        }
                    },
                }
            }
        }
    }
    Ok(None)
}

/// Parses a trigger's parameters from its declaration. Returns every problem at once.
pub fn parse(decl: &ScalerDecl, input: &TriggerInput<'_>) -> Result<ParsedParams, Vec<ParamError>> {
    let mut parsed = ParsedParams::default();
    let mut errors = Vec::new();
    for param in decl.params {
        match lookup(param, input) {
            Err(problem) => errors.push(ParamError::new(param.name, problem)),
            Ok(Some((_, Origin::Unresolved(what)))) => {
                // Only worth a warning when the value is needed; optional auth params stay quiet.
                if param.required || !what.starts_with("the authenticationRef") {
                    parsed
                        .warnings
                        .push(format!("{}: comes from {what}, not available here", param.name));
                }
                let unresolved = Origin::Unresolved(what);
                parsed.values.insert(
                    param.name,
                    Parsed {
                        value: None,
                        origin: unresolved,
                        secret: param.secret,
                        masks_userinfo: param.masks_userinfo,
                    },
                );
            }
            Ok(Some((raw, origin))) => {
                if let Some(note) = param.deprecated {
                    parsed
                        .warnings
                        .push(format!("{}: deprecated: {note}", param.name));
                }
                match convert(param, &raw) {
                    Ok(value) => {
                        parsed.values.insert(
                            param.name,
                            Parsed {
                                value: Some(value),
                                origin,
                                secret: param.secret,
                                masks_userinfo: param.masks_userinfo,
                            },
                        );
                    }
                    Err(problem) => errors.push(ParamError::new(param.name, problem)),
                }
            }
            Ok(None) => match param.default {
                Some(default) => match convert(param, default) {
                    Ok(value) => {
                        parsed.values.insert(
                            param.name,
                            Parsed {
                                value: Some(value),
                                origin: Origin::Default,
                                secret: param.secret,
                                masks_userinfo: param.masks_userinfo,
                            },
                        );
                    }
                    Err(problem) => {
                        errors.push(ParamError::new(param.name, format!("bad default: {problem}")))
                    }
                },
                None if param.required => {
                    let where_ = describe_sources(param);
                    errors.push(ParamError::new(
                        param.name,
                        format!("is required (set it in {where_})"),
                    ));
                }
                None => {}
            },
        }
    }
    for key in input.metadata.keys() {
        let base = key.strip_suffix("FromEnv").unwrap_or(key);
        let known = decl.params.iter().any(|p| {
            p.name == key.as_str() && p.from.contains(&Source::Metadata)
                || p.name == base && p.from.contains(&Source::ResolvedEnv)
        });
        if !known {
            parsed.warnings.push(format!(
                "{key}: not a parameter of {}; ignored",
                decl.trigger_type
            ));
        }
    }
    for rule in decl.rules {
        check_rule(rule, &parsed, &mut errors);
    }
    if errors.is_empty() {
        errors.extend((decl.check)(&parsed));
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

fn describe_sources(param: &Param) -> String {
    let parts: Vec<String> = param
        .from
        .iter()
        .map(|s| match s {
            Source::Metadata => "metadata".to_string(),
            Source::AuthParams => "the TriggerAuthentication".to_string(),
            Source::ResolvedEnv => format!("metadata {}FromEnv", param.name),
        })
        .collect();
    parts.join(" or ")
}

fn check_rule(rule: &Rule, parsed: &ParsedParams, errors: &mut Vec<ParamError>) {
    match rule {
        Rule::Exclusive(names) => {
            let set: Vec<&str> = names.iter().copied().filter(|n| parsed.is_set(n)).collect();
            if set.len() > 1 {
                errors.push(ParamError::new(set.join(", "), "cannot be set together"));
            }
        }
        Rule::AnyOf(names) => {
            if !names.iter().any(|n| parsed.get(n).is_some()) {
                errors.push(ParamError::new(names.join(", "), "one of these is required"));
            }
        }
        Rule::Together(names) => {
            let set = names.iter().filter(|n| parsed.is_set(n)).count();
            let unresolved = names.iter().filter(|n| parsed.is_unresolved(n)).count();
            if set != 0 && set + unresolved != names.len() {
                errors.push(ParamError::new(names.join(", "), "must be set together"));
            }
        }
        Rule::Requires(param, needs) => {
            if parsed.is_set(param) && parsed.get(needs).is_none() {
                errors.push(ParamError::new(*param, format!("needs {needs} to be set")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PARAMS: &[Param] = &[
        Param::string("host").required().from(META_AUTH_ENV),
        Param::float("value").default("20").above(0.0),
        Param::int("pageSize").default("100").min(1.0),
        Param::bool("useRegex").default("false"),
        Param::one_of("mode", &["QueueLength", "MessageRate"]).default("QueueLength"),
        Param::string("password").from(AUTH).secret(),
        Param::string("username").from(AUTH),
        Param::list("servers"),
    ];
    static DECL: ScalerDecl = ScalerDecl {
        trigger_type: "test",
        params: PARAMS,
        rules: &[
            Rule::Together(&["username", "password"]),
            Rule::Requires("useRegex", "servers"),
        ],
        check: |_| Vec::new(),
        metric_detail: |_| String::new(),
        thresholds: |_| Thresholds {
            target: 1.0,
            activation: 0.0,
        },
        warnings: no_warnings,
    };

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
        env: Option<&[(&str, &str)]>,
    ) -> Result<ParsedParams, Vec<ParamError>> {
        let (m, a) = (map(meta), map(auth));
        let e = env.map(map);
        parse(
            &DECL,
            &TriggerInput {
                metadata: &m,
                auth_params: Some(&a),
                resolved_env: e.as_ref(),
            },
        )
    }

    #[test]
    fn defaults_and_types() {
        let p = run(&[("host", "amqp://h"), ("mode", "messagerate")], &[], None).unwrap();
        assert_eq!(p.str("host"), Some("amqp://h"));
        assert_eq!(p.float("value"), Some(20.0));
        assert_eq!(p.int("pageSize"), Some(100));
        assert_eq!(p.bool("useRegex"), Some(false));
        assert_eq!(p.str("mode"), Some("MessageRate"));
        assert!(!p.is_set("value"));
        assert!(p.is_set("host"));
    }

    #[test]
    fn sources_are_read_in_order() {
        let p = run(&[], &[("host", "from-auth")], None).unwrap();
        assert_eq!(p.str("host"), Some("from-auth"));
        let p = run(&[("hostFromEnv", "HOST")], &[], Some(&[("HOST", "from-env")])).unwrap();
        assert_eq!(p.str("host"), Some("from-env"));
        let p = run(&[("hostFromEnv", "HOST")], &[], None).unwrap();
        assert!(matches!(&p.get("host").unwrap().origin, Origin::Unresolved(w) if w.contains("HOST")));
        let e = run(&[("hostFromEnv", "HOST")], &[], Some(&[])).unwrap_err();
        assert_eq!(e[0].param, "host");
        assert!(e[0].problem.contains("HOST"));
    }

    #[test]
    fn every_problem_is_reported_with_its_parameter() {
        let e = run(
            &[("value", "0"), ("pageSize", "x"), ("useRegex", "maybe")],
            &[],
            None,
        )
        .unwrap_err();
        let names: Vec<&str> = e.iter().map(|e| e.param.as_str()).collect();
        assert_eq!(names, ["host", "value", "pageSize", "useRegex"]);
        assert!(e[1].problem.contains("greater than 0"));
    }

    #[test]
    fn rules_apply() {
        let e = run(&[("host", "h")], &[("username", "u")], None).unwrap_err();
        assert_eq!(e[0].param, "username, password");
        let e = run(&[("host", "h"), ("useRegex", "true")], &[], None).unwrap_err();
        assert!(e[0].problem.contains("servers"));
    }

    #[test]
    fn secrets_are_hidden() {
        let p = run(
            &[("host", "h")],
            &[("username", "u"), ("password", "hunter2")],
            None,
        )
        .unwrap();
        assert_eq!(p.str("password"), Some("hunter2"));
        let json = p.redacted_json().to_string();
        assert!(!json.contains("hunter2") && json.contains("<redacted>"), "{json}");
    }

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(
            mask_userinfo("amqp://u:p@host:5672/vh"),
            "amqp://<redacted>@host:5672/vh"
        );
        assert_eq!(mask_userinfo("http://host/a@b"), "http://host/a@b");
        assert_eq!(mask_userinfo("plain"), "plain");
    }

    #[test]
    fn unknown_keys_warn() {
        let p = run(&[("host", "h"), ("hots", "x")], &[], None).unwrap();
        assert!(
            p.warnings.iter().any(|w| w.starts_with("hots:")),
            "{:?}",
            p.warnings
        );
    }
}

/// Helpers for the scalers' table-driven tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Parses metadata only.
    pub fn parse_meta(decl: &ScalerDecl, meta: &[(&str, &str)]) -> Result<ParsedParams, Vec<ParamError>> {
        parse_with(decl, meta, &[])
    }

    /// Parses metadata plus auth params.
    pub fn parse_with(
        decl: &ScalerDecl,
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
    ) -> Result<ParsedParams, Vec<ParamError>> {
        let (m, a) = (map(meta), map(auth));
        parse(
            decl,
            &TriggerInput {
                metadata: &m,
                auth_params: Some(&a),
                resolved_env: None,
            },
        )
    }
}
