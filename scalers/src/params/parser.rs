//! The one parser: reads each declared parameter from its sources ([`TriggerInput`]), converts and
//! checks it, applies the declaration's rules and check, and reports every problem at once
//! ([`ParamError`], [`TriggerParseError`]). Secret values never appear in an error.

use std::collections::BTreeMap;
use std::fmt;

use super::{
    MAX_PASSED_BYTES, MAX_PASSED_KEYS, Origin, Param, ParamType, ParamValue, Parsed, ParsedParams,
    PassedMetadata, Rule, ScalerDecl, Source, mask_userinfo,
};

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
    let passes = decl.rules.iter().any(|r| matches!(r, Rule::PassMetadata));
    if passes {
        match passed_metadata(input) {
            Ok(passed) => parsed.passed = passed,
            Err(e) => errors.push(e),
        }
    }
    for key in input.metadata.keys().filter(|_| !passes) {
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

/// The metadata a [`Rule::PassMetadata`] trigger passes on, as KEDA's external scaler does: every
/// key as given, except that `<key>FromEnv` carries the variable's value (left out where the
/// environment is not available here). Bounded in keys and bytes.
fn passed_metadata(input: &TriggerInput<'_>) -> Result<PassedMetadata, ParamError> {
    if input.metadata.len() > MAX_PASSED_KEYS {
        return Err(ParamError::new(
            "metadata",
            format!(
                "has {} keys; at most {MAX_PASSED_KEYS} are passed to the server",
                input.metadata.len()
            ),
        ));
    }
    let mut out = BTreeMap::new();
    let mut bytes = 0usize;
    for (key, value) in input.metadata {
        let value = match key.strip_suffix("FromEnv") {
            Some(base) if !base.is_empty() => match input.resolved_env {
                None => continue,
                Some(env) => match env.get(value).filter(|v| !v.is_empty()) {
                    Some(v) => v,
                    None => {
                        return Err(ParamError::new(
                            key.as_str(),
                            format!(
                                "names environment variable {value:?}, which the target container does not set"
                            ),
                        ));
                    }
                },
            },
            _ => value,
        };
        bytes = bytes.saturating_add(key.len() + value.len());
        if bytes > MAX_PASSED_BYTES {
            return Err(ParamError::new(
                "metadata",
                format!(
                    "is over {} KiB; at most that much is passed to the server",
                    MAX_PASSED_BYTES / 1024
                ),
            ));
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(PassedMetadata(out))
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
        Rule::PassMetadata => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{AUTH, DeclDocs, META_AUTH_ENV, Thresholds, no_warnings};

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
        docs: DeclDocs::EMPTY,
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
    fn passed_metadata_is_whole_bounded_and_quiet() {
        static PASSING: ScalerDecl = ScalerDecl {
            trigger_type: "passing",
            params: PARAMS,
            rules: &[Rule::PassMetadata],
            check: |_| Vec::new(),
            metric_detail: |_| String::new(),
            thresholds: |_| Thresholds {
                target: 1.0,
                activation: 0.0,
            },
            warnings: no_warnings,
            docs: DeclDocs::EMPTY,
        };
        let parse_passing = |meta: &BTreeMap<String, String>, env: Option<&BTreeMap<String, String>>| {
            let auth = BTreeMap::new();
            parse(
                &PASSING,
                &TriggerInput {
                    metadata: meta,
                    auth_params: Some(&auth),
                    resolved_env: env,
                },
            )
        };
        let meta = map(&[("host", "h"), ("queue", "q"), ("tokenFromEnv", "TOKEN")]);
        let env = map(&[("TOKEN", "s3cret")]);
        let p = parse_passing(&meta, Some(&env)).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(
            p.passed_metadata().0,
            map(&[("host", "h"), ("queue", "q"), ("tokenFromEnv", "s3cret")])
        );
        let debug = format!("{p:?}");
        assert!(
            debug.contains("tokenFromEnv") && !debug.contains("s3cret"),
            "{debug}"
        );
        // Offline the env value is left out; a variable the container lacks is an error.
        let offline = parse_passing(&meta, None).unwrap();
        assert!(!offline.passed_metadata().0.contains_key("tokenFromEnv"));
        let e = parse_passing(&meta, Some(&BTreeMap::new())).unwrap_err();
        assert_eq!(e[0].param, "tokenFromEnv");
        // Bounded in keys and in bytes.
        let many: BTreeMap<String, String> = (0..=MAX_PASSED_KEYS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .chain([("host".to_string(), "h".to_string())])
            .collect();
        assert_eq!(parse_passing(&many, None).unwrap_err()[0].param, "metadata");
        let big = map(&[("host", "h"), ("blob", &"x".repeat(MAX_PASSED_BYTES))]);
        assert_eq!(parse_passing(&big, None).unwrap_err()[0].param, "metadata");
        // Other declarations keep nothing.
        let p = run(&[("host", "h")], &[], None).unwrap();
        assert!(p.passed_metadata().0.is_empty());
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
