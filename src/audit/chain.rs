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
    let kind = entry.stored_kind();
    for field in [
        &*kind,
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

/// A chain's newest row (or, for the whole trail, its newest row of all):
/// its `seq` and its hash.
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

/// Which chain a row is in. The trail is one or more hash chains over one
/// numbering: writers that share a trail append to chains of their own,
/// each under its own head's lock, instead of all through one; each row
/// links to the row before it in its chain. Chain 1 is the first (and the
/// only one of a trail written before chains, and of the embedded trail).
pub type ChainId = i16;
pub const FIRST_CHAIN: ChainId = 1;

/// The newest row of each chain that holds any, as of one moment: what a
/// checkpoint vouches for, and where a walk must end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heads(BTreeMap<ChainId, Head>);

impl Heads {
    /// Chains that hold no row yet are left out.
    pub fn new(heads: impl IntoIterator<Item = (ChainId, Head)>) -> Self {
        Self(heads.into_iter().filter(|(_, h)| h.seq > 0).collect())
    }

    /// A trail of one chain (the first) ending at `head`.
    pub fn one(head: Head) -> Self {
        Self::new([(FIRST_CHAIN, head)])
    }

    pub fn get(&self, chain: ChainId) -> Option<Head> {
        self.0.get(&chain).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ChainId, Head)> + '_ {
        self.0.iter().map(|(&c, &h)| (c, h))
    }

    /// Whether any chain but the first holds rows.
    pub fn beyond_the_first(&self) -> bool {
        self.0.keys().any(|&c| c != FIRST_CHAIN)
    }

    /// The newest row of all: where the trail ends.
    pub fn newest(&self) -> Head {
        self.0
            .values()
            .max_by_key(|h| h.seq)
            .copied()
            .unwrap_or(Head::EMPTY)
    }

    /// What a checkpoint of these heads names as its head: its newest row
    /// and, with the first chain alone, that row's hash (as before chains);
    /// otherwise `SHA-256("vnid-chains-v1" 0, then each chain's number (2
    /// bytes), newest row (8) and hash (32), big-endian, in chain order)`.
    pub fn identity(&self) -> Head {
        let newest = self.newest();
        if !self.beyond_the_first() {
            return newest;
        }
        let mut h = Sha256::new();
        h.update(b"vnid-chains-v1\0");
        for (chain, head) in self.iter() {
            h.update(chain.to_be_bytes());
            h.update(head.seq.to_be_bytes());
            h.update(head.hash);
        }
        Head {
            seq: newest.seq,
            hash: h.finalize().into(),
        }
    }
}

/// One chain's head, as a checkpoint of several chains (or an export's
/// header) names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHeadClaim {
    pub chain: ChainId,
    pub seq: i64,
    /// base64url of the row's hash.
    pub head: String,
}

impl ChainHeadClaim {
    /// Each chain's head, named.
    pub fn list(heads: &Heads) -> Vec<Self> {
        heads
            .iter()
            .map(|(chain, h)| Self {
                chain,
                seq: h.seq,
                head: Base64UrlUnpadded::encode_string(&h.hash),
            })
            .collect()
    }

