//! The use case: one check of one person for one agency, as
//! [`Verifier::check`] reads: the agency's policy; a retry answered again
//! (or a reused `request_id` refused); the guard's admission; the mirror's
//! record found and weighed against the claims; the answer cut to what the
//! agency may see and signed; its audit row made durable — and only then
//! the answer. A batch item is the same check, paced rather than refused
//! over its rate ([`Verifier::check_batch_item`]).
//!
//! - `replay`: where a retry's first answer is found, and that answer read
//!   back from its row.

mod replay;

use std::sync::Arc;

pub use crate::attest::Attester;
use crate::attest::{AttestationClaims, ChecksClaim, new_attestation_id};
use crate::audit::{AuditEntry, AuditError, AuditKind, AuditSink};
use crate::clock::{Clock, UnixSeconds};
use crate::domain::{
    Assessment, CheckCall, CitizenRecord, CitizenStatus, Claims, Door, FieldChecks, NameMatchLevel,
    PartialDate, PersonName, PersonalIdNumber, Purpose, Reason, RequestId, Spelled, Verdict,
    assess,
};
use crate::guard::{Guard, GuardError, Refusal};
use crate::metrics::Metrics;
use crate::mirror::{MirrorStore, StoreError};
use crate::policy::{Agency, Denial};

pub use replay::Replays;

use replay::{Prior, answer_again};

/// One check, parsed and valid.
#[derive(Debug, Clone)]
pub struct VerifyCommand {
    pub request_id: RequestId,
    pub id_number: PersonalIdNumber,
    pub claims: Claims,
    pub purpose: Purpose,
    /// The least strict name level that counts as a match.
    pub name_match: NameMatchLevel,
    /// The door the call came in by (not part of what makes two checks
    /// the same: a retry by another door is still a retry).
    pub door: Door,
}

impl VerifyCommand {
    /// Everything that makes two checks the same check, in one unambiguous
    /// string (fields joined by the unit separator, which no field holds).
    fn canonical(&self, kind: AuditKind) -> String {
        let c = &self.claims;
        [
            kind.name(),
            self.id_number.expose(),
            c.full_name.as_ref().map_or("", |n| n.canonical()),
            &c.date_of_birth.map(|d| d.to_iso()).unwrap_or_default(),
            c.gender.map_or("", |g| g.as_str()),
            c.old_id_number.as_ref().map_or("", |o| o.expose()),
            self.purpose.name(),
            self.name_match.name(),
        ]
        .join("\u{1f}")
    }
}

/// A signed answer, and the pairwise subject it names.
struct Attested {
    subject: String,
    outcome: VerifyOutcome,
}

