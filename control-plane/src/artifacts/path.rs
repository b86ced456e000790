//! Pure parsing for the OCI Distribution API: which endpoint a `/v2/<rest>` path names,
//! repository names, tags, digests and `Content-Range` headers.
//!
//! Everything here is string work without I/O, so it is unit-tested directly. Validation is
//! also the registry's path-traversal guard: a name, tag or digest that passes can be used as
//! a file-name component under the storage root.

use super::error::RegistryError;

/// The endpoint a request path (after `/v2/`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `<name>/blobs/<digest>`
    Blob { name: String, digest: Digest },
    /// `<name>/blobs/uploads/` (start an upload)
    UploadStart { name: String },
    /// `<name>/blobs/uploads/<uuid>`
    Upload { name: String, id: String },
    /// `<name>/manifests/<reference>`
    Manifest { name: String, reference: Reference },
    /// `<name>/tags/list`
    Tags { name: String },
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

/// A validated `sha256:<64 lowercase hex>` digest; the only algorithm this registry stores.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>`; anything else is `DIGEST_INVALID` (or `UNSUPPORTED` for other
    /// algorithms, which a client can retry with sha256).
    pub fn parse(s: &str) -> Result<Digest, RegistryError> {
        let (algorithm, hex) =
            s.split_once(':').ok_or_else(|| RegistryError::DigestInvalid(format!("{s:?} is not a digest")))?;
        if algorithm != "sha256" {
            return Err(RegistryError::Unsupported(format!("digest algorithm {algorithm:?} (only sha256)")));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(RegistryError::DigestInvalid(format!("{s:?} is not a sha256 digest")));
        }
        Ok(Digest { hex: hex.to_string() })
    }

    /// From the raw sha256 output.
    pub fn from_sha256(bytes: &[u8]) -> Digest {
        Digest { hex: hex::encode(bytes) }
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// Splits `rest` (the path after `/v2/`) into an endpoint. Names may contain `/`, so the
/// endpoint keyword is searched from the right.
pub fn parse_route(rest: &str) -> Result<Route, RegistryError> {
    let unknown = || RegistryError::NotFound(format!("/v2/{rest}"));
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags { name: valid_name(name)? });
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
        return Ok(Route::UploadStart { name: valid_name(name)? });
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Ok(Route::Upload { name: valid_name(name)?, id: valid_upload_id(id)? });
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Ok(Route::Blob { name: valid_name(name)?, digest: Digest::parse(digest)? });
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Ok(Route::Manifest { name: valid_name(name)?, reference: parse_reference(reference)? });
    }
    Err(unknown())
}

/// A tag or a digest, per the distribution spec's grammar.
pub fn parse_reference(s: &str) -> Result<Reference, RegistryError> {
    if s.contains(':') {
        return Digest::parse(s).map(Reference::Digest);
    }
    valid_tag(s).map(Reference::Tag)
}

/// Tags: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(s: &str) -> Result<String, RegistryError> {
    let mut bytes = s.bytes();
    let ok = s.len() <= 128
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(s.to_string()) } else { Err(RegistryError::TagInvalid(format!("invalid tag {s:?}"))) }
}

/// Repository names: `/`-separated components of `[a-z0-9]` joined by `.`, `_`, `__` or `-`s.
pub fn valid_name(s: &str) -> Result<String, RegistryError> {
    let invalid = || RegistryError::NameInvalid(format!("invalid repository name {s:?}"));
    if s.is_empty() || s.len() > 255 {
        return Err(invalid());
    }
    for component in s.split('/') {
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else { return Err(invalid()) };
        if !alnum(first) || !alnum(last) {
            return Err(invalid());
        }
        let mut run = 0usize; // length of the current separator run
        let mut run_kind = 0u8;
        for b in bytes {
            if alnum(b) {
                run = 0;
                continue;
            }
            if !matches!(b, b'.' | b'_' | b'-') {
                return Err(invalid());
            }
            if run > 0 && *b != run_kind {
                return Err(invalid());
            }
            run += 1;
            run_kind = *b;
            // `.` alone, `_` at most twice, `-` any number of times.
            if (run_kind == b'.' && run > 1) || (run_kind == b'_' && run > 2) {
                return Err(invalid());
            }
        }
    }
    Ok(s.to_string())
}

