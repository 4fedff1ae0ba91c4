//! Unpacking one image layer over a root, safely.
//!
//! Every entry's path is made relative (no root, no `..`); every directory on the way to it must
//! be a real directory inside the root (a link an earlier entry made is never followed); hard
//! links must point inside the root. Whiteouts (`.wh.<name>`, `.wh..wh..opq`) remove what lower
//! layers left. Devices and fifos are skipped; set-id bits are dropped.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::ImageError;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// `name` as a path below the root, or `None` if it would leave it.
fn relative(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Make the directories of `rel` below `root`, refusing to pass through anything that is not a
/// directory (an earlier entry's symbolic link, above all).
fn parent_dirs(root: &Path, rel: &Path) -> Result<(), ImageError> {
    let mut at = root.to_path_buf();
    let Some(parent) = rel.parent() else { return Ok(()) };
    for c in parent.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ImageError::BadLayer(format!(
                    "the layer writes {} through something that is not a directory",
                    rel.display()
                )));
            }
            Err(_) => {
                fs::create_dir(&at)?;
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755))?;
            }
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

fn bad(what: &str, name: &Path) -> ImageError {
    ImageError::BadLayer(format!("the layer's entry {} {what}", name.display()))
}

/// Unpack the tar stream `layer` over `root`.
pub fn unpack_layer(layer: impl Read, root: &Path) -> Result<(), ImageError> {
    let mut archive = tar::Archive::new(layer);
    let entries = archive.entries().map_err(|e| ImageError::BadLayer(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::BadLayer(format!("a broken tar entry: {e}")))?;
        let name = entry.path().map_err(|e| ImageError::BadLayer(format!("a bad entry name: {e}")))?.into_owned();
        let rel = relative(&name).ok_or_else(|| bad("would be written outside the image root", &name))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let file_name = rel.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        parent_dirs(root, &rel)?;
        let path = root.join(&rel);
        if file_name == OPAQUE {
            // Everything lower layers put in this directory is gone.
            if let Some(dir) = path.parent() {
                for e in fs::read_dir(dir)?.flatten() {
                    remove_any(&e.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT) {
            remove_any(&path.with_file_name(hidden))?;
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&path)?;
                    fs::create_dir(&path)?;
                }
                Err(_) => fs::create_dir(&path)?,
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o700))?;
        } else if kind.is_symlink() {
            let target = entry.link_name().ok().flatten().ok_or_else(|| bad("is a link without a target", &name))?;
            remove_any(&path)?;
            std::os::unix::fs::symlink(target.as_ref(), &path)?;
        } else if kind.is_hard_link() {
            let target = entry.link_name().ok().flatten().ok_or_else(|| bad("is a link without a target", &name))?;
            let target_rel = relative(&target).ok_or_else(|| bad("links outside the image root", &name))?;
            parent_dirs(root, &target_rel)?;
            let source = root.join(&target_rel);
            match fs::symlink_metadata(&source) {
                Ok(m) if m.is_file() => {}
                _ => return Err(bad("links to something that is not a file in the image", &name)),
            }
            remove_any(&path)?;
            fs::hard_link(&source, &path)?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            remove_any(&path)?;
            let mut out = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&path)?;
            std::io::copy(&mut entry, &mut out)?;
        }
        // Devices, fifos and anything else: not in a function's root.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().expect("tar")
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // `set_path` refuses `..`; write the raw name so the unpacker's own check is tested.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(kind);
        h.set_path(name).expect("path");
        h.set_link_name(target).expect("target");
        h.set_cksum();
        b.append(&h, std::io::empty()).expect("append");
    }

    #[test]
    fn layers_stack_and_whiteouts_remove() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("root");
        let l1 = layer(|b| {
            file(b, "etc/app.conf", b"one");
            file(b, "etc/gone.conf", b"x");
            file(b, "data/a", b"a");
            file(b, "data/b", b"b");
            link(b, tar::EntryType::Symlink, "bin/sh", "/usr/bin/dash");
        });
        let l2 = layer(|b| {
            file(b, "etc/app.conf", b"two");
            file(b, "etc/.wh.gone.conf", b"");
            file(b, "data/.wh..wh..opq", b"");
            file(b, "data/c", b"c");
            link(b, tar::EntryType::Link, "etc/app.link", "etc/app.conf");
        });
        unpack_layer(&l1[..], &root).expect("l1");
        unpack_layer(&l2[..], &root).expect("l2");
        assert_eq!(fs::read_to_string(root.join("etc/app.conf")).expect("conf"), "two");
        assert_eq!(fs::read_to_string(root.join("etc/app.link")).expect("link"), "two");
        assert!(!root.join("etc/gone.conf").exists());
        assert!(!root.join("data/a").exists() && root.join("data/c").exists());
        assert_eq!(fs::read_link(root.join("bin/sh")).expect("symlink"), PathBuf::from("/usr/bin/dash"));
    }

    #[test]
    fn escapes_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("root");
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).expect("outside");
        // `..` in a name.
        let l = layer(|b| file(b, "../escaped", b"x"));
        assert!(unpack_layer(&l[..], &root).is_err());
        assert!(!dir.path().join("escaped").exists());
        // Writing through a link an earlier entry made.
        let l = layer(|b| {
            link(b, tar::EntryType::Symlink, "evil", outside.to_str().expect("utf8"));
            file(b, "evil/planted", b"x");
        });
        assert!(unpack_layer(&l[..], &root).is_err());
        assert!(!outside.join("planted").exists());
        // A hard link to a file outside.
        fs::write(outside.join("secret"), "s").expect("secret");
        let l = layer(|b| link(b, tar::EntryType::Link, "stolen", "../outside/secret"));
        assert!(unpack_layer(&l[..], &root).is_err());
        assert!(!root.join("stolen").exists());
    }
}
