//! Whether the leader must renew the certificates in the Secret: a pure function of what the
//! Secret holds, the names the serving certificate must cover and the time.
//!
//! - The serving certificate is renewed (same CA) when it is missing or unreadable, not signed by
//!   the CA, has less than a third of its validity left, or does not cover every
//!   `--metrics-adapter-dns-names` entry.
//! - Everything is regenerated (a new CA: not seamless, see ARCHITECTURE.md) only when the CA is
//!   missing or unreadable, or has less than [`CA_MIN_REMAINING_SECS`] left.

use super::issue::CertInfo;

/// A CA with less validity left than this is replaced (with a new serving certificate).
pub const CA_MIN_REMAINING_SECS: i64 = 30 * 24 * 3600;

/// What the Secret holds, as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFacts {
    /// The CA certificate, when `ca.crt` parses and `ca.key` is a usable key.
    pub ca: Option<CertInfo>,
    /// The serving certificate, when `tls.crt` parses and `tls.key` is a key that matches it.
    pub serving: Option<CertInfo>,
    /// Whether `tls.crt` carries the CA's signature.
    pub serving_signed_by_ca: bool,
}

/// Why the serving certificate is renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewReason {
    /// `tls.crt`/`tls.key` are missing, unreadable or do not match.
    Unusable,
    /// It is not signed by the CA in the Secret.
    NotSignedByCa,
    /// Less than a third of its validity is left.
    ExpiresSoon {
        /// Seconds left (negative: expired).
        remaining_secs: i64,
    },
    /// It does not cover these names.
    NamesMissing(Vec<String>),
}

/// Why the CA is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegenerateReason {
    /// `ca.crt`/`ca.key` are missing or unreadable.
    CaUnusable,
    /// The CA has less than [`CA_MIN_REMAINING_SECS`] left.
    CaExpiresSoon {
        /// Seconds left (negative: expired).
        remaining_secs: i64,
    },
}

/// What the leader does with the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Keep,
    /// Issue a new serving certificate from the same CA.
    RenewServing(RenewReason),
    /// Generate a new CA and serving certificate.
    Regenerate(RegenerateReason),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Keep => f.write_str("certificates are current"),
            Verdict::RenewServing(RenewReason::Unusable) => {
                f.write_str("the serving certificate or its key is missing or unusable")
            }
            Verdict::RenewServing(RenewReason::NotSignedByCa) => {
                f.write_str("the serving certificate is not signed by the CA")
            }
            Verdict::RenewServing(RenewReason::ExpiresSoon { remaining_secs }) => write!(
                f,
                "less than a third of the serving certificate's validity is left ({}h)",
                remaining_secs / 3600
            ),
            Verdict::RenewServing(RenewReason::NamesMissing(names)) => {
                write!(f, "the serving certificate does not cover {}", names.join(", "))
            }
            Verdict::Regenerate(RegenerateReason::CaUnusable) => {
                f.write_str("the CA or its key is missing or unusable")
            }
            Verdict::Regenerate(RegenerateReason::CaExpiresSoon { remaining_secs }) => {
                write!(f, "the CA expires in {} days", remaining_secs / (24 * 3600))
            }
        }
    }
}

