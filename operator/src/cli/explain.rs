//! `ebb explain [TYPE]`: the trigger types and their parameters, read from the scalers'
//! declarations (`ebb_scalers::registry::KINDS`), the only place parameters are described.
//!
//! Pure: [`explain`] turns a type name and an [`OutputFormat`] into the text to print; the
//! declaration's data goes through one serialisable view ([`TypeView`]) that the text, JSON and
//! YAML forms and the reference pages ([`super::scaler_docs`]) all render.

use std::fmt::Write as _;

use ebb_scalers::params::{Param, ParamType, ScalerDecl, Source};
use ebb_scalers::registry::KINDS;
use serde::Serialize;

/// The flags of `ebb explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// A trigger type (e.g. `kafka`); without it, every type with one line each.
    #[arg(value_name = "TYPE")]
    pub trigger_type: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Write the per-type reference pages (`<type>.md` and `README.md`) into this directory
    /// instead of printing (the repository keeps them in `docs/scalers`).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["trigger_type", "output"])]
    pub write_docs: Option<std::path::PathBuf>,
}

/// How `ebb explain` (and `ebb status`) print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned, readable text.
    Text,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// Why `ebb explain` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The type is not one ebb supports.
    #[error("unknown trigger type {given:?}; ebb supports {}", known.join(", "))]
    UnknownType {
        /// What was asked for.
        given: String,
        /// Every supported type.
        known: Vec<&'static str>,
    },
    /// The view could not be serialised.
    #[error("serialising the explanation: {0}")]
    Json(#[from] serde_json::Error),
    /// The view could not be serialised as YAML.
    #[error("serialising the explanation as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
    /// A reference page could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One trigger type in the list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TypeLine {
    /// The type, as in `triggers[].type`.
    #[serde(rename = "type")]
    pub trigger_type: &'static str,
    /// What it measures.
    pub summary: &'static str,
}

/// Everything said about one trigger type.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TypeView {
    /// The type, as in `triggers[].type`.
    #[serde(rename = "type")]
    pub trigger_type: &'static str,
    /// What it measures.
    pub summary: &'static str,
    /// Every parameter, in declaration order.
    pub parameters: Vec<ParamView>,
    /// The declared rules between parameters, then the scaler's own checks, one sentence each.
    pub rules: Vec<String>,
    /// An example trigger's metadata.
    pub example_metadata: Vec<Entry>,
    /// The example's authentication parameters (TriggerAuthentication).
    pub example_auth: Vec<Entry>,
    /// Where ebb behaves differently from KEDA.
    pub keda_differences: Vec<&'static str>,
}

/// One parameter of the example.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Entry {
    /// The parameter.
    pub name: &'static str,
    /// Its example value.
    pub value: &'static str,
}

fn entries(pairs: &[(&'static str, &'static str)]) -> Vec<Entry> {
    pairs.iter().map(|&(name, value)| Entry { name, value }).collect()
}

