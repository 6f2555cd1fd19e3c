//! The hash chain, pure: what a row's hash covers, what a checkpoint
//! signs, and the check that walks a trail row by row and names the first
//! row that was changed, removed or moved.
//!
//! Each row's hash covers its predecessor's hash and its own content (not
//! its `seq`, which is only where the row sits): so the chain, not the
//! numbering, fixes the order, and a row moved to another place breaks the
//! link while still hashing to itself. A chain alone can be recomputed by
//! whoever can write the table; what they cannot forge is the service's
//! signature, on the checkpoints and on every check's attestation, which
//! the check compares with its row.

use std::collections::{BTreeMap, BTreeSet};

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuditEntry, AuditKind, AuditRecord};
use crate::attest::{AttestationClaims, CHECKPOINT_TYPE, Jwks, TOKEN_TYPE, TokenError};
use crate::clock::UnixSeconds;
use crate::domain::Spelled;

pub type Hash = [u8; 32];

/// The predecessor of the first row ever written.
pub const GENESIS: Hash = [0; 32];

/// `SHA-256("vnid-audit-v1" 0, prev, at_us, then each text field as its
/// length (8 bytes, big-endian) and its UTF-8 bytes)`. Lengths make the
/// encoding unambiguous: no two entries share one.
pub fn row_hash(prev: &Hash, entry: &AuditEntry) -> Hash {
    let mut h = Sha256::new();
    h.update(b"vnid-audit-v1\0");
    h.update(prev);
    h.update(entry.at_us.to_be_bytes());
    for field in [
        entry.kind.name(),
        &entry.agency,
        &entry.purpose,
        &entry.request_id,
        &entry.subject,
        &entry.subject_index,
        &entry.verdict,
        &entry.reason,
        &entry.attestation_id,
        &entry.attestation,
        &entry.request_digest,
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().into()
}

/// The newest row of the trail: how many rows were ever written, and the
/// last one's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: Hash,
}

impl Head {
    pub const EMPTY: Self = Self {
        seq: 0,
        hash: GENESIS,
    };
}

/// What a checkpoint signs: the trail's head at `seq` was `head`. A `cut`
/// checkpoint marks where `vnid audit prune` cut the trail: the oldest row
/// kept follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    pub iss: String,
    pub seq: i64,
    /// base64url of the row's hash.
    pub head: String,
    pub iat: UnixSeconds,
    #[serde(default)]
    pub cut: bool,
}

impl CheckpointClaims {
    pub fn new(iss: &str, head: &Head, iat: UnixSeconds, cut: bool) -> Self {
        Self {
            iss: iss.to_owned(),
            seq: head.seq,
            head: Base64UrlUnpadded::encode_string(&head.hash),
            iat,
            cut,
        }
    }
}

/// A checkpoint as stored: the row it is about and its compact JWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub seq: i64,
    pub token: String,
}

/// The first thing found wrong, named by row (`seq`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    #[error("audit row {seq} was changed: {what}")]
    Changed { seq: i64, what: &'static str },
    #[error("audit rows {first} to {last} were removed")]
    Removed { first: i64, last: i64 },
    #[error("audit row {seq} was moved: it follows row {follows}, not the row before it")]
    Reordered { seq: i64, follows: i64 },
    /// Found by [`ChainCheck::push`]; the store turns it into `Reordered`
    /// or `Removed` by looking for the row the link points to.
    #[error("audit row {seq} does not follow the row before it")]
    Unlinked { seq: i64, prev: Hash },
    #[error(
        "the audit trail was truncated: it ends at row {last}, but {evidence} vouches for row {seq}"
    )]
    Truncated {
        last: i64,
        seq: i64,
        evidence: &'static str,
    },
    #[error(
        "audit rows after row {since} up to row {seq} were rewritten: row {seq} does not match its signed checkpoint"
    )]
    Rewritten { since: i64, seq: i64 },
    #[error("the checkpoint at row {seq} does not verify: {why}")]
    BadCheckpoint { seq: i64, why: String },
    #[error(
        "the checkpoint at row {seq} was removed from the trail: a witness holds it, the trail does not"
    )]
    CheckpointRemoved { seq: i64 },
    /// Signed by a key the configuration does not hold: the row cannot be
    /// vouched for until that key is published again (or it is forged).
    #[error(
        "audit row {seq} is signed by key {kid:?}, which is not among the configured keys \
         (attestation.signing_key_file, attestation.published_key_files)"
    )]
    UnknownKey { seq: i64, kid: String },
}

