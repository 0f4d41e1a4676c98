//! What a scaler declares: its parameters ([`Param`]), where each may come from ([`Source`]), their
//! types and bounds, the [`Rule`]s between them, and the whole [`ScalerDecl`] the parser is driven by.

use serde::Serialize;

use super::{ParamError, ParsedParams};

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
