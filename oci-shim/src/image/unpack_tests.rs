//! Unit tests of the layer unpacker on archives built in memory (run as root, like CI).

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};

use tar::{Builder, EntryType, Header};

use super::*;

/// A tar built entry by entry; raw names bypass the `tar` crate's own path checks so
/// malicious archives can be expressed.
struct Layer(Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(Builder::new(Vec::new()))
    }

    fn entry(mut self, kind: EntryType, name: &str, mode: u32, link: Option<&str>, data: &[u8]) -> Layer {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        let bytes = name.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header.set_mode(mode);
        header.set_uid(1000);
        header.set_gid(2000);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            let bytes = link.as_bytes();
            header.as_old_mut().linkname[..bytes.len()].copy_from_slice(bytes);
        }
        header.set_cksum();
        self.0.append(&header, data).expect("append");
        self
    }

    fn file(self, name: &str, mode: u32, data: &[u8]) -> Layer {
        self.entry(EntryType::Regular, name, mode, None, data)
    }

    fn dir(self, name: &str, mode: u32) -> Layer {
        self.entry(EntryType::Directory, name, mode, None, b"")
    }

    fn symlink(self, name: &str, target: &str) -> Layer {
        self.entry(EntryType::Symlink, name, 0o777, Some(target), b"")
    }

    fn hardlink(self, name: &str, target: &str) -> Layer {
        self.entry(EntryType::Link, name, 0o644, Some(target), b"")
    }

    fn unpack(self, root: &Path) -> Result<UnpackStats, UnpackError> {
        let bytes = self.0.into_inner().expect("finish tar");
        unpack_layer(bytes.as_slice(), root)
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn keeps_modes_owners_links_and_devices() {
    let dir = tempdir();
    let root = dir.path();
    let mut dev = Header::new_gnu();
    dev.set_entry_type(EntryType::Char);
    dev.set_path("dev/null").expect("path");
    dev.set_mode(0o666);
    dev.set_uid(0);
    dev.set_gid(0);
    dev.set_mtime(0);
    dev.set_device_major(1).expect("major");
    dev.set_device_minor(3).expect("minor");
    dev.set_size(0);
    dev.set_cksum();
    let mut layer = Layer::new()
        .dir("./", 0o755)
        .dir("bin/", 0o711)
        .file("bin/tool", 0o4755, b"#!/bin/sh\n")
        .symlink("bin/sh", "/bin/busybox")
        .hardlink("bin/tool2", "bin/tool")
        .entry(EntryType::Fifo, "run/pipe", 0o600, None, b"")
        .dir("dev/", 0o755);
    layer.0.append(&dev, &b""[..]).expect("device");
    let stats = layer.unpack(root).expect("unpack");
    assert_eq!(stats.bytes, 10);

    let tool = fs::metadata(root.join("bin/tool")).expect("tool");
    assert_eq!(tool.mode() & 0o7777, 0o4755, "set-uid survives chown");
    assert_eq!((tool.uid(), tool.gid()), (1000, 2000));
    assert_eq!(tool.mtime(), 1_700_000_000);
    assert_eq!(tool.nlink(), 2);
    assert_eq!(fs::metadata(root.join("bin/tool2")).expect("link").ino(), tool.ino());
    assert_eq!(fs::read_link(root.join("bin/sh")).expect("symlink"), Path::new("/bin/busybox"));
    let bin = fs::metadata(root.join("bin")).expect("bin");
    assert_eq!(bin.mode() & 0o7777, 0o711);
    assert_eq!(bin.mtime(), 1_700_000_000, "directory times set after their children");
    assert!(fs::symlink_metadata(root.join("run/pipe")).expect("fifo").file_type().is_fifo());
    let null = fs::symlink_metadata(root.join("dev/null")).expect("dev");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
}

#[test]
fn whiteouts_take_overlay_form() {
    let dir = tempdir();
    let root = dir.path();
    Layer::new()
        .file("etc/.wh.motd", 0o644, b"")
        .dir("var/cache/", 0o755)
        .file("var/cache/.wh..wh..opq", 0o644, b"")
        .file("var/cache/fresh", 0o644, b"new")
        .unpack(root)
        .expect("unpack");
    let whiteout = fs::symlink_metadata(root.join("etc/motd")).expect("whiteout");
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!root.join("etc/.wh.motd").exists());
    let mut value = [0u8; 4];
    let n = rustix::fs::lgetxattr(root.join("var/cache"), OVERLAY_OPAQUE_XATTR, &mut value).expect("opaque xattr");
    assert_eq!(&value[..n], b"y");
    assert!(!root.join("var/cache/.wh..wh..opq").exists());
    assert_eq!(fs::read(root.join("var/cache/fresh")).expect("fresh"), b"new");
}

