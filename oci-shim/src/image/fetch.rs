//! The registry side of a pull: an `oci-client` set up from [`RegistryCredentials`] (extra
//! root CA, plain HTTP only for the listed insecure registries, Basic or bearer credentials),
//! manifest resolution through manifest lists, and blob streams. Verification of what comes
//! back is done here for manifests and by the store for blobs — never left to the client.

use std::time::Duration;

use bytes::Bytes;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol, SizedStream};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

use super::artifact::{is_index, select_from_index};
use super::{Auth, ImageError, RegistryCredentials, install_crypto_provider};

/// Manifest media types a pull accepts.
const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// How long connecting and each read may take; a stalled registry fails the pull (and the
/// node agent backs off) instead of hanging a pod forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A client bound to one reference and its credentials.
pub(super) struct Remote {
    client: Client,
    auth: RegistryAuth,
    pub reference: Reference,
}

impl Remote {
    /// Builds a client for `reference` from `creds`.
    pub fn new(reference: Reference, creds: &RegistryCredentials) -> Result<Remote, ImageError> {
        install_crypto_provider();
        let mut config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(creds.insecure_registries.clone()),
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        };
        if let Some(pem) = &creds.extra_root_ca_pem {
            config
                .extra_root_certificates
                .push(Certificate { encoding: CertificateEncoding::Pem, data: pem.as_bytes().to_vec() });
        }
        let client = Client::try_from(config).map_err(|e| ImageError::Registry {
            reference: reference.whole(),
            message: format!("setting up the registry client: {e}"),
        })?;
        let auth = match &creds.auth {
            None => RegistryAuth::Anonymous,
            Some(Auth::Basic { username, password }) => RegistryAuth::Basic(username.clone(), password.clone()),
            Some(Auth::Bearer(token)) => RegistryAuth::Bearer(token.clone()),
        };
        Ok(Remote { client, auth, reference })
    }

    /// The client and credentials, for pushes.
    pub fn parts(&self) -> (&Client, &RegistryAuth) {
        (&self.client, &self.auth)
    }

    fn registry_error(&self, e: impl std::fmt::Display) -> ImageError {
        ImageError::Registry { reference: self.reference.whole(), message: e.to_string() }
    }

    /// A client error as the pod's waiting message: what the registry answered.
    fn client_error(&self, e: oci_client::errors::OciDistributionError) -> ImageError {
        self.registry_error(describe(&e))
    }
}

/// `oci-client`'s error in the registry's terms: its "Not authorized" is a 401 answer, said so
/// (with what usually causes it) so `ErrImagePull` reads like the kubelet's.
pub(super) fn describe(e: &oci_client::errors::OciDistributionError) -> String {
    match e {
        oci_client::errors::OciDistributionError::UnauthorizedError { url } => format!(
            "the registry answered 401 Unauthorized to {url}: the credentials were refused or none were given \
             (check the pod's imagePullSecrets)"
        ),
        other => other.to_string(),
    }
}

impl Remote {
    /// Fetches the image manifest, following a manifest list to the platform entry; returns
    /// it with its verified digest and raw bytes.
    pub async fn manifest(&self) -> Result<(OciImageManifest, String, Bytes), ImageError> {
        let (raw, digest) = self.raw_manifest(&self.reference).await?;
        let doc: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| self.registry_error(format_args!("manifest {digest} is not JSON: {e}")))?;
        let (raw, digest) = if is_index(&doc) {
            let chosen = select_from_index(&doc).ok_or_else(|| ImageError::Unsupported {
                reference: self.reference.whole(),
                message: "the manifest list has no wasm or linux entry for this machine".into(),
            })?;
            self.raw_manifest(&self.reference.clone_with_digest(chosen)).await?
        } else {
            (raw, digest)
        };
        let manifest: OciImageManifest = serde_json::from_slice(&raw)
            .map_err(|e| self.registry_error(format_args!("manifest {digest} is not an image manifest: {e}")))?;
        Ok((manifest, digest, raw))
    }

    /// One manifest's bytes, checked against the digest in the reference (if any).
    async fn raw_manifest(&self, reference: &Reference) -> Result<(Bytes, String), ImageError> {
        let (raw, _claimed) = self
            .client
            .pull_manifest_raw(reference, &self.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.client_error(e))?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
        if let Some(expected) = reference.digest()
            && expected != actual
        {
            return Err(ImageError::DigestMismatch {
                reference: self.reference.whole(),
                digest: expected.to_string(),
                actual,
            });
        }
        Ok((raw, actual))
    }

    /// A stream of one blob's bytes (verified by the store as it writes them).
    pub async fn blob(&self, descriptor: &OciDescriptor) -> Result<SizedStream, ImageError> {
        self.client.pull_blob_stream(&self.reference, descriptor).await.map_err(|e| self.client_error(e))
    }
}
