//! The per-trigger part of an `ebb validate` report, shared by ScaledObjects and ScaledJobs: each
//! compiled trigger's missing references, input and parameter problems, warnings and parsed
//! parameters (secrets redacted).

use ebb_crds::Trigger;

use crate::cli::validate::{CheckOptions, ObjectReport, Problem, TriggerReport};
use crate::compile::triggers::CompiledTrigger;

/// Adds each compiled trigger's findings to `report`: problems (a missing reference too, under
/// `strict`), warnings, and one [`TriggerReport`] per trigger.
pub(crate) fn report_triggers(
    triggers: &[Trigger],
    compiled: Vec<CompiledTrigger>,
    report: &mut ObjectReport,
    options: CheckOptions,
) {
    let aws_types = aws_identity_types();
    for (trigger, compiled) in triggers.iter().zip(compiled) {
        let inputs = &compiled.inputs;
        let at = compiled.field();
        for missing in inputs.missing.iter().filter(|_| !options.quiet_missing) {
            if options.strict {
                report.problems.push(Problem {
                    field: at.clone(),
                    message: missing.clone(),
                });
            } else {
                report
                    .warnings
                    .push(format!("{at}: {missing}; its parameters are not checked"));
            }
        }
        for error in &inputs.errors {
            report.problems.push(Problem {
                field: at.clone(),
                message: error.clone(),
            });
        }
        if inputs.pod_identity == Some(ebb_crds::PodIdentityProvider::Aws)
            && !aws_types.contains(&trigger.type_.as_str())
        {
            report.warnings.push(format!(
                "{at}.authenticationRef: podIdentity aws is only used by {} triggers; {} ignores it",
                aws_types.join(" and "),
                trigger.type_
            ));
        }
        report
            .warnings
            .extend(compiled.warnings().iter().map(|w| format!("spec.{w}")));
        match &compiled.parsed {
            Ok(parsed) => {
                report.warnings.extend(
                    parsed
                        .params
                        .warnings
                        .iter()
                        .map(|w| format!("{at}.metadata.{w}")),
                );
                report.triggers.push(TriggerReport {
                    index: compiled.index,
                    type_: trigger.type_.clone(),
                    metric_name: Some(parsed.metric_name.clone()),
                    params: Some(parsed.params.redacted_json()),
                    pod_identity: inputs.pod_identity,
                });
            }
            Err(e) => {
                for pe in &e.errors {
                    let field = if pe.param == "type" {
                        format!("{at}.type")
                    } else {
                        format!("{at}.metadata.{}", pe.param)
                    };
                    let message = inputs.scrub(&format!("({}) {}", trigger.type_, pe.problem));
                    report.problems.push(Problem { field, message });
                }
                report.triggers.push(TriggerReport {
                    index: compiled.index,
                    type_: trigger.type_.clone(),
                    metric_name: None,
                    params: None,
                    pod_identity: inputs.pod_identity,
                });
            }
        }
    }
}

/// The trigger types that read AWS credentials (their declaration has an `awsRegion`
/// parameter), and so are the ones `podIdentity: aws` serves.
fn aws_identity_types() -> Vec<&'static str> {
    ebb_scalers::supported_types()
        .filter(|t| ebb_scalers::declaration(t).is_some_and(|d| d.param("awsRegion").is_some()))
        .collect()
}
