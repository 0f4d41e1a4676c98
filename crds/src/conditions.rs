//! Status condition types and reasons (KEDA's vocabulary).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One status condition, as KEDA writes them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type: Ready, Active, Fallback or Paused.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Condition type `Ready`.
pub const READY: &str = "Ready";
/// Condition type `Active`.
pub const ACTIVE: &str = "Active";
/// Condition type `Fallback`.
pub const FALLBACK: &str = "Fallback";
/// Condition type `Paused`.
pub const PAUSED: &str = "Paused";

/// Reasons used on the conditions (KEDA's names where KEDA has one).
pub mod reason {
    /// Ready=True.
    pub const SCALED_OBJECT_READY: &str = "ScaledObjectReady";
    /// Ready=False: the spec failed validation or reconciling failed.
    pub const SCALED_OBJECT_CHECK_FAILED: &str = "ScaledObjectCheckFailed";
    /// Ready=False: every trigger errors and no fallback is set.
    pub const TRIGGER_ERROR: &str = "TriggerError";
    /// Ready=Unknown: some triggers error.
    pub const PARTIAL_TRIGGER_ERROR: &str = "PartialTriggerError";
    /// Ready=False: another ScaledObject or a foreign HPA already scales the target.
    pub const TARGET_CONFLICT: &str = "TargetConflict";
    /// Active=True.
    pub const SCALER_ACTIVE: &str = "ScalerActive";
    /// Active=False.
    pub const SCALER_NOT_ACTIVE: &str = "ScalerNotActive";
    /// Active=False, waiting out the cooldown.
    pub const SCALER_COOLDOWN: &str = "ScalerCooldown";
    /// Active=Unknown.
    pub const UNKNOWN_STATE: &str = "UnknownState";
    /// Fallback=True.
    pub const FALLBACK_EXISTS: &str = "FallbackExists";
    /// Fallback=False.
    pub const NO_FALLBACK_FOUND: &str = "NoFallbackFound";
    /// Paused=True.
    pub const SCALED_OBJECT_PAUSED: &str = "ScaledObjectPaused";
    /// Paused=False.
    pub const SCALED_OBJECT_UNPAUSED: &str = "ScaledObjectUnpaused";
}
