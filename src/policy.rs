//! Who may ask what: the agency registry and the one place that checks a
//! call against an agency's policy.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::attest::Alg;

use crate::domain::{Assessment, CheckCall, FieldChecks, NameMatchLevel, Purpose, Reason, Verdict};

/// How much of an answer an agency sees beyond the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetailLevel {
    /// The verdict only: an unknown number and a wrong name look the same.
    None,
    /// The verdict and its reason.
    Reason,
    /// The reason and the per-field checks.
    Fields,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NameLevelConfig {
    Exact,
    Folded,
    Partial,
}

impl From<NameLevelConfig> for NameMatchLevel {
    fn from(c: NameLevelConfig) -> Self {
        match c {
            NameLevelConfig::Exact => Self::Exact,
            NameLevelConfig::Folded => Self::Folded,
            NameLevelConfig::Partial => Self::Partial,
        }
    }
}

/// What a registered caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Checks people: `VerificationService`.
    #[default]
    Agency,
    /// Runs the service, or answers citizens' questions for the ombudsman:
    /// `AuditService`, never checks.
    Operator,
}

/// One agency (or operator) of the registry, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyConfig {
    /// Stable id: the attestation's `aud`.
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub role: Role,
    /// What it may check for (an agency's; an operator checks nothing).
    #[serde(default)]
    pub purposes: Vec<Purpose>,
    #[serde(default = "default_detail")]
    pub detail: DetailLevel,
    /// The least strict name level it may ask for.
    #[serde(default = "default_name_level")]
    pub least_strict_name_match: NameLevelConfig,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Checks per second, sustained (absent: no limit).
    #[serde(default)]
    pub rate_per_second: Option<u32>,
    /// Checks at once above the sustained rate (default: one second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Checks per UTC day (absent: no limit).
    #[serde(default)]
    pub daily_quota: Option<u64>,
    /// May it use `VerifyBatch`?
    #[serde(default)]
    pub allow_batch: bool,
    /// May it use `VerifyCardQr`?
    #[serde(default)]
    pub allow_card_qr: bool,
    /// Optional pins: SHA-256 fingerprints (hex, colons allowed) of the
    /// client certificates that may act as this entry. Empty: any
    /// certificate of the agency CA that names it.
    #[serde(default)]
    pub certificate_sha256: Vec<String>,
    /// How its attestations are signed: `"EdDSA"` (Ed25519) or `"ES256"`
    /// (P-256, for JOSE libraries without EdDSA).
    #[serde(default)]
    pub attestation_alg: Alg,
}

fn default_detail() -> DetailLevel {
    DetailLevel::None
}

fn default_name_level() -> NameLevelConfig {
    NameLevelConfig::Exact
}

fn default_true() -> bool {
    true
}

impl AgencyConfig {
    /// The agency of the embedded default: every purpose, full detail.
    pub fn demo(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: "Demo agency".into(),
            role: Role::Agency,
            purposes: Purpose::ALL.to_vec(),
            detail: DetailLevel::Fields,
            least_strict_name_match: NameLevelConfig::Partial,
            enabled: true,
            rate_per_second: None,
            burst: None,
            daily_quota: None,
            allow_batch: true,
            allow_card_qr: true,
            certificate_sha256: Vec::new(),
            attestation_alg: Alg::EdDsa,
        }
    }

    /// The operator of the embedded default: the local caller, for the
    /// audit service.
    pub fn operator(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: "Local operator".into(),
            role: Role::Operator,
            purposes: Vec::new(),
            detail: DetailLevel::None,
            least_strict_name_match: NameLevelConfig::Exact,
            enabled: true,
            rate_per_second: None,
            burst: None,
            daily_quota: None,
            allow_batch: false,
            allow_card_qr: false,
            certificate_sha256: Vec::new(),
            attestation_alg: Alg::EdDsa,
        }
    }
}

/// An agency's rate and quota, as the registry grants them; `None` is
/// unlimited. (How they are counted is `quota`'s.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub rate_per_second: Option<u32>,
    /// Checks allowed at once (at least 1).
    pub burst: u32,
    pub daily: Option<u64>,
}

/// An agency as a call sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    pub id: String,
    /// The display name, for the access history.
    pub name: String,
    pub role: Role,
    pub purposes: Vec<Purpose>,
    pub detail: DetailLevel,
    pub least_strict_name_match: NameMatchLevel,
    pub limits: Limits,
    pub allow_batch: bool,
    pub allow_card_qr: bool,
    /// SHA-256 of the certificates that may act as it; empty: any.
    pub pins: Vec<[u8; 32]>,
    /// How its attestations are signed.
    pub attestation_alg: Alg,
}