/// The answer, already cut to what the agency may see.
#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    pub request_id: RequestId,
    pub verdict: Verdict,
    /// The reason the agency may see (`None` when verified or hidden).
    pub reason: Option<Reason>,
    pub checks: Option<FieldChecks>,
    pub attestation: String,
    pub attestation_id: String,
    pub data_as_of: Option<UnixSeconds>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Denied(#[from] Denial),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The agency used this `request_id` for another request.
    #[error("the request_id was already used for another request")]
    RequestIdReused,
    /// The mirror's data is older than `mirror.max_age`.
    #[error("the mirror's data is {age} s old, past mirror.max_age")]
    Stale { age: i64 },
    /// Nothing was ever imported into the mirror, and `mirror.max_age`
    /// bounds its age.
    #[error("nothing was ever imported into the mirror")]
    NeverImported,
    #[error("a stored answer cannot be read back: {0}")]
    StoredAnswer(&'static str),
    #[error("cannot sign the attestation: {0}")]
    Sign(#[from] crate::attest::SignError),
    #[error("cannot draw an attestation id: {0}")]
    Random(getrandom::Error),
}

pub struct Verifier {
    mirror: Arc<dyn MirrorStore>,
    attester: Arc<Attester>,
    audit: Arc<dyn AuditSink>,
    /// Where the first answer to a `request_id` is found again (`None`:
    /// nothing is kept, so nothing is replayed).
    replays: Option<Replays>,
    guard: Guard,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    freshness: Freshness,
}

/// How old the mirror's data may be (`mirror.max_age`, `warn_age`), and
/// how old it was at the last lookup.
#[derive(Debug, Default)]
struct Freshness {
    max_age: Option<i64>,
    warn_age: Option<i64>,
    /// The newest `data_as_of` a lookup returned (0: none yet).
    data_as_of: std::sync::atomic::AtomicI64,
    /// When the last warning was logged.
    warned_at: std::sync::atomic::AtomicI64,
}

/// `vnid_refusals_total{reason}` of a check refused on the mirror's age.
const MIRROR_STALE: &str = "mirror_stale";

/// A warning about the mirror's age is logged at most this often.
const STALE_WARNING_EVERY: i64 = 600;

impl Freshness {
    /// Refuses a check on data older than the bound; warns (now and then)
    /// past the warning age.
    fn check(&self, data_as_of: i64, now: i64) -> Result<(), VerifyError> {
        use std::sync::atomic::Ordering;
        if data_as_of <= 0 {
            return Ok(());
        }
        let age = now - data_as_of;
        if self.warn_age.is_some_and(|warn| age > warn) {
            let last = self.warned_at.load(Ordering::Relaxed);
            if now - last >= STALE_WARNING_EVERY
                && self
                    .warned_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    age_seconds = age,
                    max_age_seconds = self.max_age,
                    "the mirror's data is old: import a newer export"
                );
            }
        }
        match self.max_age {
            Some(max) if age > max => Err(VerifyError::Stale { age }),
            _ => Ok(()),
        }
    }
}