    /// The heads `claims` name; `None` if one names no SHA-256 hash.
    pub fn heads(claims: &[Self]) -> Option<Heads> {
        let heads = claims
            .iter()
            .map(|c| {
                let hash = decode_hash(&c.head)?;
                Some((c.chain, Head { seq: c.seq, hash }))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Heads::new(heads))
    }
}

/// What a checkpoint signs: the trail's head at `seq` was `head`, and the
/// checkpoint before it (the newest one in the trail when it was signed)
/// was at `prev_seq` with head `prev_head`, so that the checkpoints form a
/// chain of their own and one removed from the middle is missed by the
/// next. A trail of several chains names each chain's head in `chains`,
/// and `head` is their [`Heads::identity`]. A `cut` checkpoint marks where
/// `vnid audit prune` cut the trail: the oldest rows kept follow the heads
/// it names. It names no predecessor: it anchors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    pub iss: String,
    pub seq: i64,
    /// base64url of the row's hash (or of the chains' heads' hash).
    pub head: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainHeadClaim>,
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
    pub fn new(iss: &str, heads: &Heads, prev: Option<&Head>, iat: UnixSeconds, cut: bool) -> Self {
        let identity = heads.identity();
        Self {
            iss: iss.to_owned(),
            seq: identity.seq,
            head: Base64UrlUnpadded::encode_string(&identity.hash),
            chains: if heads.beyond_the_first() {
                ChainHeadClaim::list(heads)
            } else {
                Vec::new()
            },
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
        let claims = Self::unverified(token)?;
        Some(Head {
            seq: claims.seq,
            hash: decode_hash(&claims.head)?,
        })
    }

    /// Each chain's head a stored checkpoint names, read the same way:
    /// where a cut left the chains, for what follows it.
    pub fn unverified_heads(token: &str) -> Option<Heads> {
        let claims = Self::unverified(token)?;
        claims.heads()
    }

    fn unverified(token: &str) -> Option<Self> {
        let payload = token.split('.').nth(1)?;
        serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).ok()?).ok()
    }

    /// Each chain's head it names: the first chain's alone when it names
    /// no chains.
    fn heads(&self) -> Option<Heads> {
        if self.chains.is_empty() {
            let hash = decode_hash(&self.head)?;
            return Some(Heads::one(Head {
                seq: self.seq,
                hash,
            }));
        }
        ChainHeadClaim::heads(&self.chains)
    }
}

fn decode_hash(b64: &str) -> Option<Hash> {
    Base64UrlUnpadded::decode_vec(b64)
        .ok()
        .and_then(|h| Hash::try_from(h).ok())
}

/// A checkpoint's signed content, once its signature and its row check.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signed {
    /// Its head ([`Heads::identity`] of `heads`).
    hash: Hash,
    /// Each chain's head it vouches for.
    heads: Heads,
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
    /// Rows of one chain are gone from between two it still holds (row 0:
    /// the chain's start).
    #[error("audit rows were removed from chain {chain} between row {after} and row {before}")]
    Removed {
        chain: ChainId,
        after: i64,
        before: i64,
    },
    #[error("audit row {seq} was moved: it follows row {follows}, not the row before it")]
    Reordered { seq: i64, follows: i64 },
    /// Found by [`ChainCheck::push`]: row `seq` of `chain` does not follow
    /// the chain's row before it (`after`). The store turns it into
    /// `Reordered` or `Removed` by looking for the row the link points to.
    #[error("audit row {seq} does not follow row {after}, the row before it in chain {chain}")]
    Unlinked {
        seq: i64,
        chain: ChainId,
        after: i64,
        prev: Hash,
    },
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
    /// The newest row.
    pub head: Head,
    /// Each chain's newest row.
    pub heads: Heads,
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

/// What holds a row to a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evidence {
    /// A checkpoint in the trail.
    Signed,
    /// A checkpoint only a witness holds.
    Witnessed,
    /// A head the operator expects (`--expect`).
    Expected,
}

impl Evidence {
    fn name(self) -> &'static str {
        match self {
            Self::Signed => "a signed checkpoint",
            Self::Witnessed => "a witnessed checkpoint",
            Self::Expected => "the expected head",
        }
    }
}

/// Walks a trail in `seq` order, each chain along its links.
pub struct ChainCheck<'a> {
    keys: TrailKeys<'a>,
    /// Rows that must be there with these hashes: each chain's head in
    /// every checkpoint, and the heads expected.
    pinned: BTreeMap<i64, (Hash, Evidence)>,
    /// Pinned rows found.
    reached: BTreeSet<i64>,
    /// Every signed checkpoint (the trail's and the witnesses'), by row:
    /// their own chain.
    signed: BTreeMap<i64, Signed>,
    /// Rows up to here were pruned; `chains` starts at the cut's heads.
    anchor: i64,
    /// Each chain's newest row so far.
    chains: BTreeMap<ChainId, Head>,
    last: i64,
    rows: u64,
    /// The newest pinned row the rows so far agree with.
    vouched: i64,
    /// Checkpoints a witness holds that the trail's own table does not.
    witnessed_only: BTreeSet<i64>,
}

