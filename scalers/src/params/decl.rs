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
    /// One line saying what the parameter does (`ebb explain`, the scaler's reference page).
    pub doc: &'static str,
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
            doc: "",
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
    /// Sets the one-line description.
    pub const fn doc(mut self, text: &'static str) -> Self {
        self.doc = text;
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
    /// Every metadata key, declared or not, is kept for the scaler to pass on to its server
    /// ([`ParsedParams::passed_metadata`]); undeclared keys are then not warned about. Bounded by
    /// [`MAX_PASSED_KEYS`] and [`MAX_PASSED_BYTES`].
    PassMetadata,
}

/// The most metadata keys a [`Rule::PassMetadata`] trigger may pass on.
pub const MAX_PASSED_KEYS: usize = 100;
/// The most bytes (keys and values together) a [`Rule::PassMetadata`] trigger may pass on.
pub const MAX_PASSED_BYTES: usize = 64 * 1024;

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
    /// What users read about the trigger type (`ebb explain`, `docs/scalers/`).
    pub docs: DeclDocs,
}

/// The prose of a trigger type: what `ebb explain` prints and `docs/scalers/<type>.md` holds
/// besides the parameters.
#[derive(Debug, Clone, Copy)]
pub struct DeclDocs {
    /// One line: what the trigger measures.
    pub summary: &'static str,
    /// The rules `check` enforces beyond [`Rule`]s, one sentence each.
    pub checks: &'static [&'static str],
    /// An example trigger: its metadata, in order.
    pub example_metadata: &'static [(&'static str, &'static str)],
    /// The example's auth params (a TriggerAuthentication's parameters), in order.
    pub example_auth: &'static [(&'static str, &'static str)],
    /// Where ebb's trigger behaves differently from KEDA's, one sentence each.
    pub keda_differences: &'static [&'static str],
}

impl DeclDocs {
    /// No prose (test declarations).
    pub const EMPTY: DeclDocs = DeclDocs {
        summary: "",
        checks: &[],
        example_metadata: &[],
        example_auth: &[],
        keda_differences: &[],
    };
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

    /// A rule as a sentence, e.g. "At most one of `a` and `b` may be set." A flag named in a
    /// rule is "true" rather than "set", as the parser counts it.
    pub fn rule_sentence(&self, rule: &Rule) -> String {
        let is_flag = |name: &str| self.param(name).is_some_and(|p| p.ty == ParamType::Bool);
        let set = |name: &str| match is_flag(name) {
            true => format!("`{name}` is true"),
            false => format!("`{name}` is set"),
        };
        match rule {
            Rule::Exclusive(names) => format!("At most one of {} may be set.", joined(names, "and")),
            Rule::AnyOf(names) => format!("At least one of {} must be set.", joined(names, "or")),
            Rule::Together(names) => format!(
                "{} must be given together, or none of them.",
                joined(names, "and")
            ),
            Rule::Requires(first, second) => format!("When {}, `{second}` must be set too.", set(first)),
            Rule::PassMetadata => format!(
                "Every metadata key, declared or not, is passed on to the server as it is (a \
                 `<key>FromEnv` key with the variable's value); at most {MAX_PASSED_KEYS} keys and \
                 {} KiB.",
                MAX_PASSED_BYTES / 1024
            ),
        }
    }
}

/// `a`, `b` and `c` (with `word` before the last name).
fn joined(names: &[&str], word: &str) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} {word} {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PARAMS: &[Param] = &[Param::bool("flag"), Param::string("topic"), Param::string("a")];
    static DECL: ScalerDecl = ScalerDecl {
        trigger_type: "t",
        params: PARAMS,
        rules: &[],
        check: |_| Vec::new(),
        metric_detail: |_| String::new(),
        thresholds: |_| Thresholds {
            target: 1.0,
            activation: 0.0,
        },
        warnings: no_warnings,
        docs: DeclDocs::EMPTY,
    };

    #[test]
    fn rules_read_as_sentences() {
        let s = |rule| DECL.rule_sentence(&rule);
        assert_eq!(
            s(Rule::Exclusive(&["flag", "a"])),
            "At most one of `flag` and `a` may be set."
        );
        assert_eq!(
            s(Rule::AnyOf(&["a", "topic", "flag"])),
            "At least one of `a`, `topic` or `flag` must be set."
        );
        assert_eq!(
            s(Rule::Together(&["a", "topic"])),
            "`a` and `topic` must be given together, or none of them."
        );
        assert_eq!(
            s(Rule::Requires("flag", "topic")),
            "When `flag` is true, `topic` must be set too."
        );
        assert_eq!(
            s(Rule::Requires("a", "topic")),
            "When `a` is set, `topic` must be set too."
        );
    }
}