/// One parameter, as users read it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParamView {
    /// Its name in `metadata` (and in a TriggerAuthentication).
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean`, `enum` or `list`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// The values an `enum` takes (matched case-insensitively).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<&'static str>,
    /// The value used when no source gives one.
    pub default: Option<&'static str>,
    /// Missing (and without default) is an error.
    pub required: bool,
    /// Where the value may come from, in lookup order: `metadata`, `TriggerAuthentication`,
    /// `<name>FromEnv`.
    pub from: Vec<String>,
    /// A credential: never printed by ebb.
    pub secret: bool,
    /// The bound a number must respect, e.g. `> 0` or `>= 1`.
    pub bounds: Option<String>,
    /// Why and how to stop using it.
    pub deprecated: Option<&'static str>,
    /// What it does.
    pub description: &'static str,
}

/// The JSON/YAML and text name of a parameter type.
fn type_name(ty: ParamType) -> &'static str {
    match ty {
        ParamType::String => "string",
        ParamType::Int => "integer",
        ParamType::Float => "number",
        ParamType::Bool => "boolean",
        ParamType::Enum(_) => "enum",
        ParamType::List => "list",
    }
}

/// Where a parameter may come from, as a user writes it.
pub fn source_name(param: &Param, source: Source) -> String {
    match source {
        Source::Metadata => "metadata".to_string(),
        Source::AuthParams => "TriggerAuthentication".to_string(),
        Source::ResolvedEnv => format!("{}FromEnv", param.name),
    }
}

/// The view of one parameter.
pub fn param_view(param: &Param) -> ParamView {
    let values = match param.ty {
        ParamType::Enum(values) => values.to_vec(),
        _ => Vec::new(),
    };
    let bounds = param.min.map(|min| {
        let op = if param.min_exclusive { ">" } else { ">=" };
        format!("{op} {min}")
    });
    ParamView {
        name: param.name,
        ty: type_name(param.ty),
        values,
        default: param.default,
        required: param.required,
        from: param.from.iter().map(|s| source_name(param, *s)).collect(),
        secret: param.secret,
        bounds,
        deprecated: param.deprecated,
        description: param.doc,
    }
}

/// The view of one trigger type.
pub fn type_view(decl: &ScalerDecl) -> TypeView {
    let mut rules: Vec<String> = decl.rules.iter().map(|r| decl.rule_sentence(r)).collect();
    rules.extend(decl.docs.checks.iter().map(|c| c.to_string()));
    TypeView {
        trigger_type: decl.trigger_type,
        summary: decl.docs.summary,
        parameters: decl.params.iter().map(param_view).collect(),
        rules,
        example_metadata: entries(decl.docs.example_metadata),
        example_auth: entries(decl.docs.example_auth),
        keda_differences: decl.docs.keda_differences.to_vec(),
    }
}

/// Every supported type with its summary, in the registry's order.
pub fn type_lines() -> Vec<TypeLine> {
    KINDS
        .iter()
        .map(|k| TypeLine {
            trigger_type: k.declaration.trigger_type,
            summary: k.declaration.docs.summary,
        })
        .collect()
}

/// The declaration of `trigger_type`, or the error naming the supported ones.
pub fn find(trigger_type: &str) -> Result<&'static ScalerDecl, ExplainError> {
    ebb_scalers::registry::declaration(trigger_type).ok_or_else(|| ExplainError::UnknownType {
        given: trigger_type.to_string(),
        known: ebb_scalers::registry::supported_types().collect(),
    })
}

/// What `ebb explain [TYPE] -o FORMAT` prints.
pub fn explain(trigger_type: Option<&str>, format: OutputFormat) -> Result<String, ExplainError> {
    match trigger_type {
        None => {
            let lines = type_lines();
            Ok(match format {
                OutputFormat::Text => list_text(&lines),
                OutputFormat::Json => serde_json::to_string_pretty(&lines)? + "\n",
                OutputFormat::Yaml => serde_saphyr::to_string(&lines)?,
            })
        }
        Some(ty) => {
            let view = type_view(find(ty)?);
            Ok(match format {
                OutputFormat::Text => type_text(&view),
                OutputFormat::Json => serde_json::to_string_pretty(&view)? + "\n",
                OutputFormat::Yaml => serde_saphyr::to_string(&view)?,
            })
        }
    }
}

/// The list of types as text: one aligned line each.
pub fn list_text(lines: &[TypeLine]) -> String {
    let width = lines.iter().map(|l| l.trigger_type.len()).max().unwrap_or(0);
    let mut out = String::new();
    for line in lines {
        let _ = writeln!(out, "{:width$}  {}", line.trigger_type, line.summary);
    }
    out.push_str("\nParameters of one type: ebb explain TYPE\n");
    out
}

/// The short facts of a parameter: type, values, required or default, bounds, secret.
pub fn param_facts(p: &ParamView) -> Vec<String> {
    let mut facts = vec![match p.values.is_empty() {
        true => p.ty.to_string(),
        false => format!("one of {}", p.values.join(", ")),
    }];
    if p.required {
        facts.push("required".to_string());
    }
    if let Some(default) = p.default {
        facts.push(format!("default {default}"));
    }
    if let Some(bounds) = &p.bounds {
        facts.push(bounds.clone());
    }
    if p.secret {
        facts.push("secret".to_string());
    }
    facts
}

/// One type as text: its summary, each parameter, the rules.
pub fn type_text(view: &TypeView) -> String {
    let mut out = format!("{}: {}\n\nPARAMETERS\n", view.trigger_type, view.summary);
    for p in &view.parameters {
        let _ = writeln!(out, "  {}  ({})", p.name, param_facts(p).join(", "));
        let _ = writeln!(out, "      {}", p.description);
        let _ = writeln!(out, "      from: {}", p.from.join(", "));
        if let Some(note) = p.deprecated {
            let _ = writeln!(out, "      deprecated: {note}");
        }
    }
    if !view.rules.is_empty() {
        out.push_str("\nRULES\n");
        for rule in &view.rules {
            let _ = writeln!(out, "  - {rule}");
        }
    }
    let _ = writeln!(
        out,
        "\nAn example and the differences from KEDA: docs/scalers/{}.md",
        view.trigger_type
    );
    out
}