#[test]
fn refuses_parent_components_and_keeps_absolute_paths_inside() {
    let dir = tempdir();
    let root = dir.path().join("root");
    fs::create_dir(&root).expect("root");
    let err = Layer::new().file("a/../../evil", 0o644, b"x").unpack(&root).expect_err("..");
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    assert!(err.to_string().contains("escape the snapshot"), "{err}");
    assert!(!dir.path().join("evil").exists());

    let root2 = dir.path().join("root2");
    fs::create_dir(&root2).expect("root2");
    Layer::new().file("/etc/hostname", 0o644, b"x").unpack(&root2).expect("absolute");
    assert!(root2.join("etc/hostname").is_file());
}

#[test]
fn refuses_writing_through_symlinks() {
    let dir = tempdir();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).expect("outside");
    let root = dir.path().join("root");
    fs::create_dir(&root).expect("root");
    let err = Layer::new()
        .symlink("escape", outside.to_str().expect("utf-8"))
        .file("escape/owned", 0o644, b"x")
        .unpack(&root)
        .expect_err("through symlink");
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    assert!(err.to_string().contains("is a symlink"), "{err}");
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0, "nothing written outside");

    let root2 = dir.path().join("root2");
    fs::create_dir(&root2).expect("root2");
    let err = Layer::new().symlink("up", "..").file("up/x/.wh.y", 0o644, b"").unpack(&root2).expect_err("whiteout");
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
}

#[test]
fn hard_links_stay_within_the_layer() {
    let dir = tempdir();
    let root = dir.path().join("root");
    fs::create_dir(&root).expect("root");
    let err = Layer::new().hardlink("passwd", "../../etc/passwd").unpack(&root).expect_err("outside");
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    let err = Layer::new().hardlink("missing", "not/there").unpack(&root).expect_err("missing");
    assert!(matches!(err, UnpackError::HardlinkTarget { .. }), "{err}");
}

#[test]
fn later_entries_replace_earlier_ones() {
    let dir = tempdir();
    let root = dir.path();
    Layer::new()
        .file("a", 0o644, b"first")
        .symlink("a", "b")
        .dir("d/", 0o755)
        .file("d/x", 0o644, b"x")
        .file("d", 0o600, b"now a file")
        .unpack(root)
        .expect("unpack");
    assert_eq!(fs::read_link(root.join("a")).expect("a"), Path::new("b"));
    assert_eq!(fs::read(root.join("d")).expect("d"), b"now a file");
}

/// One PAX record (`"<len> key=value\n"`, the length counting itself).
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

#[test]
fn pax_xattrs_are_applied_except_overlay_ones() {
    let dir = tempdir();
    let root = dir.path();
    let mut records = pax_record("SCHILY.xattr.user.skiff", "yes");
    records.extend(pax_record("SCHILY.xattr.trusted.overlay.opaque", "y"));
    Layer::new()
        .entry(EntryType::XHeader, "PaxHeaders/dir", 0o644, None, &records)
        .dir("dir/", 0o755)
        .unpack(root)
        .expect("unpack");
    let mut value = [0u8; 8];
    let n = rustix::fs::lgetxattr(root.join("dir"), "user.skiff", &mut value).expect("user xattr");
    assert_eq!(&value[..n], b"yes");
    let opaque = rustix::fs::lgetxattr(root.join("dir"), OVERLAY_OPAQUE_XATTR, &mut value);
    assert!(opaque.is_err(), "a layer cannot set overlay xattrs itself");
}
