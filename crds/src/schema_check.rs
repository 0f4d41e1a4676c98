//! Checks a JSON object against a CRD's OpenAPI schema the way the API server does: types,
//! required fields, minimums, lengths, item counts and enums are errors; fields the schema does not
//! know are reported separately, because the API server silently drops them.

use serde_json::Value as Json;

use crate::validation::FieldError;

/// What a schema check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SchemaFindings {
    /// Violations: the API server would reject the object.
    pub errors: Vec<FieldError>,
    /// Fields the schema does not declare: the API server would drop them.
    pub unknown_fields: Vec<String>,
}

/// Checks `value` (found at `path`) against `schema` (an `openAPIV3Schema` node as JSON).
pub fn check(schema: &Json, value: &Json, path: &str) -> SchemaFindings {
    let mut findings = SchemaFindings::default();
    walk(schema, value, path, &mut findings);
    findings
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn walk(schema: &Json, value: &Json, path: &str, out: &mut SchemaFindings) {
    if value.is_null() {
        if schema.get("nullable").and_then(Json::as_bool) != Some(true) {
            out.errors.push(FieldError::new(path, "must not be null"));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string").and_then(Json::as_bool) == Some(true) {
        if !matches!(type_name(value), "integer" | "string") {
            out.errors.push(FieldError::new(
                path,
                format!("must be an integer or a string, got {}", type_name(value)),
            ));
        }
        return;
    }
    let preserve_unknown = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Json::as_bool)
        == Some(true);
    if let Some(expected) = schema.get("type").and_then(Json::as_str) {
        let actual = type_name(value);
        let ok = expected == actual || (expected == "number" && actual == "integer");
        if !ok {
            out.errors.push(FieldError::new(
                path,
                format!("must be of type {expected}, got {actual}"),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Json::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        out.errors.push(FieldError::new(
            path,
            format!("must be one of {}, got {value}", list.join(", ")),
        ));
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Json::as_f64), value.as_f64())
        && n < min
    {
        out.errors.push(FieldError::new(
            path,
            format!("must be greater than or equal to {min}, got {value}"),
        ));
    }
    if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Json::as_u64), value.as_str())
        && (s.chars().count() as u64) < min
    {
        out.errors.push(FieldError::new(
            path,
            format!("must be at least {min} characters long"),
        ));
    }
    match value {
        Json::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Json::as_u64)
                && (items.len() as u64) < min
            {
                out.errors
                    .push(FieldError::new(path, format!("must have at least {min} item(s)")));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Json::Object(map) => {
            if let Some(required) = schema.get("required").and_then(Json::as_array) {
                for name in required.iter().filter_map(Json::as_str) {
                    if !map.contains_key(name) {
                        out.errors.push(FieldError::new(join(path, name), "is required"));
                    }
                }
            }
            let properties = schema.get("properties").and_then(Json::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                // The API server owns these at the root, whatever the schema says.
                if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child_path = join(path, key);
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    walk(child_schema, child, &child_path, out);
                } else if let Some(add) = additional.filter(|a| a.is_object()) {
                    walk(add, child, &child_path, out);
                } else if !preserve_unknown
                    && additional.and_then(Json::as_bool) != Some(true)
                    && properties.is_some()
                {
                    out.unknown_fields.push(child_path);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScaledObject;
    use kube::CustomResourceExt;
    use serde_json::json;

    fn so_schema() -> Json {
        let crd = serde_json::to_value(ScaledObject::crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn finds_violations_and_unknown_fields() {
        let obj = json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
            "spec": {
                "scaleTargetRef": {"name": ""},
                "pollingInterval": 0,
                "pollingIntreval": 5,
                "fallback": {"failureThreshold": 3, "replicas": 1, "behavior": "sometimes"},
                "triggers": [{"type": "kafka", "metadata": {"a": 1}}]
            }
        });
        let f = check(&so_schema(), &obj, "");
        let fields: Vec<&str> = f.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.fallback.behavior",
                "spec.pollingInterval",
                "spec.scaleTargetRef.name",
                "spec.triggers[0].metadata.a"
            ]
        );
        assert_eq!(f.unknown_fields, ["spec.pollingIntreval"]);
    }

    #[test]
    fn missing_required_and_empty_triggers() {
        let obj = json!({"spec": {"triggers": []}});
        let f = check(&so_schema(), &obj, "");
        let fields: Vec<&str> = f.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.scaleTargetRef", "spec.triggers"]);
    }

    #[test]
    fn hpa_behavior_passes_through() {
        let obj = json!({"spec": {"scaleTargetRef": {"name": "w"}, "triggers": [{"type": "t", "metadata": {}}],
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 10,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}}}}}});
        let f = check(&so_schema(), &obj, "");
        assert!(f.errors.is_empty() && f.unknown_fields.is_empty(), "{f:?}");
    }
}