/// What to do with the Secret's certificates at `now` (Unix seconds) so that the serving
/// certificate covers `dns_names`.
pub fn assess(facts: &SecretFacts, dns_names: &[String], now: i64) -> Verdict {
    let Some(ca) = &facts.ca else {
        return Verdict::Regenerate(RegenerateReason::CaUnusable);
    };
    let ca_remaining = ca.not_after - now;
    if ca_remaining < CA_MIN_REMAINING_SECS {
        return Verdict::Regenerate(RegenerateReason::CaExpiresSoon {
            remaining_secs: ca_remaining,
        });
    }
    let Some(serving) = &facts.serving else {
        return Verdict::RenewServing(RenewReason::Unusable);
    };
    if !facts.serving_signed_by_ca {
        return Verdict::RenewServing(RenewReason::NotSignedByCa);
    }
    let validity = serving.not_after - serving.not_before;
    let remaining = serving.not_after - now;
    // remaining < validity / 3, without rounding.
    if remaining.saturating_mul(3) < validity {
        return Verdict::RenewServing(RenewReason::ExpiresSoon {
            remaining_secs: remaining,
        });
    }
    let missing: Vec<String> = dns_names
        .iter()
        .filter(|want| !serving.names.iter().any(|have| have.eq_ignore_ascii_case(want)))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Verdict::RenewServing(RenewReason::NamesMissing(missing));
    }
    Verdict::Keep
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600;
    const NOW: i64 = 1_800_000_000;

    fn facts(serving_from: i64, serving_days: i64, names: &[&str]) -> SecretFacts {
        SecretFacts {
            ca: Some(CertInfo {
                not_before: NOW - 10 * DAY,
                not_after: NOW + 3000 * DAY,
                names: vec![],
            }),
            serving: Some(CertInfo {
                not_before: serving_from,
                not_after: serving_from + serving_days * DAY,
                names: names.iter().map(|n| (*n).to_owned()).collect(),
            }),
            serving_signed_by_ca: true,
        }
    }

    fn dns() -> Vec<String> {
        vec!["ebb-metrics.ebb-system.svc".into()]
    }

    #[test]
    fn a_fresh_certificate_covering_the_names_is_kept() {
        let f = facts(NOW - DAY, 365, &["ebb-metrics.ebb-system.svc", "localhost"]);
        assert_eq!(assess(&f, &dns(), NOW), Verdict::Keep);
        // Names compare without case; extra names do no harm.
        assert_eq!(
            assess(&f, &["EBB-METRICS.ebb-system.svc".into()], NOW),
            Verdict::Keep
        );
        assert_eq!(assess(&f, &[], NOW), Verdict::Keep);
    }

    #[test]
    fn renewal_starts_when_a_third_of_the_validity_is_left() {
        let names = ["ebb-metrics.ebb-system.svc"];
        // 300-day certificate: renew once fewer than 100 days remain.
        let f = facts(NOW - 199 * DAY, 300, &names);
        assert_eq!(assess(&f, &dns(), NOW), Verdict::Keep, "101 days left");
        let f = facts(NOW - 200 * DAY, 300, &names);
        assert_eq!(assess(&f, &dns(), NOW), Verdict::Keep, "exactly a third left");
        let f = facts(NOW - 200 * DAY - 1, 300, &names);
        assert_eq!(
            assess(&f, &dns(), NOW),
            Verdict::RenewServing(RenewReason::ExpiresSoon {
                remaining_secs: 100 * DAY - 1
            })
        );
        let f = facts(NOW - 400 * DAY, 300, &names);
        assert!(matches!(
            assess(&f, &dns(), NOW),
            Verdict::RenewServing(RenewReason::ExpiresSoon { remaining_secs }) if remaining_secs < 0
        ));
    }

    #[test]
    fn missing_names_renew_the_serving_certificate() {
        let f = facts(NOW, 365, &["old.ebb-system.svc"]);
        assert_eq!(
            assess(&f, &dns(), NOW),
            Verdict::RenewServing(RenewReason::NamesMissing(dns()))
        );
    }

    #[test]
    fn unusable_or_foreign_serving_certificates_are_renewed() {
        let mut f = facts(NOW, 365, &["ebb-metrics.ebb-system.svc"]);
        f.serving_signed_by_ca = false;
        assert_eq!(
            assess(&f, &dns(), NOW),
            Verdict::RenewServing(RenewReason::NotSignedByCa)
        );
        f.serving = None;
        assert_eq!(
            assess(&f, &dns(), NOW),
            Verdict::RenewServing(RenewReason::Unusable)
        );
    }

    #[test]
    fn an_unusable_or_expiring_ca_regenerates_everything() {
        let mut f = facts(NOW, 365, &["ebb-metrics.ebb-system.svc"]);
        if let Some(ca) = &mut f.ca {
            ca.not_after = NOW + 29 * DAY;
        }
        assert_eq!(
            assess(&f, &dns(), NOW),
            Verdict::Regenerate(RegenerateReason::CaExpiresSoon {
                remaining_secs: 29 * DAY
            })
        );
        f.ca = None;
        assert_eq!(
            assess(&f, &dns(), NOW),
            Verdict::Regenerate(RegenerateReason::CaUnusable)
        );
    }

    #[test]
    fn verdicts_read_as_sentences() {
        let v = Verdict::RenewServing(RenewReason::NamesMissing(dns()));
        assert_eq!(
            v.to_string(),
            "the serving certificate does not cover ebb-metrics.ebb-system.svc"
        );
    }
}