impl<'a> ChainCheck<'a> {
    /// Checks every checkpoint's signature, and anchors the walk at the
    /// newest cut (or at the genesis when the trail was never pruned).
    pub fn new(keys: TrailKeys<'a>, stored: &[StoredCheckpoint]) -> Result<Self, Finding> {
        let signed = Self::verified(keys, stored)?;
        let (anchor, heads) = (signed.iter().rev())
            .find(|(_, s)| s.cut)
            .map_or((0, Heads::default()), |(&seq, s)| (seq, s.heads.clone()));
        Self::anchored(keys, signed, anchor, heads)
    }

    /// A walk of a part of a trail (an export) whose rows follow row
    /// `anchor`, each chain its head in `after`, with the checkpoints of
    /// that part.
    pub fn after(
        keys: TrailKeys<'a>,
        anchor: i64,
        after: Heads,
        stored: &[StoredCheckpoint],
    ) -> Result<Self, Finding> {
        let signed = Self::verified(keys, stored)?;
        Self::anchored(keys, signed, anchor, after)
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

    fn anchored(
        keys: TrailKeys<'a>,
        signed: BTreeMap<i64, Signed>,
        anchor: i64,
        heads: Heads,
    ) -> Result<Self, Finding> {
        let mut walk = Self {
            keys,
            pinned: BTreeMap::new(),
            reached: BTreeSet::new(),
            signed: BTreeMap::new(),
            anchor,
            chains: heads.0,
            last: anchor,
            rows: 0,
            vouched: anchor,
            witnessed_only: BTreeSet::new(),
        };
        for (seq, this) in signed {
            walk.pin_checkpoint(seq, &this, Evidence::Signed)?;
            walk.signed.insert(seq, this);
        }
        Ok(walk)
    }

    /// Pins each chain head the checkpoint at `seq` names (those after the
    /// anchor): two checkpoints that name one row with two hashes are a
    /// forgery.
    fn pin_checkpoint(&mut self, seq: i64, this: &Signed, from: Evidence) -> Result<(), Finding> {
        for (_, head) in this.heads.iter().filter(|(_, h)| h.seq > self.anchor) {
            match self.pinned.get(&head.seq) {
                Some((hash, _)) if *hash != head.hash => {
                    return Err(Finding::BadCheckpoint {
                        seq,
                        why: format!(
                            "it names another hash for row {} than another does",
                            head.seq
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    self.pinned.insert(head.seq, (head.hash, from));
                }
            }
        }
        Ok(())
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
            match self.signed.get(&cp.seq) {
                Some(stored) if stored.hash != this.hash => {
                    return Err(Finding::BadCheckpoint {
                        seq: cp.seq,
                        why: "it disagrees with the witnessed checkpoint of that row".into(),
                    });
                }
                Some(_) => {}
                None => {
                    self.pin_checkpoint(cp.seq, &this, Evidence::Witnessed)?;
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
        match self.pinned.get(&head.seq) {
            Some((pinned, _)) if *pinned != head.hash => Err(Finding::BadCheckpoint {
                seq: head.seq,
                why: "it disagrees with the expected head of that row".into(),
            }),
            Some(_) => Ok(self),
            None => {
                self.pinned
                    .insert(head.seq, (head.hash, Evidence::Expected));
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
        if row_hash(&row.prev_hash, &row.entry) != row.row_hash {
            return Err(Finding::Changed {
                seq,
                what: "its content does not hash to its recorded hash",
            });
        }
        let before = self.chains.get(&row.chain).copied().unwrap_or(Head::EMPTY);
        if row.prev_hash != before.hash {
            return Err(Finding::Unlinked {
                seq,
                chain: row.chain,
                after: before.seq,
                prev: row.prev_hash,
            });
        }
        self.matches_its_attestation(seq, &row.entry)?;
        if let Some((pinned, _)) = self.pinned.get(&seq) {
            if *pinned != row.row_hash {
                return Err(Finding::Rewritten {
                    since: self.vouched,
                    seq,
                });
            }
            self.vouched = seq;
            self.reached.insert(seq);
        }
        self.chains.insert(
            row.chain,
            Head {
                seq,
                hash: row.row_hash,
            },
        );
        self.last = seq;
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

    /// After the last row: each chain must end at its head in `heads`, and
    /// every pinned row must have been found.
    pub fn finish(self, heads: &Heads) -> Result<Summary, Finding> {
        for (chain, head) in heads.iter().filter(|(_, h)| h.seq > self.anchor) {
            let walked = self.chains.get(&chain).copied().unwrap_or(Head::EMPTY);
            if walked.seq < head.seq {
                return Err(Finding::Truncated {
                    last: walked.seq,
                    seq: head.seq,
                    evidence: "the trail's head",
                });
            }
            if walked.seq > head.seq {
                return Err(Finding::Changed {
                    seq: walked.seq,
                    what: "its chain's head says the chain ends before it",
                });
            }
            if walked.hash != head.hash {
                return Err(Finding::Changed {
                    seq: head.seq,
                    what: "it does not hash to the trail's head",
                });
            }
        }
        let missed = (self.pinned.iter())
            .rfind(|(seq, _)| **seq > self.anchor && !self.reached.contains(seq));
        if let Some((&seq, &(_, evidence))) = missed {
            return Err(Finding::Truncated {
                last: self.last,
                seq,
                evidence: evidence.name(),
            });
        }
        self.checkpoints_chain()?;
        if let Some(&seq) = self.witnessed_only.iter().next_back() {
            return Err(Finding::CheckpointRemoved { seq });
        }
        Ok(Summary {
            rows: self.rows,
            anchor: self.anchor,
            head: heads.newest(),
            heads: heads.clone(),
            checkpoint: self.signed.keys().next_back().copied(),
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
    let heads = claims.heads().ok_or_else(not_a_hash)?;
    if heads.identity()
        != (Head {
            seq: claims.seq,
            hash,
        })
    {
        return Err(bad(
            "its head is not the hash of the chains' heads it names".into(),
        ));
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
        heads,
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
            door: crate::domain::Door::Grpc,
        }
    }

    /// The door is in the hash (a row cannot be moved to another door
    /// unseen), and a gRPC row hashes as rows did before doors.
    #[test]
    fn the_door_is_hashed_and_grpc_rows_hash_as_before() {
        use crate::audit::parse_stored_kind;
        use crate::domain::Door;
        let ring = keyring();
        let grpc = entry(&ring, 1);
        assert_eq!(grpc.stored_kind(), "verify");
        let mut before = Sha256::new();
        before.update(b"vnid-audit-v1\0");
        before.update(GENESIS);
        before.update(grpc.at_us.to_be_bytes());
        for field in [
            "verify",
            &grpc.agency,
            &grpc.purpose,
            &grpc.request_id,
            &grpc.subject,
            &grpc.subject_index,
            &grpc.verdict,
            &grpc.reason,
            &grpc.attestation_id,
            &grpc.attestation,
            &grpc.request_digest,
        ] {
            before.update((field.len() as u64).to_be_bytes());
            before.update(field.as_bytes());
        }
        let before: Hash = before.finalize().into();
        assert_eq!(row_hash(&GENESIS, &grpc), before);
        for door in [Door::Json, Door::GrpcWeb] {
            let other = AuditEntry {
                door,
                ..grpc.clone()
            };
            assert_ne!(row_hash(&GENESIS, &other), before, "{door:?}");
            assert_eq!(
                parse_stored_kind(&other.stored_kind()),
                Some((other.kind, door))
            );
        }
        assert_eq!(
            parse_stored_kind("verify_batch.json"),
            Some((AuditKind::Check(CheckCall::BatchItem), Door::Json))
        );
        assert_eq!(
            parse_stored_kind("verify.grpc"),
            None,
            "gRPC is never spelled"
        );
        assert_eq!(parse_stored_kind("verify.carrier-pigeon"), None);
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
                    chain: FIRST_CHAIN,
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
                .sign_checkpoint(&CheckpointClaims::new("t", &Heads::one(head), None, 5, cut))
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
                let claims = CheckpointClaims::new("t", &Heads::one(head), prev.as_ref(), 5, false);
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
        check_heads(ring, rows, cps, &Heads::one(head))
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
            Err(Finding::Unlinked {
                seq: 5,
                chain: FIRST_CHAIN,
                after: 3,
                prev: rows[3].prev_hash
            })
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
                chain: FIRST_CHAIN,
                after: 4,
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
        assert!(matches!(
            check(&ring, &rows[4..], &[], head(&rows)),
            Err(Finding::Unlinked {
                seq: 5,
                after: 0,
                ..
            })
        ));
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

    /// Rows as writers on several chains append them: row `i` (numbered
    /// `seqs[i]`) into chain `chains[i]`, linked to its chain's row before.
    fn chained_trail(ring: &Keyring, seqs: &[i64], chains: &[ChainId]) -> Vec<AuditRecord> {
        let mut prev: BTreeMap<ChainId, Hash> = BTreeMap::new();
        seqs.iter()
            .zip(chains)
            .map(|(&seq, &chain)| {
                let entry = entry(ring, seq);
                let link = prev.get(&chain).copied().unwrap_or(GENESIS);
                let row_hash = row_hash(&link, &entry);
                prev.insert(chain, row_hash);
                AuditRecord {
                    seq,
                    chain,
                    entry,
                    prev_hash: link,
                    row_hash,
                }
            })
            .collect()
    }

    /// Each chain's newest row among `rows`.
    fn heads_of(rows: &[AuditRecord]) -> Heads {
        Heads::new(rows.iter().map(|r| {
            (
                r.chain,
                Head {
                    seq: r.seq,
                    hash: r.row_hash,
                },
            )
        }))
    }

    fn signed(heads: &Heads, prev: Option<&Head>, cut: bool) -> StoredCheckpoint {
        let claims = CheckpointClaims::new("t", heads, prev, 5, cut);
        StoredCheckpoint {
            seq: claims.seq,
            token: checkpoint_key().sign_checkpoint(&claims).unwrap(),
        }
    }

    fn check_heads(
        ring: &Keyring,
        rows: &[AuditRecord],
        cps: &[StoredCheckpoint],
        heads: &Heads,
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
        walk.finish(heads)
    }

    #[test]
    fn several_chains_verify_each_along_its_links_with_numbers_skipped() {
        let ring = keyring();
        // Chains 1 to 3 interleaved; 4 and 9 taken by appends that failed.
        let seqs = [1, 2, 3, 5, 6, 7, 8, 10, 11, 12];
        let chains = [1, 2, 1, 3, 2, 2, 1, 3, 3, 2];
        let rows = chained_trail(&ring, &seqs, &chains);
        let heads = heads_of(&rows);
        let cp = [signed(&heads_of(&rows[..7]), None, false)];
        assert_eq!(
            cp[0].seq, 8,
            "a checkpoint is at the newest row it vouches for"
        );
        let summary = check_heads(&ring, &rows, &cp, &heads).unwrap();
        assert_eq!((summary.rows, summary.head.seq), (10, 12));
        assert_eq!(summary.heads, heads);
        assert_eq!(summary.checkpoint, Some(8));

        // A row of chain 2 deleted: its chain's next row says so.
        let mut removed = rows.clone();
        removed.remove(5);
        assert!(matches!(
            check_heads(&ring, &removed, &cp, &heads),
            Err(Finding::Unlinked {
                seq: 12,
                chain: 2,
                after: 6,
                ..
            })
        ));
        // Chain 3's tail deleted and its head rewound, the other chains
        // going on: the head of chain 3 the checkpoint signed is missed.
        let cut_short: Vec<AuditRecord> = rows.iter().filter(|r| r.chain != 3).cloned().collect();
        let rewound = heads_of(&cut_short);
        assert_eq!(
            check_heads(&ring, &cut_short, &cp, &rewound),
            Err(Finding::Truncated {
                last: 12,
                seq: 5,
                evidence: "a signed checkpoint"
            })
        );
        // ... and with the head left as it was, the head says so.
        assert!(matches!(
            check_heads(&ring, &cut_short, &[], &heads),
            Err(Finding::Truncated { seq: 11, .. })
        ));
        // A row moved into another chain no longer links there.
        let mut moved = rows.clone();
        moved[7].chain = 1;
        assert!(matches!(
            check_heads(&ring, &moved, &[], &heads),
            Err(Finding::Unlinked {
                seq: 10,
                chain: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_checkpoint_of_several_chains_holds_every_head_it_names() {
        let ring = keyring();
        let rows = chained_trail(&ring, &[1, 2, 3, 4], &[1, 2, 1, 2]);
        let heads = heads_of(&rows);
        // Its head is the hash of the chains' heads: change one, and the
        // signature no longer covers what it claims.
        let mut claims = CheckpointClaims::new("t", &heads, None, 5, false);
        assert_eq!(claims.chains.len(), 2);
        claims.chains[0].head = claims.chains[1].head.clone();
        let forged = StoredCheckpoint {
            seq: 4,
            token: checkpoint_key().sign_checkpoint(&claims).unwrap(),
        };
        assert!(matches!(
            check_heads(&ring, &rows, &[forged], &heads),
            Err(Finding::BadCheckpoint { seq: 4, .. })
        ));
        // Rewritten rows of one chain, re-chained: the signed head differs.
        let cp = [signed(&heads, None, false)];
        let mut rewritten = rows.clone();
        rewritten[0].entry.subject_index = "someone-else".into();
        rewritten[0].row_hash = row_hash(&GENESIS, &rewritten[0].entry);
        rewritten[2].prev_hash = rewritten[0].row_hash;
        rewritten[2].row_hash = row_hash(&rewritten[2].prev_hash, &rewritten[2].entry);
        assert_eq!(
            check_heads(&ring, &rewritten, &cp, &heads_of(&rewritten)),
            Err(Finding::Rewritten { since: 0, seq: 3 })
        );
        // A first chain alone signs as before chains: its head is its row's.
        let one = heads_of(&rows[..1]);
        let claims = CheckpointClaims::new("t", &one, None, 5, false);
        assert!(claims.chains.is_empty());
        assert_eq!(
            claims.head,
            Base64UrlUnpadded::encode_string(&rows[0].row_hash)
        );
    }

    #[test]
    fn a_cut_of_several_chains_anchors_each_chain() {
        let ring = keyring();
        let rows = chained_trail(&ring, &[1, 2, 3, 4, 5, 6], &[1, 2, 2, 1, 3, 2]);
        let heads = heads_of(&rows);
        // Rows 1 to 3 pruned: chain 1 follows row 1, chain 2 row 3.
        let cut = signed(&heads_of(&rows[..3]), None, true);
        assert_eq!(cut.seq, 3);
        let summary = check_heads(&ring, &rows[3..], &[cut], &heads).unwrap();
        assert_eq!((summary.rows, summary.anchor), (3, 3));
        // A cut that names chain 1 only leaves chain 2's rows unanchored.
        let partial = signed(&heads_of(&rows[..1]), None, true);
        assert!(matches!(
            check_heads(&ring, &rows[3..], &[partial], &heads),
            Err(Finding::Unlinked {
                seq: 6,
                chain: 2,
                after: 0,
                ..
            })
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