impl Verifier {
    pub fn new(
        mirror: Arc<dyn MirrorStore>,
        attester: Arc<Attester>,
        audit: Arc<dyn AuditSink>,
        replays: Option<Replays>,
        guard: Guard,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            mirror,
            attester,
            audit,
            replays,
            guard,
            clock,
            metrics,
            freshness: Freshness::default(),
        }
    }

    /// Bounds the mirror's age (`mirror.max_age`): past it, checks are
    /// refused as stale; past `warn_age` a warning is logged.
    #[must_use]
    pub fn with_max_age(mut self, max_age: Option<i64>, warn_age: Option<i64>) -> Self {
        self.freshness.max_age = max_age;
        self.freshness.warn_age = warn_age;
        self
    }

    /// The published keys now (they change when the keys are reloaded).
    pub fn jwks_json(&self) -> String {
        self.attester.keyring().jwks_json().to_owned()
    }

    /// One check, arrived by `call` (which the agency must be allowed,
    /// and which its audit row names): a retry answered again, or the
    /// guard's admission, the mirror's record weighed against the claims,
    /// the attestation signed, and its row made durable before it leaves.
    pub async fn check(
        &self,
        agency: &Agency,
        command: VerifyCommand,
        call: CheckCall,
    ) -> Result<VerifyOutcome, VerifyError> {
        agency.authorize_check(call, command.purpose, command.name_match)?;
        let kind = AuditKind::Check(call);
        let subject_key = &self.attester.subject_key;
        let digest = subject_key.request_digest(&agency.id, &command.canonical(kind));
        // (Copies racing each other past this point are settled by the
        // trail, which keeps one row per id: see `record`.)
        let marked = match self.prior(agency, &command, &digest).await? {
            Prior::New { marked } => marked,
            Prior::Conflict => return Err(VerifyError::RequestIdReused),
            Prior::First(first) => return answer_again(&first, &digest, command.request_id),
        };
        let subject_index = subject_key.subject_index(&command.id_number);
        // Known stale already: refused before the agency's quota is spent.
        let known = self
            .freshness
            .data_as_of
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Err(stale) = self.freshness.check(known, self.clock.now()) {
            self.refused(MIRROR_STALE, agency);
            if marked && let Some(replays) = &self.replays {
                replays
                    .release(&agency.id, command.request_id.as_str())
                    .await;
            }
            return Err(stale);
        }
        self.admit(agency, &command, &subject_index, marked).await?;
        let found = match call {
            CheckCall::BatchItem => self.mirror.find_once(&command.id_number).await?,
            CheckCall::Verify | CheckCall::CardQr => self.mirror.find(&command.id_number).await?,
        };
        if found.record.is_none() {
            stand_in_for_a_record(&command);
        }
        let assessment = assess(
            &command.id_number,
            &command.claims,
            command.name_match,
            found.record.as_ref(),
        );
        if found.data_as_of.is_none() && self.freshness.max_age.is_some() {
            // Nothing imported yet: under an age bound, no data is data too
            // old to trust (never a NOT_FOUND from an empty mirror).
            self.refused(MIRROR_STALE, agency);
            return Err(VerifyError::NeverImported);
        }
        if let Some(as_of) = found.data_as_of {
            self.metrics.mirror_data_as_of.set(as_of);
            (self.freshness.data_as_of).store(as_of, std::sync::atomic::Ordering::Relaxed);
            if let Err(stale) = self.freshness.check(as_of, self.clock.now()) {
                self.refused(MIRROR_STALE, agency);
                return Err(stale);
            }
        }
        let failed = assessment.verdict.is_failure();
        self.guard
            .record(&agency.id, &subject_index, failed, self.clock.now_micros())
            .await;
        // The row's time is the attestation's.
        let at_us = self.clock.now_micros();
        let answer = self.attest(agency, &command, &assessment, found.data_as_of, at_us)?;
        let entry = AuditEntry {
            at_us,
            kind,
            subject_index,
            reason: match assessment.verdict {
                Verdict::Verified => String::new(),
                Verdict::NotVerified(reason) => reason.name().to_owned(),
            },
            attestation: answer.outcome.attestation.clone(),
            agency: agency.id.clone(),
            purpose: command.purpose.name().to_owned(),
            request_id: command.request_id.as_str().to_owned(),
            subject: answer.subject,
            verdict: assessment.verdict.kind().name().to_owned(),
            attestation_id: answer.outcome.attestation_id.clone(),
            request_digest: digest,
            door: command.door,
        };
        let labels = [
            assessment.verdict.kind().name(),
            match assessment.verdict {
                Verdict::Verified => "",
                Verdict::NotVerified(reason) => reason.name(),
            },
            command.purpose.name(),
            agency.id.as_str(),
        ];
        let outcome = self.record(entry, answer.outcome).await?;
        self.metrics.checked(&labels);
        Ok(outcome)
    }

    fn refused(&self, reason: &str, agency: &Agency) {
        (self.metrics.refusals)
            .with_label_values(&[reason, agency.id.as_str()])
            .inc();
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What came before this request under its `request_id`: a retry gets
    /// the first answer; the same id for another request is a conflict.
    async fn prior(
        &self,
        agency: &Agency,
        command: &VerifyCommand,
        digest: &str,
    ) -> Result<Prior, VerifyError> {
        Ok(match &self.replays {
            Some(replays) => {
                replays
                    .prior(&agency.id, command.request_id.as_str(), digest)
                    .await?
            }
            None => Prior::New { marked: false },
        })
    }

    /// The guard's admission; refused, the `request_id` mark this check
    /// set (`marked`) is taken back: another copy of the request may be
    /// under way with its own.
    async fn admit(
        &self,
        agency: &Agency,
        command: &VerifyCommand,
        subject_index: &str,
        marked: bool,
    ) -> Result<(), VerifyError> {
        let admitted = self
            .guard
            .admit(agency, subject_index, self.clock.now_micros())
            .await;
        let Err(refused) = admitted else {
            return Ok(());
        };
        if marked && let Some(replays) = &self.replays {
            replays
                .release(&agency.id, command.request_id.as_str())
                .await;
        }
        Err(match refused {
            GuardError::Refused(why) => {
                self.refused(why.name(), agency);
                VerifyError::Refused(why)
            }
            GuardError::Trail(error) => VerifyError::Audit(error),
        })
    }

    /// The answer, cut to what the agency may see, and its signed
    /// attestation.
    fn attest(
        &self,
        agency: &Agency,
        command: &VerifyCommand,
        assessment: &Assessment,
        data_as_of: Option<UnixSeconds>,
        at_us: i64,
    ) -> Result<Attested, VerifyError> {
        let (reason, checks) = agency.disclose(assessment);
        let attestation_id = new_attestation_id().map_err(VerifyError::Random)?;
        let now = at_us.div_euclid(1_000_000);
        let subject = (self.attester.subject_key).pairwise_subject(&agency.id, &command.id_number);
        let claims = AttestationClaims {
            iss: self.attester.issuer.clone(),
            aud: agency.id.clone(),
            sub: subject.clone(),
            iat: now,
            exp: now.saturating_add(self.attester.ttl_seconds),
            jti: attestation_id.clone(),
            nonce: command.request_id.as_str().to_owned(),
            purpose: command.purpose,
            verdict: assessment.verdict.kind(),
            reason,
            checks: checks.as_ref().map(ChecksClaim::from),
            data_as_of: data_as_of.unwrap_or(0),
        };
        Ok(Attested {
            subject,
            outcome: VerifyOutcome {
                request_id: command.request_id.clone(),
                verdict: assessment.verdict,
                reason,
                checks,
                attestation: self.attester.sign_as(agency.attestation_alg, &claims)?,
                attestation_id,
                data_as_of,
            },
        })
    }

    /// Makes the check's row durable, then lets its answer go. If another
    /// copy of this `request_id` was made durable first (on this instance
    /// or another), this answer is never sent; the first is, if it
    /// answered the same request.
    async fn record(
        &self,
        entry: AuditEntry,
        outcome: VerifyOutcome,
    ) -> Result<VerifyOutcome, VerifyError> {
        let (agency, digest) = (entry.agency.clone(), entry.request_digest.clone());
        match self.audit.record(entry).await {
            Ok(_) => Ok(outcome),
            Err(AuditError::Duplicate) => {
                let request_id = outcome.request_id;
                let first = match &self.replays {
                    Some(replays) => {
                        replays
                            .trail
                            .first_request(&agency, request_id.as_str())
                            .await?
                    }
                    None => None,
                };
                let first = first.ok_or(VerifyError::StoredAnswer(
                    "the trail refused a repeated request_id it does not hold",
                ))?;
                answer_again(&first, &digest, request_id)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// One item of a batch: a batch is paced, not refused, so over its
    /// agency's rate the item waits until the rate allows it (the caller
    /// bounds the wait with the item's deadline). Any other refusal is the
    /// item's answer.
    pub async fn check_batch_item(
        &self,
        agency: &Agency,
        command: VerifyCommand,
    ) -> Result<VerifyOutcome, VerifyError> {
        loop {
            match self
                .check(agency, command.clone(), CheckCall::BatchItem)
                .await
            {
                Err(VerifyError::Refused(Refusal::Rate { retry_after })) => {
                    tokio::time::sleep(retry_after).await;
                }
                other => return other,
            }
        }
    }
}

/// An unknown number costs what a known one does: a record's name read
/// and the claims weighed against it. Without this, "not found" answers
/// come back measurably sooner (15 µs of 1 ms at the median:
/// `benches/timing.sh`), which tells an enumerator what the answer hides.
fn stand_in_for_a_record(command: &VerifyCommand) {
    let id = &command.id_number;
    let year_only = || {
        PartialDate::from_parts(id.birth_year().into(), 0, 0)
            .ok()
            .flatten()
    };
    let (Ok(full_name), Some(date_of_birth)) = (
        PersonName::parse(STAND_IN_NAME),
        command.claims.date_of_birth.or_else(year_only),
    ) else {
        return;
    };
    let record = CitizenRecord {
        id_number: id.clone(),
        full_name,
        date_of_birth,
        gender: command.id_number.gender(),
        old_id_numbers: Vec::new(),
        status: CitizenStatus::Active,
        record_version: 0,
    };
    std::hint::black_box(assess(
        &command.id_number,
        &command.claims,
        command.name_match,
        Some(std::hint::black_box(&record)),
    ));
}

/// A name of the usual length and diacritics.
const STAND_IN_NAME: &str = "Nguyễn Thị Thanh Hương";