/// What a trail that verifies looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows checked (those kept since the last prune).
    pub rows: u64,
    /// Where the kept rows start: 0 for the first row ever written, or the
    /// last row `vnid audit prune` removed.
    pub anchor: i64,
    pub head: Head,
    /// The newest signed checkpoint, if any.
    pub checkpoint: Option<i64>,
}

/// Walks a trail in `seq` order.
pub struct ChainCheck<'a> {
    jwks: &'a Jwks,
    /// Signed heads, by row.
    checkpoints: BTreeMap<i64, Hash>,
    anchor: i64,
    expected: i64,
    prev: Hash,
    rows: u64,
    /// The newest checkpoint the rows so far agree with.
    vouched: i64,
    /// Checkpoints a witness holds that the trail's own table does not.
    witnessed_only: BTreeSet<i64>,
    /// Heads the operator expects (`--expect`), not checkpoints.
    expected_only: BTreeSet<i64>,
}

impl<'a> ChainCheck<'a> {
    /// Checks every checkpoint's signature, and anchors the walk at the
    /// newest cut (or at the genesis when the trail was never pruned).
    pub fn new(jwks: &'a Jwks, stored: &[StoredCheckpoint]) -> Result<Self, Finding> {
        let mut checkpoints = BTreeMap::new();
        let mut anchor = (0, GENESIS);
        for cp in stored {
            let (hash, cut) = signed_head(jwks, cp)?;
            if cut && cp.seq >= anchor.0 {
                anchor = (cp.seq, hash);
            }
            checkpoints.insert(cp.seq, hash);
        }
        Ok(Self {
            jwks,
            checkpoints,
            anchor: anchor.0,
            expected: anchor.0 + 1,
            prev: anchor.1,
            rows: 0,
            vouched: anchor.0,
            witnessed_only: BTreeSet::new(),
            expected_only: BTreeSet::new(),
        })
    }

    /// Holds the trail to checkpoints a witness kept outside its database:
    /// each must verify, agree with the trail's own checkpoint at its row
    /// if there is one, and be reached by the rows (checked as they are
    /// pushed and at `finish`). Those at or before the newest cut vouch
    /// for rows pruned on purpose, and are passed over.
    pub fn witnessed(mut self, witnessed: &[StoredCheckpoint]) -> Result<Self, Finding> {
        for cp in witnessed {
            let (hash, _) = signed_head(self.jwks, cp)?;
            if cp.seq <= self.anchor {
                continue;
            }
            match self.checkpoints.get(&cp.seq) {
                Some(stored) if *stored != hash => {
                    return Err(Finding::BadCheckpoint {
                        seq: cp.seq,
                        why: "it disagrees with the witnessed checkpoint of that row".into(),
                    });
                }
                Some(_) => {}
                None => {
                    self.checkpoints.insert(cp.seq, hash);
                    self.witnessed_only.insert(cp.seq);
                }
            }
        }
        Ok(self)
    }

    /// Holds the trail to a head the operator kept elsewhere (the last line
    /// of an earlier `audit verify`): row `head.seq` must be there and
    /// hash to `head.hash`.
    pub fn expect(mut self, head: Head) -> Result<Self, Finding> {
        if head.seq <= self.anchor {
            return Ok(self);
        }
        match self.checkpoints.get(&head.seq) {
            Some(signed) if *signed != head.hash => Err(Finding::BadCheckpoint {
                seq: head.seq,
                why: "it disagrees with the expected head of that row".into(),
            }),
            Some(_) => Ok(self),
            None => {
                self.checkpoints.insert(head.seq, head.hash);
                self.expected_only.insert(head.seq);
                Ok(self)
            }
        }
    }

    /// The next row, in `seq` order.
    pub fn push(&mut self, row: &AuditRecord) -> Result<(), Finding> {
        let seq = row.seq;
        if seq <= self.anchor {
            // Older than the cut: a prune in progress elsewhere.
            return Ok(());
        }
        if seq > self.expected {
            return Err(Finding::Removed {
                first: self.expected,
                last: seq - 1,
            });
        }
        if row_hash(&row.prev_hash, &row.entry) != row.row_hash {
            return Err(Finding::Changed {
                seq,
                what: "its content does not hash to its recorded hash",
            });
        }
        if row.prev_hash != self.prev {
            return Err(Finding::Unlinked {
                seq,
                prev: row.prev_hash,
            });
        }
        self.matches_its_attestation(seq, &row.entry)?;
        if let Some(signed) = self.checkpoints.get(&seq) {
            if *signed != row.row_hash {
                return Err(Finding::Rewritten {
                    since: self.vouched,
                    seq,
                });
            }
            self.vouched = seq;
        }
        self.prev = row.row_hash;
        self.expected = seq + 1;
        self.rows += 1;
        Ok(())
    }

