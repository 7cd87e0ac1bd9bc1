//! Parsing and formatting of the four SCRAM messages (RFC 5802 section 7), server side.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::credentials::{Key, KEY_LEN};
use crate::exchange::AuthFailure;

/// The only GS2 header accepted: no channel binding, no authorization identity.
pub(crate) const GS2_HEADER: &str = "n,,";

/// A parsed client-first-message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientFirst<'a> {
    /// The client-first-message-bare, which enters the AuthMessage.
    pub bare: &'a str,
    /// The decoded and SASLprep-ed user name.
    pub username: String,
    /// The client's nonce.
    pub nonce: &'a str,
}

/// A parsed client-final-message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientFinal<'a> {
    /// The client-final-message-without-proof, which enters the AuthMessage.
    pub without_proof: &'a str,
    /// The combined client and server nonce.
    pub nonce: &'a str,
    /// The decoded ClientProof.
    pub proof: Key,
}

fn malformed(what: &'static str) -> AuthFailure {
    AuthFailure::Malformed(what)
}

/// Parses `gs2-header client-first-message-bare`.
pub(crate) fn parse_client_first(message: &str) -> Result<ClientFirst<'_>, AuthFailure> {
    let (cbind_flag, rest) = message
        .split_once(',')
        .ok_or(malformed("client-first-message has no GS2 header"))?;
    match cbind_flag {
        "n" => {}
        // "y" (client supports channel binding, thinks the server does not) and "p=..." are
        // both refused: this server offers no channel binding at all.
        "y" => return Err(AuthFailure::Unsupported("channel binding")),
        flag if flag.starts_with("p=") => return Err(AuthFailure::Unsupported("channel binding")),
        _ => return Err(malformed("invalid GS2 channel binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(malformed("client-first-message has no GS2 header"))?;
    if !authzid.is_empty() {
        return Err(if authzid.starts_with("a=") {
            AuthFailure::Unsupported("authorization identity")
        } else {
            malformed("invalid GS2 authorization identity")
        });
    }

    let mut attributes = bare.split(',');
    let first = attributes.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(AuthFailure::Unsupported("mandatory extension"));
    }
    let username = first
        .strip_prefix("n=")
        .ok_or(malformed("client-first-message has no user name"))?;
    let username = decode_username(username)?;
    let nonce = attributes
        .next()
        .and_then(|attr| attr.strip_prefix("r="))
        .ok_or(malformed("client-first-message has no nonce"))?;
    check_nonce(nonce)?;
    check_extensions(attributes)?;
    Ok(ClientFirst {
        bare,
        username,
        nonce,
    })
}

/// `server-first-message = nonce "," salt "," iteration-count`.
pub(crate) fn format_server_first(nonce: &str, salt: &[u8], iterations: u32) -> String {
    format!("r={nonce},s={},i={iterations}", STANDARD.encode(salt))
}

/// Parses `channel-binding "," nonce ["," extensions] "," proof`, checking that the channel
/// binding repeats the `n,,` GS2 header.
pub(crate) fn parse_client_final(message: &str) -> Result<ClientFinal<'_>, AuthFailure> {
    let (without_proof, proof) = message
        .rsplit_once(",p=")
        .ok_or(malformed("client-final-message has no proof"))?;
    let mut attributes = without_proof.split(',');
    let channel_binding = attributes
        .next()
        .and_then(|attr| attr.strip_prefix("c="))
        .ok_or(malformed("client-final-message has no channel binding"))?;
    let channel_binding = STANDARD
        .decode(channel_binding)
        .map_err(|_| malformed("channel binding is not valid base64"))?;
    if channel_binding != GS2_HEADER.as_bytes() {
        return Err(malformed("channel binding does not match the GS2 header"));
    }
    let nonce = attributes
        .next()
        .and_then(|attr| attr.strip_prefix("r="))
        .ok_or(malformed("client-final-message has no nonce"))?;
    check_nonce(nonce)?;
    check_extensions(attributes)?;
    let proof = STANDARD
        .decode(proof)
        .map_err(|_| malformed("proof is not valid base64"))?;
    let proof: Key = proof
        .try_into()
        .map_err(|_| malformed("proof is not 32 bytes long"))?;
    Ok(ClientFinal {
        without_proof,
        nonce,
        proof,
    })
}

/// `server-final-message = verifier`, the `v=` form.
pub(crate) fn format_server_final(signature: &[u8; KEY_LEN]) -> String {
    format!("v={}", STANDARD.encode(signature))
}

/// Decodes a `saslname` (`=2C` is `,`, `=3D` is `=`) and prepares it with SASLprep.
fn decode_username(encoded: &str) -> Result<String, AuthFailure> {
    let mut decoded = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('=') {
        decoded.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3);
        match escape {
            Some(code) if code.eq_ignore_ascii_case("2C") => decoded.push(','),
            Some(code) if code.eq_ignore_ascii_case("3D") => decoded.push('='),
            _ => return Err(malformed("invalid '=' escape in user name")),
        }
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    let prepared = stringprep::saslprep(&decoded)
        .map_err(|_| malformed("user name is not valid under SASLprep"))?;
    if prepared.is_empty() {
        return Err(malformed("empty user name"));
    }
    Ok(prepared.into_owned())
}

/// A nonce is one or more printable ASCII characters other than `,`.
fn check_nonce(nonce: &str) -> Result<(), AuthFailure> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(malformed("invalid nonce"));
    }
    Ok(())
}

/// Optional extensions must at least look like `x=value`; their content is ignored.
fn check_extensions<'a>(extensions: impl Iterator<Item = &'a str>) -> Result<(), AuthFailure> {
    for extension in extensions {
        let mut chars = extension.chars();
        let named = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !named || chars.next() != Some('=') {
            return Err(malformed("invalid attribute"));
        }
    }
    Ok(())
}

/// The encoding of a user name as a `saslname`: `,` becomes `=2C` and `=` becomes `=3D`.
#[cfg(test)]
pub(crate) fn encode_username(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}
