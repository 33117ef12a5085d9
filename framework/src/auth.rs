//! Signed requests: the SharedKey scheme every request to the service uses.
//!
//! A request carries
//!
//! - `x-tessera-date`: when it was made, RFC 3339 in UTC (for example
//!   `2026-12-01T05:00:00Z`); the service refuses requests more than
//!   [`MAX_CLOCK_SKEW`] older or newer than its own clock;
//! - `x-tessera-content-sha256`: the lowercase hex SHA-256 of the body (of
//!   the empty string when there is none); the service checks the body
//!   against it;
//! - `Authorization: SharedKey <account>:<signature>`, where the signature is
//!   the base64 HMAC-SHA256, keyed with the account's key (the base64-decoded
//!   bytes), of the [canonical string](canonical_string).
//!
//! Each account has two keys, so that one can be regenerated while clients
//! still use the other.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header holding the request's time.
pub const DATE_HEADER: &str = "x-tessera-date";
/// The header holding the SHA-256 of the request's body.
pub const CONTENT_SHA256_HEADER: &str = "x-tessera-content-sha256";
/// The scheme name in the `Authorization` header.
pub const SCHEME: &str = "SharedKey";
/// How far a request's date may be from the service's clock.
pub const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
/// The SHA-256 of an empty body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carries no `Authorization` header.
    #[error(
        "the request is not signed: send `Authorization: SharedKey <account>:<signature>` (the CLI and the client sign with TESSERA_ACCOUNT and TESSERA_KEY)"
    )]
    Missing,
    /// The `Authorization` header is not `SharedKey <account>:<signature>`.
    #[error("the Authorization header must be `SharedKey <account>:<base64 signature>`")]
    Malformed,
    /// A signing header is missing or unreadable.
    #[error("the `{0}` header is missing or malformed: {1}")]
    BadHeader(&'static str, String),
    /// The request's date is outside the allowed window.
    #[error(
        "the request's {DATE_HEADER} {date} is more than 15 minutes from the service's clock ({now}); check this machine's clock"
    )]
    Expired {
        /// The request's date.
        date: String,
        /// The service's clock.
        now: String,
    },
    /// The account does not exist or the signature does not match.
    #[error(
        "the signature does not match: check the account name and key (a regenerated key replaces the old one)"
    )]
    BadSignature,
    /// The body does not match its declared SHA-256.
    #[error("the body does not match its {CONTENT_SHA256_HEADER} header")]
    BodyMismatch,
}