/// Why a call is refused. Each is a stable reason code on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the caller is not a known, enabled agency")]
    UnknownAgency,
    #[error("only agencies check people")]
    NotAnAgency,
    #[error("only operators may read the audit trail")]
    NotAnOperator,
    #[error("the agency may not check for this purpose")]
    PurposeNotAllowed,
    #[error("the agency may not ask for a name match this loose")]
    NameMatchNotAllowed,
    #[error("the agency may not use batch verification")]
    BatchNotAllowed,
    #[error("the agency may not check card QR codes")]
    CardQrNotAllowed,
    #[error("the client certificate is not one pinned for its registry entry")]
    CertificateNotPinned,
}

impl Denial {
    pub fn reason_code(self) -> &'static str {
        match self {
            Self::UnknownAgency => "AGENCY_UNKNOWN",
            Self::NotAnAgency => "AGENCY_ROLE_REQUIRED",
            Self::NotAnOperator => "OPERATOR_ROLE_REQUIRED",
            Self::PurposeNotAllowed => "PURPOSE_NOT_ALLOWED",
            Self::NameMatchNotAllowed => "NAME_MATCH_NOT_ALLOWED",
            Self::BatchNotAllowed => "BATCH_NOT_ALLOWED",
            Self::CardQrNotAllowed => "CARD_QR_NOT_ALLOWED",
            Self::CertificateNotPinned => "CERTIFICATE_NOT_PINNED",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    agencies: HashMap<String, Arc<Agency>>,
}

/// A registry that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("agency id {0:?} appears twice in the registry")]
    Duplicate(String),
    #[error("agency {0:?}: certificate_sha256 {1} is not 64 hex digits")]
    BadPin(String, usize),
}

/// A SHA-256 fingerprint written as hex, with or without colons.
fn parse_pin(text: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut pin = [0u8; 32];
    for (byte, pair) in pin.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(pin)
}

impl Registry {
    pub fn new(configs: &[AgencyConfig]) -> Result<Self, RegistryError> {
        let mut ids = std::collections::HashSet::new();
        if let Some(twice) = configs.iter().find(|c| !ids.insert(c.id.as_str())) {
            return Err(RegistryError::Duplicate(twice.id.clone()));
        }
        let agencies = configs
            .iter()
            .filter(|c| c.enabled)
            .map(|c| {
                let pins = c
                    .certificate_sha256
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        parse_pin(text).ok_or_else(|| RegistryError::BadPin(c.id.clone(), i + 1))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let agency = Agency {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    role: c.role,
                    purposes: c.purposes.clone(),
                    detail: c.detail,
                    least_strict_name_match: c.least_strict_name_match.into(),
                    limits: Limits {
                        rate_per_second: c.rate_per_second,
                        burst: c.burst.or(c.rate_per_second).unwrap_or(1).max(1),
                        daily: c.daily_quota,
                    },
                    allow_batch: c.allow_batch,
                    allow_card_qr: c.allow_card_qr,
                    pins,
                    attestation_alg: c.attestation_alg,
                };
                Ok((c.id.clone(), Arc::new(agency)))
            })
            .collect::<Result<_, RegistryError>>()?;
        Ok(Self { agencies })
    }

    pub fn agency(&self, id: &str) -> Result<&Arc<Agency>, Denial> {
        self.agencies.get(id).ok_or(Denial::UnknownAgency)
    }
}

impl Agency {
    /// The one check of a verification call against the agency's policy.
    pub fn authorize_check(
        &self,
        call: CheckCall,
        purpose: Purpose,
        name_match: NameMatchLevel,
    ) -> Result<(), Denial> {
        self.authorize_call(call)?;
        if !self.purposes.contains(&purpose) {
            return Err(Denial::PurposeNotAllowed);
        }
        if name_match > self.least_strict_name_match {
            return Err(Denial::NameMatchNotAllowed);
        }
        Ok(())
    }

    /// Whether the agency may use `call` at all: asked when a batch stream
    /// opens, before any item, and again for every check.
    pub fn authorize_call(&self, call: CheckCall) -> Result<(), Denial> {
        if self.role != Role::Agency {
            return Err(Denial::NotAnAgency);
        }
        match call {
            CheckCall::BatchItem if !self.allow_batch => Err(Denial::BatchNotAllowed),
            CheckCall::CardQr if !self.allow_card_qr => Err(Denial::CardQrNotAllowed),
            _ => Ok(()),
        }
    }

    /// The one check of an audit-trail call.
    pub fn authorize_history(&self) -> Result<(), Denial> {
        match self.role {
            Role::Operator => Ok(()),
            Role::Agency => Err(Denial::NotAnOperator),
        }
    }