    /// A check's row must carry the attestation the caller was given, and
    /// say what it says.
    fn matches_its_attestation(&self, seq: i64, e: &AuditEntry) -> Result<(), Finding> {
        let changed = |what| Finding::Changed { seq, what };
        if e.kind == AuditKind::AccessHistory {
            return if e.attestation.is_empty() {
                Ok(())
            } else {
                Err(changed("an access-history row carries an attestation"))
            };
        }
        let claims: AttestationClaims = self
            .jwks
            .verify_signature(&e.attestation, TOKEN_TYPE)
            .map_err(|error| match error {
                TokenError::UnknownKey(kid) => Finding::UnknownKey { seq, kid },
                _ => changed("its attestation does not verify"),
            })?;
        let agrees = claims.jti == e.attestation_id
            && claims.aud == e.agency
            && claims.nonce == e.request_id
            && claims.sub == e.subject
            && claims.purpose.name() == e.purpose
            && claims.verdict.name() == e.verdict;
        if agrees {
            Ok(())
        } else {
            Err(changed("it does not say what its attestation says"))
        }
    }

    /// After the last row up to `head`: the rows must reach the head and
    /// every signed checkpoint.
    pub fn finish(self, head: Head) -> Result<Summary, Finding> {
        let last = self.expected - 1;
        if head.seq > last {
            return Err(Finding::Truncated {
                last,
                seq: head.seq,
                evidence: "the trail's head",
            });
        }
        if let Some((&seq, _)) = self.checkpoints.range(last + 1..).next_back() {
            return Err(Finding::Truncated {
                last,
                seq,
                evidence: if self.witnessed_only.contains(&seq) {
                    "a witnessed checkpoint"
                } else if self.expected_only.contains(&seq) {
                    "the expected head"
                } else {
                    "a signed checkpoint"
                },
            });
        }
        if head.seq == last && head.hash != self.prev {
            return Err(Finding::Changed {
                seq: last,
                what: "it does not hash to the trail's head",
            });
        }
        if let Some(&seq) = self.witnessed_only.iter().next_back() {
            return Err(Finding::CheckpointRemoved { seq });
        }
        Ok(Summary {
            rows: self.rows,
            anchor: self.anchor,
            head,
            checkpoint: (self.checkpoints.keys().rev())
                .find(|seq| !self.expected_only.contains(seq))
                .copied(),
        })
    }
}

