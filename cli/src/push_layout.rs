//! What `skiff push FILE` was given, told by content rather than by name: a WebAssembly
//! binary (`\0asm`), an OCI image layout directory (`index.json` + `blobs/`), or an archive
//! of one (tar, gzip-compressed or not — what `skopeo copy … oci-archive:`, `docker save`
//! (Docker 25+), `buildah push … oci-archive:` and `tar czf` write). Archives are unpacked
//! into a temporary directory that lives as long as the returned [`Source`].
//!
//! What it does not do: upload anything (`push` and `skiff_oci_shim::image` do).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Something `skiff push` can upload.
#[derive(Debug)]
pub enum Source {
    /// A `.wasm` module or component.
    Wasm(Vec<u8>),
    /// An OCI image layout directory; `_unpacked` holds it when it came from an archive.
    Layout { dir: PathBuf, _unpacked: Option<tempfile::TempDir> },
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Wasm,
    Tar,
    Gzip,
    Unknown,
}

/// The kind of a file from its first 512 bytes (a tar header's `ustar` magic sits at 257).
fn sniff(head: &[u8]) -> FileKind {
    if head.starts_with(b"\0asm") {
        FileKind::Wasm
    } else if head.starts_with(&[0x1f, 0x8b]) {
        FileKind::Gzip
    } else if head.get(257..262) == Some(b"ustar") {
        FileKind::Tar
    } else {
        FileKind::Unknown
    }
}

/// Reads `path` and says what it is; archives are unpacked here.
pub fn open(path: &Path) -> anyhow::Result<Source> {
    let metadata = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if metadata.is_dir() {
        let dir = layout_root(path)
            .with_context(|| format!("{} is a directory but not an OCI image layout", path.display()))?;
        return Ok(Source::Layout { dir, _unpacked: None });
    }
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    let kind = sniff(&head);
    match kind {
        FileKind::Wasm => Ok(Source::Wasm(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)),
        FileKind::Tar | FileKind::Gzip => {
            let unpacked = tempfile::Builder::new().prefix("skiff-push-").tempdir().context("creating a temp dir")?;
            unpack(path, kind == FileKind::Gzip, unpacked.path())
                .with_context(|| format!("unpacking {}", path.display()))?;
            let dir = layout_root(unpacked.path())
                .with_context(|| format!("{} is an archive but holds no OCI image layout", path.display()))?;
            Ok(Source::Layout { dir, _unpacked: Some(unpacked) })
        }
        FileKind::Unknown => bail!(
            "{} is neither a WebAssembly binary, an OCI image layout directory, nor a tar or tar.gz archive of one",
            path.display()
        ),
    }
}

/// Unpacks a (gzip-compressed) tar into `into`; entries escaping it are refused by `tar`.
fn unpack(path: &Path, gzip: bool, into: &Path) -> anyhow::Result<()> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let reader: Box<dyn std::io::Read> =
        if gzip { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.unpack(into)?;
    Ok(())
}

/// `dir` if it holds a layout, else its only subdirectory that does (`tar czf x.tgz layout/`).
fn layout_root(dir: &Path) -> anyhow::Result<PathBuf> {
    let is_layout = |d: &Path| d.join("index.json").is_file() && d.join("blobs").is_dir();
    if is_layout(dir) {
        return Ok(dir.to_path_buf());
    }
    let subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match subdirs.as_slice() {
        [only] if is_layout(only) => Ok(only.clone()),
        _ => bail!("no index.json and blobs/ (an OCI image layout) in it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal layout (content does not matter here) in `dir`.
    fn fake_layout(dir: &Path) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("blobs");
        std::fs::write(dir.join("index.json"), r#"{"schemaVersion":2,"manifests":[]}"#).expect("index");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    }

    fn tar_of(dir: &Path, prefix: &str) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_dir_all(prefix, dir).expect("tar");
        tar.into_inner().expect("tar bytes")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).expect("gzip");
        gz.finish().expect("gzip end")
    }

    #[test]
    fn sniffs_by_content() {
        assert_eq!(sniff(b"\0asm\x01\0\0\0"), FileKind::Wasm);
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), FileKind::Gzip);
        let mut header = vec![0u8; 512];
        header[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&header), FileKind::Tar);
        assert_eq!(sniff(b"\x7fELF"), FileKind::Unknown);
        assert_eq!(sniff(b""), FileKind::Unknown);
    }

    #[test]
    fn opens_layouts_and_archives_whatever_their_names() {
        let work = tempfile::tempdir().expect("tempdir");
        let layout = work.path().join("layout");
        fake_layout(&layout);
        assert!(matches!(open(&layout).expect("dir"), Source::Layout { dir, .. } if dir == layout));

        // A tar.gz named .wasm and a plain tar with the layout one directory down.
        let tgz = work.path().join("image.wasm");
        std::fs::write(&tgz, gzip(&tar_of(&layout, "."))).expect("tgz");
        let nested = work.path().join("image.bin");
        std::fs::write(&nested, tar_of(&layout, "image")).expect("tar");
        for archive in [&tgz, &nested] {
            let Source::Layout { dir, _unpacked } = open(archive).expect("archive") else {
                panic!("{} is a layout archive", archive.display());
            };
            assert!(dir.join("index.json").is_file(), "{}", dir.display());
            assert!(_unpacked.is_some(), "unpacked into a temp dir");
        }

        let wasm = work.path().join("module.tar");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").expect("wasm");
        assert!(matches!(open(&wasm).expect("wasm"), Source::Wasm(bytes) if bytes.len() == 8));
    }

    #[test]
    fn says_what_it_wanted() {
        let work = tempfile::tempdir().expect("tempdir");
        let junk = work.path().join("junk.tar.gz");
        std::fs::write(&junk, b"hello").expect("junk");
        let err = format!("{:#}", open(&junk).expect_err("junk"));
        assert!(err.contains("neither a WebAssembly binary"), "{err}");
        let empty_dir = work.path().join("empty");
        std::fs::create_dir(&empty_dir).expect("dir");
        let err = format!("{:#}", open(&empty_dir).expect_err("not a layout"));
        assert!(err.contains("not an OCI image layout"), "{err}");
        let other = work.path().join("other.tar");
        std::fs::write(&other, tar_of(&empty_dir, "x")).expect("tar");
        let err = format!("{:#}", open(&other).expect_err("no layout inside"));
        assert!(err.contains("holds no OCI image layout"), "{err}");
    }
}
