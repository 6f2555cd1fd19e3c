//! What the benchmarks sign: the claims of a typical verified answer.

use vnid::attest::AttestationClaims;
use vnid::domain::{Purpose, VerdictKind};

/// A verified answer to a hospital, for the request `nonce`.
pub fn typical(nonce: String) -> AttestationClaims {
    AttestationClaims {
        iss: "vnid".into(),
        aud: "bv-tien-giang".into(),
        sub: "mldjzE97T4vJElOLJXpTta1uSZt1l8rd-AoVs_deGnM".into(),
        iat: 1_795_737_600,
        exp: 1_795_824_000,
        jti: "d6711195-2073-42f8-a3d9-ec9dd51608c9".into(),
        nonce,
        purpose: Purpose::Healthcare,
        verdict: VerdictKind::Verified,
        reason: None,
        checks: None,
        data_as_of: 1_795_734_000,
    }
}