/// A checkpoint's signed head (and whether it marks a cut), once its
/// signature and its row check.
fn signed_head(jwks: &Jwks, cp: &StoredCheckpoint) -> Result<(Hash, bool), Finding> {
    let bad = |why: String| Finding::BadCheckpoint { seq: cp.seq, why };
    let claims: CheckpointClaims = jwks
        .verify_signature(&cp.token, CHECKPOINT_TYPE)
        .map_err(|e| bad(e.to_string()))?;
    let hash = Base64UrlUnpadded::decode_vec(&claims.head)
        .ok()
        .and_then(|h| Hash::try_from(h).ok())
        .ok_or_else(|| bad("its head is not a SHA-256 hash".into()))?;
    if claims.seq != cp.seq {
        return Err(bad(format!("it is signed for row {}", claims.seq)));
    }
    Ok((hash, claims.cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::Keyring;
    use crate::domain::{CheckCall, Purpose, VerdictKind};
    use ed25519_dalek::SigningKey;

    fn keyring() -> Keyring {
        Keyring::new(SigningKey::from_bytes(&[9; 32]), vec![])
    }

    fn entry(ring: &Keyring, n: i64) -> AuditEntry {
        let claims = AttestationClaims {
            iss: "t".into(),
            aud: "hospital".into(),
            sub: format!("sub-{n}"),
            iat: 1,
            exp: 2,
            jti: format!("att-{n}"),
            nonce: format!("req-{n}"),
            purpose: Purpose::Healthcare,
            verdict: VerdictKind::Verified,
            reason: None,
            checks: None,
            data_as_of: 0,
        };
        AuditEntry {
            at_us: 1_000 + n,
            kind: AuditKind::Check(CheckCall::Verify),
            agency: claims.aud.clone(),
            purpose: claims.purpose.name().to_owned(),
            request_id: claims.nonce.clone(),
            subject: claims.sub.clone(),
            subject_index: format!("idx-{}", n % 3),
            verdict: claims.verdict.name().to_owned(),
            reason: String::new(),
            attestation_id: claims.jti.clone(),
            attestation: ring.sign(&claims).unwrap(),
            request_digest: format!("digest-{n}"),
        }
    }

    /// A trail of `n` rows, as the writer appends it.
    fn trail(ring: &Keyring, n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let entry = entry(ring, seq);
                let row_hash = row_hash(&prev, &entry);
                let record = AuditRecord {
                    seq,
                    entry,
                    prev_hash: prev,
                    row_hash,
                };
                prev = row_hash;
                record
            })
            .collect()
    }

    fn head(rows: &[AuditRecord]) -> Head {
        rows.last().map_or(Head::EMPTY, |r| Head {
            seq: r.seq,
            hash: r.row_hash,
        })
    }

    fn checkpoint(ring: &Keyring, row: &AuditRecord, cut: bool) -> StoredCheckpoint {
        let head = Head {
            seq: row.seq,
            hash: row.row_hash,
        };
        StoredCheckpoint {
            seq: row.seq,
            token: ring
                .sign_checkpoint(&CheckpointClaims::new("t", &head, 5, cut))
                .unwrap(),
        }
    }

    fn check(
        ring: &Keyring,
        rows: &[AuditRecord],
        cps: &[StoredCheckpoint],
        head: Head,
    ) -> Result<Summary, Finding> {
        let jwks = Jwks::parse(ring.jwks_json()).unwrap();
        let mut walk = ChainCheck::new(&jwks, cps)?;
        for row in rows {
            walk.push(row)?;
        }
        walk.finish(head)
    }

    #[test]
    fn an_untouched_trail_verifies() {
        let ring = keyring();
        let rows = trail(&ring, 10);
        let cps = [checkpoint(&ring, &rows[4], false)];
        let summary = check(&ring, &rows, &cps, head(&rows)).unwrap();
        assert_eq!(summary.rows, 10);
        assert_eq!(summary.checkpoint, Some(5));
        assert_eq!(check(&ring, &[], &[], Head::EMPTY).unwrap().rows, 0);
    }

    #[test]
    fn a_changed_field_is_named() {
        let ring = keyring();
        let mut rows = trail(&ring, 10);
        rows[6].entry.verdict = "VERDICT_NOT_VERIFIED".into();
        assert_eq!(
            check(&ring, &rows, &[], head(&rows)),
            Err(Finding::Changed {
                seq: 7,
                what: "its content does not hash to its recorded hash"
            })
        );
    }

    #[test]
    fn a_row_signed_by_a_key_not_configured_is_named_as_such() {
        let ring = keyring();
        let other = Keyring::new(SigningKey::from_bytes(&[3; 32]), vec![]);
        let mut rows = trail(&ring, 10);
        rows[3].entry = entry(&other, 4);
        let mut prev = rows[2].row_hash;
        for row in &mut rows[3..] {
            row.prev_hash = prev;
            row.row_hash = row_hash(&prev, &row.entry);
            prev = row.row_hash;
        }
        let head = head(&rows);
        assert_eq!(
            check(&ring, &rows, &[], head),
            Err(Finding::UnknownKey {
                seq: 4,
                kid: other.signing_kid()
            })
        );
    }

    #[test]
    fn a_change_with_every_hash_recomputed_is_caught_by_the_attestation() {
        let ring = keyring();
        let mut rows = trail(&ring, 10);
        rows[6].entry.verdict = "VERDICT_NOT_VERIFIED".into();
        let mut prev = rows[5].row_hash;
        for row in &mut rows[6..] {
            row.prev_hash = prev;
            row.row_hash = row_hash(&prev, &row.entry);
            prev = row.row_hash;
        }
        let head = head(&rows);
        assert!(matches!(
            check(&ring, &rows, &[], head),
            Err(Finding::Changed { seq: 7, .. })
        ));
    }

    #[test]
    fn a_recomputed_chain_is_caught_by_the_checkpoint() {
        let ring = keyring();
        let mut rows = trail(&ring, 10);
        let cps = [
            checkpoint(&ring, &rows[2], false),
            checkpoint(&ring, &rows[7], false),
        ];
        // An access-history row (no attestation) altered, hashes redone.
        rows[5].entry.kind = AuditKind::AccessHistory;
        rows[5].entry.attestation.clear();
        let mut prev = rows[4].row_hash;
        for row in &mut rows[5..] {
            row.prev_hash = prev;
            row.row_hash = row_hash(&prev, &row.entry);
            prev = row.row_hash;
        }
        let head = head(&rows);
        assert_eq!(
            check(&ring, &rows, &cps, head),
            Err(Finding::Rewritten { since: 3, seq: 8 })
        );
    }

    #[test]
    fn a_removed_row_is_named() {
        let ring = keyring();
        let mut rows = trail(&ring, 10);
        rows.remove(3);
        assert_eq!(
            check(&ring, &rows, &[], head(&rows)),
            Err(Finding::Removed { first: 4, last: 4 })
        );
        // Renumbered to hide the gap: the link breaks.
        for row in &mut rows[3..] {
            row.seq -= 1;
        }
        assert!(matches!(
            check(&ring, &rows, &[], head(&rows)),
            Err(Finding::Unlinked { seq: 4, .. })
        ));
    }

    #[test]
    fn swapped_rows_break_the_link() {
        let ring = keyring();
        let mut rows = trail(&ring, 10);
        rows.swap(4, 5);
        rows[4].seq = 5;
        rows[5].seq = 6;
        assert_eq!(
            check(&ring, &rows, &[], head(&rows)),
            Err(Finding::Unlinked {
                seq: 5,
                prev: rows[5].row_hash
            })
        );
    }

    #[test]
    fn truncation_is_caught_by_the_head_or_a_checkpoint() {
        let ring = keyring();
        let rows = trail(&ring, 10);
        let full_head = head(&rows);
        let cps = [checkpoint(&ring, &rows[8], false)];
        assert_eq!(
            check(&ring, &rows[..7], &[], full_head),
            Err(Finding::Truncated {
                last: 7,
                seq: 10,
                evidence: "the trail's head"
            })
        );
        // The head rewound too: the signed checkpoint still knows.
        assert_eq!(
            check(&ring, &rows[..7], &cps, head(&rows[..7])),
            Err(Finding::Truncated {
                last: 7,
                seq: 9,
                evidence: "a signed checkpoint"
            })
        );
    }

    #[test]
    fn a_pruned_trail_verifies_from_its_cut_and_only_from_it() {
        let ring = keyring();
        let rows = trail(&ring, 10);
        let cut = [checkpoint(&ring, &rows[3], true)];
        let summary = check(&ring, &rows[4..], &cut, head(&rows)).unwrap();
        assert_eq!((summary.rows, summary.anchor), (6, 4));
        // Rows dropped from the start without a signed cut.
        assert_eq!(
            check(&ring, &rows[4..], &[], head(&rows)),
            Err(Finding::Removed { first: 1, last: 4 })
        );
        // A periodic checkpoint is no cut.
        let periodic = [checkpoint(&ring, &rows[3], false)];
        assert!(check(&ring, &rows[4..], &periodic, head(&rows)).is_err());
    }

    #[test]
    fn a_forged_or_misfiled_checkpoint_is_refused() {
        let ring = keyring();
        let rows = trail(&ring, 4);
        let other = Keyring::new(SigningKey::from_bytes(&[1; 32]), vec![]);
        let forged = [checkpoint(&other, &rows[1], true)];
        assert!(matches!(
            check(&ring, &rows, &forged, head(&rows)),
            Err(Finding::BadCheckpoint { seq: 2, .. })
        ));
        let mut misfiled = checkpoint(&ring, &rows[1], false);
        misfiled.seq = 3;
        assert!(matches!(
            check(&ring, &rows, &[misfiled], head(&rows)),
            Err(Finding::BadCheckpoint { seq: 3, .. })
        ));
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let ring = keyring();
        let base = entry(&ring, 1);
        let h = row_hash(&GENESIS, &base);
        let variants: [fn(&mut AuditEntry); 12] = [
            |e| e.at_us += 1,
            |e| e.kind = AuditKind::Check(CheckCall::BatchItem),
            |e| e.agency.push('x'),
            |e| e.purpose.push('x'),
            |e| e.request_id.push('x'),
            |e| e.subject.push('x'),
            |e| e.subject_index.push('x'),
            |e| e.verdict.push('x'),
            |e| e.reason.push('x'),
            |e| e.attestation_id.push('x'),
            |e| e.attestation.push('x'),
            |e| e.request_digest.push('x'),
        ];
        for change in variants {
            let mut e = base.clone();
            change(&mut e);
            assert_ne!(row_hash(&GENESIS, &e), h);
        }
        assert_ne!(row_hash(&[1; 32], &base), h, "the predecessor too");
        // Field boundaries are unambiguous.
        let mut a = base.clone();
        let mut b = base.clone();
        a.agency = "ab".into();
        a.purpose = "c".into();
        b.agency = "a".into();
        b.purpose = "bc".into();
        assert_ne!(row_hash(&GENESIS, &a), row_hash(&GENESIS, &b));
    }
}
