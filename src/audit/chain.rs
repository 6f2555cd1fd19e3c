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

/// What a checkpoint signs: the trail's head at `seq` was `head`, and the
/// checkpoint before it (the newest one in the trail when it was signed)
/// was at `prev_seq` with head `prev_head`, so that the checkpoints form a
/// chain of their own and one removed from the middle is missed by the
/// next. A `cut` checkpoint marks where `vnid audit prune` cut the trail:
/// the oldest row kept follows it. It names no predecessor: it anchors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    pub iss: String,
    pub seq: i64,
    /// base64url of the row's hash.
    pub head: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_seq: Option<i64>,
    /// base64url of the previous checkpoint's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_head: Option<String>,
    pub iat: UnixSeconds,
    #[serde(default)]
    pub cut: bool,
}

impl CheckpointClaims {
    pub fn new(iss: &str, head: &Head, prev: Option<&Head>, iat: UnixSeconds, cut: bool) -> Self {
        Self {
            iss: iss.to_owned(),
            seq: head.seq,
            head: Base64UrlUnpadded::encode_string(&head.hash),
            prev_seq: prev.map(|p| p.seq),
            prev_head: prev.map(|p| Base64UrlUnpadded::encode_string(&p.hash)),
            iat,
            cut,
        }
    }

    /// The head a stored checkpoint names, read without checking its
    /// signature: what the next checkpoint chains onto (a forged one then
    /// breaks the chain where `vnid audit verify` looks).
    pub fn unverified_head(token: &str) -> Option<Head> {
        let payload = token.split('.').nth(1)?;
        let claims: Self =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).ok()?).ok()?;
        Some(Head {
            seq: claims.seq,
            hash: decode_hash(&claims.head)?,
        })
    }
}

fn decode_hash(b64: &str) -> Option<Hash> {
    Base64UrlUnpadded::decode_vec(b64)
        .ok()
        .and_then(|h| Hash::try_from(h).ok())
}

/// A checkpoint's signed content, once its signature and its row check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signed {
    hash: Hash,
    prev: Option<Head>,
    cut: bool,
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
    /// The checkpoints' own chain is broken: one names a predecessor that
    /// is not there (removed, with no witness to hold it), or not the one
    /// before it.
    #[error(
        "the checkpoint at row {seq} is missing: the checkpoint at row {named_by} names it as the one before it"
    )]
    MissingCheckpoint { seq: i64, named_by: i64 },
    /// Signed by a key the configuration does not hold: the row cannot be
    /// vouched for until that key is published again (or it is forged).
    #[error(
        "audit row {seq} is signed by key {kid:?}, which is not among the configured keys \
         (attestation.signing_key_file, attestation.published_key_files)"
    )]
    UnknownKey { seq: i64, kid: String },
    /// A checkpoint signed by a key that is not a configured checkpoint key.
    #[error(
        "the checkpoint at row {seq} is signed by key {kid:?}, which is not among the configured \
         checkpoint keys (audit.checkpoint_key_file, audit.published_checkpoint_key_files)"
    )]
    UnknownCheckpointKey { seq: i64, kid: String },
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

/// The keys a trail is checked with.
#[derive(Debug, Clone, Copy)]
pub struct TrailKeys<'a> {
    /// What signed the attestations in the rows.
    pub attestations: &'a Jwks,
    /// What signed the checkpoints: keys of their own, never the
    /// attestation key.
    pub checkpoints: &'a Jwks,
}

