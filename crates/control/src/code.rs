//! Code packages: validated, unpacked once, stored by content hash.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use quarters_types::CodeInfo;
use quarters_types::limits::{UNZIPPED_MAX_BYTES, ZIP_MAX_BYTES};
use sha2::{Digest, Sha256};

use crate::ControlError;

const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

/// Run on every newly unpacked package before it is stored (say, compiling its Python sources).
pub type Prepare = Arc<dyn Fn(&Path) + Send + Sync>;

/// Where code packages live: `<dir>/<sha256-hex>/` (unpacked) and `<dir>/<sha256-hex>.zip`.
#[derive(Clone)]
pub struct CodeStore {
    dir: PathBuf,
    prepare: Arc<OnceLock<Prepare>>,
}

impl std::fmt::Debug for CodeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeStore").field("dir", &self.dir).field("prepare", &self.prepare.get().is_some()).finish()
    }
}

impl CodeStore {
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        // Remove unpackings a crash interrupted.
        for entry in fs::read_dir(&dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(Self { dir, prepare: Arc::default() })
    }

    /// What to run on each package this store unpacks from now on (once; later calls are ignored).
    pub fn set_prepare(&self, prepare: Prepare) {
        let _ = self.prepare.set(prepare);
    }

    /// The unpacked tree of a stored package.
    pub fn task_dir(&self, code: &CodeInfo) -> PathBuf {
        self.dir.join(&code.sha256_hex)
    }

    pub fn zip_path(&self, code: &CodeInfo) -> PathBuf {
        self.dir.join(format!("{}.zip", code.sha256_hex))
    }

    /// Validate, unpack and store a zip. Idempotent for the same bytes.
    pub fn put(&self, zip: &[u8]) -> Result<CodeInfo, ControlError> {
        if zip.len() as u64 > ZIP_MAX_BYTES {
            return Err(ControlError::TooLarge(format!("Zipped size must be smaller than {ZIP_MAX_BYTES} bytes")));
        }
        let digest = Sha256::digest(zip);
        let info = CodeInfo {
            sha256_hex: hex::encode(digest),
            sha256_b64: base64::engine::general_purpose::STANDARD.encode(digest),
            size: zip.len() as u64,
        };
        let dest = self.task_dir(&info);
        if dest.is_dir() {
            return Ok(info);
        }
        let tmp = self.dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let result = unpack(zip, &tmp).and_then(|()| {
            if let Some(prepare) = self.prepare.get() {
                prepare(&tmp);
            }
            fs::write(self.zip_path(&info), zip).map_err(ControlError::io)?;
            match fs::rename(&tmp, &dest) {
                Ok(()) => Ok(()),
                Err(_) if dest.is_dir() => Ok(()), // a concurrent put of the same bytes won
                Err(e) => Err(ControlError::io(e)),
            }
        });
        let _ = fs::remove_dir_all(&tmp);
        result.map(|()| info)
    }
}

impl CodeStore {
    /// Where the `/opt` tree of a function with these layers (in order) is kept.
    pub fn opt_path(&self, layers: &[CodeInfo]) -> PathBuf {
        let mut h = Sha256::new();
        for l in layers {
            h.update(l.sha256_hex.as_bytes());
            h.update(b"\n");
        }
        self.dir.join(format!("opt-{}", hex::encode(h.finalize())))
    }

    /// The `/opt` tree of a function with these layers: each unpacked layer laid over the ones
    /// before it (a later layer's file replaces an earlier one's), as hard links, made once per
    /// combination.
    pub fn opt_dir(&self, layers: &[CodeInfo]) -> Result<PathBuf, ControlError> {
        let dest = self.opt_path(layers);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = self.dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let result = (|| -> io::Result<()> {
            fs::create_dir_all(&tmp)?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
            for layer in layers {
                overlay(&self.task_dir(layer), &tmp)?;
            }
            match fs::rename(&tmp, &dest) {
                Err(_) if dest.is_dir() => Ok(()), // a concurrent merge of the same layers won
                other => other,
            }
        })();
        let _ = fs::remove_dir_all(&tmp);
        result.map(|()| dest).map_err(ControlError::io)
    }
}

