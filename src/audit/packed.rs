//! How a row keeps its attestation: as bytes, not as the base64 text the
//! caller was given. A compact JWS is three base64url parts; stored
//! decoded (`0x01`, header, `0x00`, payload, `0x00`, signature) it takes a
//! quarter less room, and the text comes back exactly, so the row's hash
//! (which covers the text) and the signature check are unchanged.
//!
//! Only a token that comes back exactly is packed: three parts in
//! canonical unpadded base64url whose header and payload hold no `0x00`
//! (JSON text never does). Anything else is kept as its text's bytes,
//! behind a `0x00` when the text itself begins with `0x00` or `0x01`;
//! rows written before packing hold text, which (base64url) never does.

use base64ct::{Base64UrlUnpadded, Encoding};

/// The first byte of a packed token.
const PACKED: u8 = 0x01;
/// The first byte of a text that would otherwise read as packed.
const TEXT: u8 = 0x00;
const SEPARATOR: u8 = 0x00;

/// The bytes a row keeps for `token` (empty for none).
pub fn pack(token: &str) -> Vec<u8> {
    try_pack(token).unwrap_or_else(|| match token.as_bytes() {
        bytes @ [PACKED | TEXT, ..] => [&[TEXT][..], bytes].concat(),
        bytes => bytes.to_vec(),
    })
}

fn try_pack(token: &str) -> Option<Vec<u8>> {
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut out = Vec::with_capacity(token.len() * 3 / 4 + 3);
    out.push(PACKED);
    for (i, part) in [header, payload, signature].into_iter().enumerate() {
        let bytes = Base64UrlUnpadded::decode_vec(part).ok()?;
        if i < 2 {
            if bytes.contains(&SEPARATOR) {
                return None;
            }
            out.extend_from_slice(&bytes);
            out.push(SEPARATOR);
        } else {
            out.extend_from_slice(&bytes);
        }
    }
    // Each part must also be the one encoding of its bytes.
    (unpack(&out).as_deref() == Some(token)).then_some(out)
}

/// The token a row's bytes keep; `None` if they are neither a packed
/// token nor UTF-8 text.
pub fn unpack(stored: &[u8]) -> Option<String> {
    let rest = match stored {
        [PACKED, rest @ ..] => rest,
        [TEXT, text @ ..] => return String::from_utf8(text.to_vec()).ok(),
        text => return String::from_utf8(text.to_vec()).ok(),
    };
    let mut parts = rest.splitn(3, |&b| b == SEPARATOR);
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    let mut token = String::with_capacity(stored.len() * 4 / 3 + 4);
    token.push_str(&Base64UrlUnpadded::encode_string(header));
    token.push('.');
    token.push_str(&Base64UrlUnpadded::encode_string(payload));
    token.push('.');
    token.push_str(&Base64UrlUnpadded::encode_string(signature));
    Some(token)
}

/// The JWS header (its JSON) of what a row keeps, given what the store
/// read up to the header's end: the packed header, or a text token's first
/// part.
pub fn header_json(stored_header: &[u8]) -> Option<Vec<u8>> {
    match stored_header.first() {
        Some(b'{') => Some(stored_header.to_vec()),
        _ => Base64UrlUnpadded::decode_vec(std::str::from_utf8(stored_header).ok()?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        Base64UrlUnpadded::encode_string(bytes)
    }

    fn token(header: &[u8], payload: &[u8], signature: &[u8]) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64(signature))
    }

    #[test]
    fn a_token_is_kept_a_quarter_smaller_and_comes_back_exactly() {
        let signature: Vec<u8> = (0..64).map(|i| (i * 37 % 256) as u8).collect();
        for payload_len in [0usize, 1, 2, 3, 500, 701] {
            let payload = "x".repeat(payload_len);
            let t = token(
                br#"{"alg":"EdDSA","kid":"k"}"#,
                payload.as_bytes(),
                &signature,
            );
            let stored = pack(&t);
            assert_eq!(stored[0], PACKED);
            assert!(
                stored.len() <= t.len() * 3 / 4 + 3,
                "{} of {}",
                stored.len(),
                t.len()
            );
            assert_eq!(unpack(&stored).as_deref(), Some(t.as_str()));
        }
    }

    #[test]
    fn what_would_not_come_back_exactly_is_kept_as_text() {
        let sig = b64(&[0u8; 64]);
        let header = b64(b"{}");
        for odd in [
            String::new(),
            "not a token".to_owned(),
            format!("{header}.{header}"),
            format!("{header}.{header}.{sig}.{sig}"),
            // Non-canonical: trailing bits set ("e30" is "{}", "e31" is not its encoding).
            format!("e31.{header}.{sig}"),
            format!("{header}=.{header}.{sig}"),
            format!("{header}.{}.{sig}", b64(b"a\0b")),
            format!("{header}.{header}.{sig}+"),
        ] {
            let stored = pack(&odd);
            assert_eq!(stored, odd.as_bytes(), "{odd:?}");
            assert_eq!(unpack(&stored).as_deref(), Some(odd.as_str()));
        }
        // A text that begins as packed bytes would (found by the fuzzer).
        for odd in ["\u{1}\u{0}", "\u{0}", "\u{1}e30.e30.AA"] {
            let stored = pack(odd);
            assert_eq!(stored[0], TEXT, "{odd:?}");
            assert_eq!(unpack(&stored).as_deref(), Some(odd), "{odd:?}");
        }
    }

    #[test]
    fn a_signature_may_hold_any_byte() {
        let t = token(b"{}", b"{}", &[0, 0, 1, 0, 255]);
        assert_eq!(unpack(&pack(&t)).as_deref(), Some(t.as_str()));
    }

    #[test]
    fn any_text_comes_back_exactly() {
        // Strings over the alphabets tokens are made of, of every short
        // length: packed or not, each comes back as it went in.
        let alphabet = b"A_-.e3zQ0=\x00\x01";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..40 {
            for _ in 0..200 {
                let text: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % alphabet.len() as u64) as usize] as char
                    })
                    .collect();
                assert_eq!(
                    unpack(&pack(&text)).as_deref(),
                    Some(text.as_str()),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn broken_bytes_are_none() {
        assert_eq!(unpack(&[PACKED, b'{', b'}']), None);
        assert_eq!(unpack(&[PACKED, b'{', 0, b'}']), None);
        assert_eq!(unpack(&[0xff, 0xfe]), None);
        assert_eq!(unpack(&[]).as_deref(), Some(""));
    }

    #[test]
    fn the_header_is_read_from_either_form() {
        let json = br#"{"alg":"EdDSA","kid":"k"}"#;
        assert_eq!(header_json(json).as_deref(), Some(&json[..]));
        assert_eq!(
            header_json(b64(json).as_bytes()).as_deref(),
            Some(&json[..])
        );
        assert_eq!(header_json(b"!!"), None);
    }
}