/// Walks a trail in `seq` order.
pub struct ChainCheck<'a> {
    keys: TrailKeys<'a>,
    /// Heads the rows must hold: signed ones, and those expected.
    checkpoints: BTreeMap<i64, Hash>,
    /// Every signed checkpoint (the trail's and the witnesses'), by row:
    /// their own chain.
    signed: BTreeMap<i64, Signed>,
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
    pub fn new(keys: TrailKeys<'a>, stored: &[StoredCheckpoint]) -> Result<Self, Finding> {
        let signed = Self::verified(keys, stored)?;
        let anchor = (signed.iter().rev())
            .find(|(_, s)| s.cut)
            .map_or(Head::EMPTY, |(&seq, s)| Head { seq, hash: s.hash });
        Ok(Self::anchored(keys, signed, anchor))
    }

    /// A walk of a part of a trail (an export) whose first row follows
    /// `after`, with the checkpoints of that part.
    pub fn after(
        keys: TrailKeys<'a>,
        after: Head,
        stored: &[StoredCheckpoint],
    ) -> Result<Self, Finding> {
        let signed = Self::verified(keys, stored)?;
        Ok(Self::anchored(keys, signed, after))
    }

    fn verified(
        keys: TrailKeys<'a>,
        stored: &[StoredCheckpoint],
    ) -> Result<BTreeMap<i64, Signed>, Finding> {
        stored
            .iter()
            .map(|cp| Ok((cp.seq, verify_checkpoint(keys.checkpoints, cp)?)))
            .collect()
    }

    fn anchored(keys: TrailKeys<'a>, signed: BTreeMap<i64, Signed>, anchor: Head) -> Self {
        Self {
            keys,
            checkpoints: signed.iter().map(|(&seq, s)| (seq, s.hash)).collect(),
            signed,
            anchor: anchor.seq,
            expected: anchor.seq + 1,
            prev: anchor.hash,
            rows: 0,
            vouched: anchor.seq,
            witnessed_only: BTreeSet::new(),
            expected_only: BTreeSet::new(),
        }
    }

    /// Holds the trail to checkpoints a witness kept outside its database:
    /// each must verify, agree with the trail's own checkpoint at its row
    /// if there is one, and be reached by the rows (checked as they are
    /// pushed and at `finish`). Those at or before the newest cut vouch
    /// for rows pruned on purpose, and are passed over.
    pub fn witnessed(mut self, witnessed: &[StoredCheckpoint]) -> Result<Self, Finding> {
        for cp in witnessed {
            let this = verify_checkpoint(self.keys.checkpoints, cp)?;
            if cp.seq <= self.anchor {
                continue;
            }
            match self.checkpoints.get(&cp.seq) {
                Some(stored) if *stored != this.hash => {
                    return Err(Finding::BadCheckpoint {
                        seq: cp.seq,
                        why: "it disagrees with the witnessed checkpoint of that row".into(),
                    });
                }
                Some(_) => {}
                None => {
                    self.checkpoints.insert(cp.seq, this.hash);
                    self.signed.insert(cp.seq, this);
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
            .keys
            .attestations
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

    /// The checkpoints' own chain, after the newest cut: each names the
    /// checkpoint before it, which must be there, with the head it names,
    /// and with no other checkpoint between them (cuts, which anchor and
    /// name nothing, aside). One whose predecessor was pruned is the
    /// first of the chain kept.
    fn checkpoints_chain(&self) -> Result<(), Finding> {
        let periodic = || self.signed.range(self.anchor + 1..).filter(|(_, s)| !s.cut);
        let mut before: Option<(i64, Hash)> = None;
        for (&seq, this) in periodic() {
            if let Some(prev) = this.prev.filter(|p| p.seq > self.anchor) {
                match before {
                    Some((b, hash)) if b == prev.seq && hash == prev.hash => {}
                    Some((b, _)) if b == prev.seq => {
                        return Err(Finding::BadCheckpoint {
                            seq,
                            why: format!(
                                "it names another head for the checkpoint at row {b} than that checkpoint signs"
                            ),
                        });
                    }
                    Some((b, _)) if b > prev.seq => {
                        return Err(Finding::BadCheckpoint {
                            seq,
                            why: format!(
                                "it names the checkpoint at row {} as the one before it, but the one at row {b} comes between",
                                prev.seq
                            ),
                        });
                    }
                    _ => {
                        return Err(Finding::MissingCheckpoint {
                            seq: prev.seq,
                            named_by: seq,
                        });
                    }
                }
            }
            before = Some((seq, this.hash));
        }
        Ok(())
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
        self.checkpoints_chain()?;
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

/// A checkpoint's signed content, once its signature and its row check.
fn verify_checkpoint(keys: &Jwks, cp: &StoredCheckpoint) -> Result<Signed, Finding> {
    let bad = |why: String| Finding::BadCheckpoint { seq: cp.seq, why };
    let claims: CheckpointClaims =
        keys.verify_signature(&cp.token, CHECKPOINT_TYPE)
            .map_err(|e| match e {
                TokenError::UnknownKey(kid) => Finding::UnknownCheckpointKey { seq: cp.seq, kid },
                e => bad(e.to_string()),
            })?;
    let not_a_hash = || bad("a head it names is not a SHA-256 hash".into());
    let hash = decode_hash(&claims.head).ok_or_else(not_a_hash)?;
    if claims.seq != cp.seq {
        return Err(bad(format!("it is signed for row {}", claims.seq)));
    }
    let prev = match (claims.prev_seq, &claims.prev_head) {
        (Some(seq), Some(head)) => Some(Head {
            seq,
            hash: decode_hash(head).ok_or_else(not_a_hash)?,
        }),
        (None, None) => None,
        _ => return Err(bad("it names half of the checkpoint before it".into())),
    };
    Ok(Signed {
        hash,
        prev,
        cut: claims.cut,
    })
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

    /// The checkpoints' own key.
    fn checkpoint_key() -> Keyring {
        Keyring::new(SigningKey::from_bytes(&[8; 32]), vec![])
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
                .sign_checkpoint(&CheckpointClaims::new("t", &head, None, 5, cut))
                .unwrap(),
        }
    }

    /// Periodic checkpoints at `rows[i]` for each `i`, each naming the one
    /// before it, as the writer signs them.
    fn chained(rows: &[AuditRecord], at: &[usize]) -> Vec<StoredCheckpoint> {
        let mut prev: Option<Head> = None;
        at.iter()
            .map(|&i| {
                let head = Head {
                    seq: rows[i].seq,
                    hash: rows[i].row_hash,
                };
                let claims = CheckpointClaims::new("t", &head, prev.as_ref(), 5, false);
                prev = Some(head);
                StoredCheckpoint {
                    seq: head.seq,
                    token: checkpoint_key().sign_checkpoint(&claims).unwrap(),
                }
            })
            .collect()
    }

    fn check(
        ring: &Keyring,
        rows: &[AuditRecord],
        cps: &[StoredCheckpoint],
        head: Head,
    ) -> Result<Summary, Finding> {
        let attestations = Jwks::parse(ring.jwks_json()).unwrap();
        let checkpoints = Jwks::parse(checkpoint_key().jwks_json()).unwrap();
        let keys = TrailKeys {
            attestations: &attestations,
            checkpoints: &checkpoints,
        };
        let mut walk = ChainCheck::new(keys, cps)?;
        for row in rows {
            walk.push(row)?;
        }
        walk.finish(head)
    }

    #[test]
    fn an_untouched_trail_verifies() {
        let ring = keyring();
        let rows = trail(&ring, 10);
        let cps = [checkpoint(&checkpoint_key(), &rows[4], false)];
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
            checkpoint(&checkpoint_key(), &rows[2], false),
            checkpoint(&checkpoint_key(), &rows[7], false),
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
        let cps = [checkpoint(&checkpoint_key(), &rows[8], false)];
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
        let cut = [checkpoint(&checkpoint_key(), &rows[3], true)];
        let summary = check(&ring, &rows[4..], &cut, head(&rows)).unwrap();
        assert_eq!((summary.rows, summary.anchor), (6, 4));
        // Rows dropped from the start without a signed cut.
        assert_eq!(
            check(&ring, &rows[4..], &[], head(&rows)),
            Err(Finding::Removed { first: 1, last: 4 })
        );
        // A periodic checkpoint is no cut.
        let periodic = [checkpoint(&checkpoint_key(), &rows[3], false)];
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
            Err(Finding::UnknownCheckpointKey { seq: 2, .. })
        ));
        // Under the checkpoint key's name, with another key's signature.
        let mut spoofed = checkpoint(&checkpoint_key(), &rows[1], true);
        let forged_sig = checkpoint(&other, &rows[1], true).token;
        let sig = forged_sig.rsplit('.').next().unwrap();
        let (signed, _) = spoofed.token.rsplit_once('.').unwrap();
        spoofed.token = format!("{signed}.{sig}");
        assert!(matches!(
            check(&ring, &rows, &[spoofed], head(&rows)),
            Err(Finding::BadCheckpoint { seq: 2, .. })
        ));
        let mut misfiled = checkpoint(&checkpoint_key(), &rows[1], false);
        misfiled.seq = 3;
        assert!(matches!(
            check(&ring, &rows, &[misfiled], head(&rows)),
            Err(Finding::BadCheckpoint { seq: 3, .. })
        ));
    }

    #[test]
    fn checkpoints_are_chained_and_one_removed_from_the_middle_is_missed() {
        let ring = keyring();
        let rows = trail(&ring, 10);
        let cps = chained(&rows, &[1, 4, 7]);
        assert!(check(&ring, &rows, &cps, head(&rows)).is_ok());
        // The middle one deleted from the trail, with no witness.
        let cut = [cps[0].clone(), cps[2].clone()];
        assert_eq!(
            check(&ring, &rows, &cut, head(&rows)),
            Err(Finding::MissingCheckpoint {
                seq: 5,
                named_by: 8
            })
        );
        // A checkpoint kept from another chain (another head at row 5).
        let mut other = trail(&ring, 10);
        other[4].row_hash = [7; 32];
        let mut forked = chained(&other, &[1, 4, 7]);
        forked[1] = cps[1].clone();
        assert!(matches!(
            check(&ring, &rows, &forked, head(&rows)),
            Err(Finding::BadCheckpoint { seq: 8, .. })
        ));
        // A cut anchors: what it pruned is no longer asked for.
        let mut pruned = vec![checkpoint(&checkpoint_key(), &rows[5], true)];
        pruned.push(cps[2].clone());
        let summary = check(&ring, &rows[6..], &pruned, head(&rows)).unwrap();
        assert_eq!((summary.anchor, summary.checkpoint), (6, Some(8)));
    }

    #[test]
    fn a_checkpoint_signed_by_the_attestation_key_is_not_one() {
        let ring = keyring();
        let rows = trail(&ring, 4);
        let cps = [checkpoint(&ring, &rows[1], false)];
        assert_eq!(
            check(&ring, &rows, &cps, head(&rows)),
            Err(Finding::UnknownCheckpointKey {
                seq: 2,
                kid: ring.signing_kid()
            })
        );
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