    /// What of an assessment the agency may see: (reason, field checks).
    pub fn disclose(&self, assessment: &Assessment) -> (Option<Reason>, Option<FieldChecks>) {
        let reason = match assessment.verdict {
            Verdict::Verified => None,
            Verdict::NotVerified(reason) => Some(reason),
        };
        match self.detail {
            DetailLevel::None => (None, None),
            DetailLevel::Reason => (reason, None),
            DetailLevel::Fields => (reason, assessment.checks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency(detail: DetailLevel) -> Agency {
        let mut config = AgencyConfig::demo("a");
        config.detail = detail;
        config.purposes = vec![Purpose::Healthcare];
        config.least_strict_name_match = NameLevelConfig::Folded;
        Registry::new(&[config])
            .unwrap()
            .agency("a")
            .unwrap()
            .as_ref()
            .clone()
    }

    #[test]
    fn purposes_and_name_levels() {
        let a = agency(DetailLevel::None);
        assert_eq!(
            a.authorize_check(
                CheckCall::Verify,
                Purpose::Healthcare,
                NameMatchLevel::Exact
            ),
            Ok(())
        );
        assert_eq!(
            a.authorize_check(
                CheckCall::Verify,
                Purpose::Healthcare,
                NameMatchLevel::Folded
            ),
            Ok(())
        );
        assert_eq!(
            a.authorize_check(
                CheckCall::Verify,
                Purpose::Healthcare,
                NameMatchLevel::Partial
            ),
            Err(Denial::NameMatchNotAllowed)
        );
        assert_eq!(
            a.authorize_check(
                CheckCall::Verify,
                Purpose::Examination,
                NameMatchLevel::Exact
            ),
            Err(Denial::PurposeNotAllowed)
        );
    }

    #[test]
    fn agencies_check_and_operators_read_the_audit_trail_never_the_reverse() {
        let registry =
            Registry::new(&[AgencyConfig::demo("a"), AgencyConfig::operator("o")]).unwrap();
        let (agency, operator) = (registry.agency("a").unwrap(), registry.agency("o").unwrap());
        for purpose in Purpose::ALL {
            assert_eq!(
                agency.authorize_check(CheckCall::Verify, purpose, NameMatchLevel::Exact),
                Ok(())
            );
            assert_eq!(
                operator.authorize_check(CheckCall::Verify, purpose, NameMatchLevel::Exact),
                Err(Denial::NotAnAgency)
            );
        }
        assert_eq!(agency.authorize_history(), Err(Denial::NotAnOperator));
        assert_eq!(operator.authorize_history(), Ok(()));
    }

    #[test]
    fn batch_and_card_qr_calls_need_their_own_grant() {
        let mut config = AgencyConfig::demo("a");
        let check = |config: &AgencyConfig, call| {
            Registry::new(std::slice::from_ref(config))
                .unwrap()
                .agency("a")
                .unwrap()
                .authorize_check(call, Purpose::Healthcare, NameMatchLevel::Exact)
        };
        for call in [CheckCall::Verify, CheckCall::BatchItem, CheckCall::CardQr] {
            assert_eq!(check(&config, call), Ok(()));
        }
        config.allow_batch = false;
        config.allow_card_qr = false;
        assert_eq!(check(&config, CheckCall::Verify), Ok(()));
        assert_eq!(
            check(&config, CheckCall::BatchItem),
            Err(Denial::BatchNotAllowed)
        );
        assert_eq!(
            check(&config, CheckCall::CardQr),
            Err(Denial::CardQrNotAllowed)
        );
        let operator = Registry::new(&[AgencyConfig::operator("o")]).unwrap();
        let operator = operator.agency("o").unwrap();
        assert_eq!(
            operator.authorize_call(CheckCall::BatchItem),
            Err(Denial::NotAnAgency)
        );
    }

    #[test]
    fn disabled_and_unknown_agencies_are_denied() {
        let mut config = AgencyConfig::demo("off");
        config.enabled = false;
        let registry = Registry::new(&[config]).unwrap();
        assert_eq!(registry.agency("off"), Err(Denial::UnknownAgency));
        assert_eq!(registry.agency("nobody"), Err(Denial::UnknownAgency));
    }

    #[test]
    fn a_registry_with_a_repeated_id_or_a_bad_pin_is_refused() {
        let twice = [AgencyConfig::demo("a"), AgencyConfig::operator("a")];
        assert_eq!(
            Registry::new(&twice).unwrap_err(),
            RegistryError::Duplicate("a".into())
        );
        let mut pinned = AgencyConfig::demo("a");
        pinned.certificate_sha256 = vec!["AB:".repeat(31) + "CD", "12".into()];
        assert_eq!(
            Registry::new(&[pinned.clone()]).unwrap_err(),
            RegistryError::BadPin("a".into(), 2)
        );
        pinned.certificate_sha256.pop();
        let registry = Registry::new(&[pinned]).unwrap();
        let pins = &registry.agency("a").unwrap().pins;
        assert_eq!(pins[0][0], 0xab);
        assert_eq!(pins[0][31], 0xcd);
    }

    #[test]
    fn detail_levels_hide_what_they_should() {
        let assessment = Assessment {
            verdict: Verdict::NotVerified(Reason::NotFound),
            checks: None,
        };
        assert_eq!(
            agency(DetailLevel::None).disclose(&assessment),
            (None, None)
        );
        assert_eq!(
            agency(DetailLevel::Reason).disclose(&assessment),
            (Some(Reason::NotFound), None)
        );
    }
}