/// Lay the tree `src` over `dest`, never following a link already in `dest`.
fn overlay(src: &Path, dest: &Path) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let kind = entry.file_type()?;
        let existing = fs::symlink_metadata(&to).ok();
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    fs::remove_file(&to)?;
                    fs::create_dir(&to)?;
                }
                None => fs::create_dir(&to)?,
            }
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755))?;
            overlay(&from, &to)?;
            continue;
        }
        match existing {
            Some(m) if m.is_dir() => fs::remove_dir_all(&to)?,
            Some(_) => fs::remove_file(&to)?,
            None => {}
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

fn bad_zip() -> ControlError {
    ControlError::invalid("Could not unzip uploaded file. Please check your file, then try to upload again.")
}

/// Unpack into `dest`, refusing anything that would land outside it.
fn unpack(zip: &[u8], dest: &Path) -> Result<(), ControlError> {
    let mut archive = zip::ZipArchive::new(io::Cursor::new(zip)).map_err(|_| bad_zip())?;
    fs::create_dir_all(dest).map_err(ControlError::io)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).map_err(ControlError::io)?;
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|_| bad_zip())?;
        let raw_name = entry.name().map_err(|_| bad_zip())?.to_string();
        let rel = safe_relative(&raw_name).ok_or_else(|| {
            ControlError::invalid(format!(
                "Could not unzip uploaded file: the entry '{raw_name}' would be written outside the function's directory."
            ))
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let path = dest.join(&rel);
        let mode = entry.unix_mode().unwrap_or(0);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(ControlError::io)?;
        }
        if mode & S_IFMT == S_IFLNK {
            let mut target = String::new();
            entry.read_to_string(&mut target).map_err(|_| bad_zip())?;
            if !symlink_stays_inside(&rel, &target) {
                return Err(ControlError::invalid(format!(
                    "Could not unzip uploaded file: the symbolic link '{raw_name}' points outside the function's directory ('{target}')."
                )));
            }
            std::os::unix::fs::symlink(&target, &path).map_err(ControlError::io)?;
            continue;
        }
        if entry.is_dir() {
            fs::create_dir_all(&path).map_err(ControlError::io)?;
            continue;
        }
        let perm = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perm)
            .open(&path)
            .map_err(|e| ControlError::invalid(format!("Could not unzip uploaded file: '{raw_name}': {e}")))?;
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = entry.read(&mut buf).map_err(|_| bad_zip())?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > UNZIPPED_MAX_BYTES {
                return Err(ControlError::invalid(format!(
                    "Unzipped size must be smaller than {UNZIPPED_MAX_BYTES} bytes"
                )));
            }
            out.write_all(&buf[..n]).map_err(ControlError::io)?;
        }
    }
    Ok(())
}

/// A zip entry name as a relative path with no `..`, root or prefix components.
fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.contains('\0') || name.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Whether a link at `link` (relative to the tree) pointing to `target` stays in the tree.
fn symlink_stays_inside(link: &Path, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() || target.contains('\0') {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in Path::new(target).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            if mode & S_IFMT == S_IFLNK {
                w.add_symlink(*name, std::str::from_utf8(data).expect("utf8"), opts).expect("link");
            } else {
                w.start_file(*name, opts).expect("start");
                w.write_all(data).expect("write");
            }
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn paths_and_links_are_checked() {
        assert!(safe_relative("a/b.txt").is_some());
        assert!(safe_relative("../x").is_none());
        assert!(safe_relative("a/../../x").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
        assert!(symlink_stays_inside(Path::new("lib/a.so"), "b.so"));
        assert!(symlink_stays_inside(Path::new("lib/a.so"), "../bootstrap"));
        assert!(!symlink_stays_inside(Path::new("lib/a.so"), "../../etc/passwd"));
        assert!(!symlink_stays_inside(Path::new("a"), "/etc/passwd"));
    }

    #[test]
    fn unpacks_good_zips_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = CodeStore::open(dir.path().to_path_buf()).expect("store");
        let good = zip_of(&[("bootstrap", b"#!/bin/sh\n", 0o100_755), ("lib/data.txt", b"x", 0o100_644)]);
        let info = store.put(&good).expect("good zip");
        let task = store.task_dir(&info);
        let mode = fs::metadata(task.join("bootstrap")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(fs::read(task.join("lib/data.txt")).expect("read"), b"x");
        assert_eq!(store.put(&good).expect("again"), info);

        assert!(store.put(b"not a zip").expect_err("garbage").to_string().contains("Could not unzip"));
        let escape = zip_of(&[("../evil", b"x", 0o100_644)]);
        assert!(store.put(&escape).is_err());
        let link = zip_of(&[("passwd", b"/etc/passwd", S_IFLNK | 0o777)]);
        assert!(store.put(&link).expect_err("link").to_string().contains("symbolic link"));
        let link_up = zip_of(&[("a/b", b"../../x", S_IFLNK | 0o777)]);
        assert!(store.put(&link_up).is_err());
        assert!(!dir.path().join("evil").exists());
    }
}