/// Upload ids are the UUIDs this registry hands out.
fn valid_upload_id(s: &str) -> Result<String, RegistryError> {
    match uuid::Uuid::parse_str(s) {
        Ok(id) => Ok(id.to_string()),
        Err(_) => Err(RegistryError::BlobUploadUnknown(format!("unknown upload {s:?}"))),
    }
}

/// Parses a chunk's `Content-Range: <start>-<end>` (the spec's form, no `bytes ` unit, though
/// that is accepted too) into the inclusive byte range.
pub fn parse_content_range(s: &str) -> Option<(u64, u64)> {
    let s = s.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split_once('/').map_or(s, |(range, _total)| range);
    let (start, end) = s.split_once('-')?;
    let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    (start <= end).then_some((start, end))
}

/// The `Range` header value reporting how much of an upload the registry holds
/// (`0-<size-1>`; `0-0` for an empty upload, as the reference implementation does).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

    #[test]
    fn routes_with_slashes_in_names() {
        let digest = format!("sha256:{HEX}");
        assert_eq!(
            parse_route(&format!("demo/hello/blobs/{digest}")).expect("blob"),
            Route::Blob { name: "demo/hello".into(), digest: Digest::parse(&digest).expect("digest") }
        );
        assert_eq!(parse_route("a/b/c/blobs/uploads/").expect("start"), Route::UploadStart { name: "a/b/c".into() });
        let id = "6f1c0b9e-3a0b-4a43-9d4b-8d1a7f2e9c11";
        assert_eq!(
            parse_route(&format!("x/blobs/uploads/{id}")).expect("upload"),
            Route::Upload { name: "x".into(), id: id.into() }
        );
        assert_eq!(
            parse_route("demo/hello/manifests/v1").expect("manifest"),
            Route::Manifest { name: "demo/hello".into(), reference: Reference::Tag("v1".into()) }
        );
        assert_eq!(parse_route("demo/hello/tags/list").expect("tags"), Route::Tags { name: "demo/hello".into() });
        // A repository may itself be called `blobs` or `manifests`.
        assert_eq!(
            parse_route("blobs/manifests/manifests/latest").expect("odd names"),
            Route::Manifest { name: "blobs/manifests".into(), reference: Reference::Tag("latest".into()) }
        );
        assert!(matches!(parse_route("demo/hello"), Err(RegistryError::NotFound(_))));
    }

    #[test]
    fn names() {
        for ok in ["a", "demo/hello", "a.b", "a_b", "a__b", "a---b", "x9/y-z.w"] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "../etc", "a/../b", "a b", "a._b"] {
            assert!(matches!(valid_name(bad), Err(RegistryError::NameInvalid(_))), "{bad}");
        }
    }

    #[test]
    fn tags_and_digests() {
        assert_eq!(parse_reference("v1.0_rc-1").expect("tag"), Reference::Tag("v1.0_rc-1".into()));
        assert!(matches!(parse_reference(".hidden"), Err(RegistryError::TagInvalid(_))));
        assert!(matches!(parse_reference(&"a".repeat(129)), Err(RegistryError::TagInvalid(_))));
        let d = Digest::parse(&format!("sha256:{HEX}")).expect("digest");
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert!(matches!(Digest::parse("sha256:abc"), Err(RegistryError::DigestInvalid(_))));
        assert!(matches!(
            Digest::parse(&format!("sha256:{}", HEX.to_uppercase())),
            Err(RegistryError::DigestInvalid(_))
        ));
        assert!(matches!(Digest::parse(&format!("sha512:{HEX}")), Err(RegistryError::Unsupported(_))));
        assert!(matches!(Digest::parse("nocolon"), Err(RegistryError::DigestInvalid(_))));
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("5-4"), None);
        assert_eq!(parse_content_range("x-4"), None);
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
    }
}
