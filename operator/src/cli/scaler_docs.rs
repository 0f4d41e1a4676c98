//! The per-trigger-type reference pages (`docs/scalers/<type>.md` and its `README.md` index),
//! rendered as Markdown from the same [`TypeView`] `ebb explain` prints, so the pages say what the
//! declarations say. Pure: [`pages`] gives every file's name and text; `ebb explain --write-docs
//! DIR` writes them ([`write_pages`]), and a test fails when the committed pages differ.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ebb_scalers::registry::KINDS;

use super::explain::{ExplainError, TypeView, param_facts, type_lines, type_view};

/// The command that regenerates the pages, as the pages and the test name it.
pub const REGENERATE: &str = "cargo run --bin ebb -- explain --write-docs docs/scalers";

/// Every page: (`<type>.md` or `README.md`, its Markdown), the index first.
pub fn pages() -> Vec<(String, String)> {
    let mut out = vec![("README.md".to_string(), index_page())];
    out.extend(KINDS.iter().map(|k| {
        (
            format!("{}.md", k.declaration.trigger_type),
            type_page(&type_view(k.declaration)),
        )
    }));
    out
}

/// Writes every page into `dir` (created when missing); returns the files written.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>, ExplainError> {
    let failed = |path: &Path| {
        let path = path.display().to_string();
        move |source| ExplainError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    let mut written = Vec::new();
    for (name, text) in pages() {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(failed(&path))?;
        written.push(path);
    }
    Ok(written)
}

fn generated_note() -> String {
    format!("<!-- Generated from the scalers' declarations by `{REGENERATE}`; do not edit. -->\n\n")
}

/// Text in a table cell: pipes escaped, never a line break.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A double-quoted YAML scalar.
fn yaml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `docs/scalers/README.md`: one line per type.
pub fn index_page() -> String {
    let mut out = generated_note();
    out.push_str("# Trigger types\n\n");
    out.push_str(
        "Every trigger type ebb supports, with its parameters, rules, an example and where it \
         differs from KEDA. `ebb explain` prints the same from the binary (`ebb explain TYPE -o \
         yaml` for tools).\n\n| type | what it measures |\n|---|---|\n",
    );
    for line in type_lines() {
        let _ = writeln!(
            out,
            "| [`{ty}`]({ty}.md) | {} |",
            cell(line.summary),
            ty = line.trigger_type
        );
    }
    out
}

/// One type's page: overview, parameters, rules, authentication, example, KEDA differences.
pub fn type_page(view: &TypeView) -> String {
    let ty = view.trigger_type;
    let mut out = generated_note();
    let _ = writeln!(out, "# `{ty}`\n\n{}\n", view.summary);
    out.push_str(
        "A value is read from each source in the order given under *from*: the trigger's \
         `metadata`, the parameters of its `authenticationRef` (a TriggerAuthentication), and \
         `<name>FromEnv`, naming an environment variable of the scale target's container.\n\n",
    );
    out.push_str("## Parameters\n\n| name | type | from | description |\n|---|---|---|---|\n");
    for p in &view.parameters {
        let mut description = String::new();
        if let Some(note) = p.deprecated {
            let _ = write!(description, "**Deprecated:** {note}. ");
        }
        description.push_str(p.description);
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            p.name,
            cell(&param_facts(p).join(", ")),
            cell(&p.from.join(", ")),
            cell(&description)
        );
    }
    if !view.rules.is_empty() {
        out.push_str("\n## Rules\n\n");
        for rule in &view.rules {
            let _ = writeln!(out, "- {rule}");
        }
    }
    let auth: Vec<_> = view
        .parameters
        .iter()
        .filter(|p| p.from.iter().any(|f| f == "TriggerAuthentication"))
        .collect();
    if !auth.is_empty() {
        out.push_str(
            "\n## Authentication parameters\n\nThese may come from a TriggerAuthentication (or \
             ClusterTriggerAuthentication) named by the trigger's `authenticationRef`, e.g. \
             through `secretTargetRef`; secret ones are never printed by ebb.\n\n",
        );
        for p in auth {
            let secret = if p.secret { " (secret)" } else { "" };
            let _ = writeln!(out, "- `{}`{secret}: {}", p.name, p.description);
        }
    }
    out.push_str("\n## Example\n\n```yaml\n");
    out.push_str(&example_yaml(view));
    out.push_str("```\n");
    if !view.keda_differences.is_empty() {
        out.push_str("\n## Differences from KEDA\n\n");
        for difference in &view.keda_differences {
            let _ = writeln!(out, "- {difference}");
        }
    }
    out
}

/// The example: a ScaledObject with the trigger and, when it has authentication parameters, the
/// TriggerAuthentication reading them from a Secret.
pub fn example_yaml(view: &TypeView) -> String {
    let ty = view.trigger_type;
    let auth_name = format!("{ty}-credentials");
    let mut out = String::from(
        "apiVersion: ebb.dev/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: worker\nspec:\n  \
         scaleTargetRef:\n    name: worker\n  triggers:\n",
    );
    // Triggers the HPA reads itself (cpu, memory) cannot scale from zero on their own.
    if ebb_scalers::registry::kind(ty).is_some_and(|k| k.is_resource()) {
        out = out.replace("\n  triggers:\n", "\n  minReplicaCount: 1\n  triggers:\n");
    }
    let _ = writeln!(out, "    - type: {ty}\n      metadata:");
    for entry in &view.example_metadata {
        let _ = writeln!(out, "        {}: {}", entry.name, yaml_string(entry.value));
    }
    if view.example_auth.is_empty() {
        return out;
    }
    let _ = writeln!(out, "      authenticationRef:\n        name: {auth_name}");
    let _ = write!(
        out,
        "---\napiVersion: ebb.dev/v1alpha1\nkind: TriggerAuthentication\nmetadata:\n  name: \
         {auth_name}\nspec:\n  secretTargetRef:\n"
    );
    for entry in &view.example_auth {
        let _ = writeln!(
            out,
            "    - parameter: {}\n      name: {auth_name}\n      key: {}",
            entry.name, entry.name
        );
    }
    out
}