/// The string a request's signature covers, one field a line:
///
/// ```text
/// METHOD
/// /path/as/sent
/// sorted query
/// content type
/// content sha256
/// date
/// ```
///
/// The method is upper case; the path is exactly as sent (percent-encoded);
/// the query is its `&`-separated pairs exactly as sent, sorted bytewise and
/// joined with `&` (empty without a query); the content type is the
/// `Content-Type` header as sent (empty without one).
pub fn canonical_string(
    method: &str,
    path: &str,
    query: Option<&str>,
    content_type: &str,
    content_sha256: &str,
    date: &str,
) -> String {
    let mut pairs: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    pairs.sort_unstable();
    format!(
        "{}\n{path}\n{}\n{content_type}\n{content_sha256}\n{date}",
        method.to_ascii_uppercase(),
        pairs.join("&")
    )
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The base64 signature of `canonical` with `key`.
pub fn sign(key: &[u8], canonical: &str) -> String {
    let mut mac = mac(key);
    mac.update(canonical.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Whether `signature` (base64) is `canonical` signed with `key`, compared
/// in constant time.
pub fn verify(key: &[u8], canonical: &str, signature: &str) -> bool {
    let Ok(signature) = BASE64.decode(signature) else {
        return false;
    };
    let mut mac = mac(key);
    mac.update(canonical.as_bytes());
    mac.verify_slice(&signature).is_ok()
}

/// The `Authorization` header's value for `account` and `signature`.
pub fn authorization(account: &str, signature: &str) -> String {
    format!("{SCHEME} {account}:{signature}")
}

/// Splits an `Authorization` header into the account and the signature.
pub fn parse_authorization(header: &str) -> Result<(&str, &str), AuthError> {
    let rest = header
        .strip_prefix(SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(AuthError::Malformed)?;
    match rest.split_once(':') {
        Some((account, signature)) if !account.is_empty() && !signature.is_empty() => {
            Ok((account, signature))
        }
        _ => Err(AuthError::Malformed),
    }
}

/// The value of the date header for `time`.
pub fn format_date(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Checks that `date` (the date header) is within [`MAX_CLOCK_SKEW`] of `now`.
pub fn check_date(date: &str, now: DateTime<Utc>) -> Result<(), AuthError> {
    let time = DateTime::parse_from_rfc3339(date)
        .map_err(|e| AuthError::BadHeader(DATE_HEADER, format!("`{date}`: {e}")))?;
    if (now - time.with_timezone(&Utc)).abs() > MAX_CLOCK_SKEW {
        return Err(AuthError::Expired {
            date: date.to_owned(),
            now: format_date(now),
        });
    }
    Ok(())
}

/// Decodes an account key (base64).
pub fn decode_key(key: &str) -> Result<Vec<u8>, AuthError> {
    BASE64
        .decode(key.trim())
        .map_err(|e| AuthError::BadHeader("key", format!("an account key is base64: {e}")))
}

/// A new random account key: 32 bytes from the operating system, base64.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the operating system provides random bytes");
    BASE64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn canonical() -> String {
        canonical_string(
            "post",
            "/v1/jobs",
            Some("b=2&a=1&a=0"),
            "application/json",
            EMPTY_BODY_SHA256,
            "2026-12-01T05:00:00Z",
        )
    }

    #[test]
    fn the_canonical_string_sorts_the_query_and_keeps_the_rest_as_sent() {
        assert_eq!(
            canonical(),
            format!(
                "POST\n/v1/jobs\na=0&a=1&b=2\napplication/json\n{EMPTY_BODY_SHA256}\n2026-12-01T05:00:00Z"
            )
        );
        assert_eq!(
            canonical_string("GET", "/v1/apps", None, "", "x", "d"),
            "GET\n/v1/apps\n\n\nx\nd"
        );
    }

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let key = decode_key(&generate_key()).unwrap();
        assert_eq!(key.len(), 32);
        let signature = sign(&key, &canonical());
        assert!(verify(&key, &canonical(), &signature));
        let other = decode_key(&generate_key()).unwrap();
        assert!(!verify(&other, &canonical(), &signature));
        assert!(!verify(&key, &canonical(), "not base64!"));
        // A known vector (RFC 4231, test case 2), so that other clients can
        // check their implementation.
        assert_eq!(
            sign(b"Jefe", "what do ya want for nothing?"),
            BASE64.encode(
                hex::decode("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
                    .unwrap()
            )
        );
    }

    #[test]
    fn authorization_headers_are_parsed_strictly() {
        let header = authorization("alice", "c2ln");
        assert_eq!(parse_authorization(&header), Ok(("alice", "c2ln")));
        for bad in [
            "",
            "SharedKey",
            "SharedKey alice",
            "SharedKey :sig",
            "SharedKey alice:",
            "Bearer alice:sig",
            "SharedKeyalice:sig",
        ] {
            assert_eq!(parse_authorization(bad), Err(AuthError::Malformed), "{bad}");
        }
    }

    #[test]
    fn dates_outside_fifteen_minutes_are_refused() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(check_date("2026-12-01T04:45:00Z", now), Ok(()));
        assert_eq!(check_date("2026-12-01T05:15:00+00:00", now), Ok(()));
        assert!(matches!(
            check_date("2026-12-01T04:44:59Z", now),
            Err(AuthError::Expired { .. })
        ));
        assert!(matches!(
            check_date("2026-12-01T05:15:01Z", now),
            Err(AuthError::Expired { .. })
        ));
        let err = check_date("yesterday", now).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the `x-tessera-date` header is missing or malformed")
        );
        assert_eq!(format_date(now), "2026-12-01T05:00:00Z");
    }

    /// Property tests of what parses untrusted input; `.ci/run` runs them
    /// again with many more cases.
    mod fuzz {
        use super::*;

        proptest! {
            /// Changing any byte of what was signed, or of the signature, makes
            /// verification fail; verification never panics.
            #[test]
            fn tampering_never_verifies(
                key in proptest::collection::vec(any::<u8>(), 1..64),
                text in ".{0,200}",
                at in any::<prop::sample::Index>(),
                flip in 1u8..=255,
            ) {
                let signature = sign(&key, &text);
                prop_assert!(verify(&key, &text, &signature));
                let mut bytes = text.clone().into_bytes();
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] ^= flip;
                    let tampered = String::from_utf8_lossy(&bytes).into_owned();
                    prop_assert_eq!(verify(&key, &tampered, &signature), tampered == text);
                }
                let mut raw = BASE64.decode(&signature).unwrap();
                let i = at.index(raw.len());
                raw[i] ^= flip;
                prop_assert!(!verify(&key, &text, &BASE64.encode(raw)));
            }

            #[test]
            fn arbitrary_headers_never_panic(header in ".{0,100}", date in ".{0,40}") {
                let _ = parse_authorization(&header);
                let _ = check_date(&date, Utc::now());
                let _ = verify(b"k", "c", &header);
            }
        }
    }
}
