//! Scratch disks: the `/tmp` of every execution environment.
//!
//! Lambda's `/tmp` is `EphemeralStorage` MB of storage that does not count against the
//! function's memory. A tmpfs cannot give that: its pages are charged to the memory cgroup of
//! whoever writes them and can only go to swap, so a 128 MB function that writes 300 MB into a
//! 512 MB tmpfs is OOM-killed instead of getting `ENOSPC`. Here every environment gets its own
//! small ext4 filesystem in a sparse image file on a loop device, mounted on the host at
//! `<scratch dir>/<env>`; bubblewrap binds that mount at `/tmp`. Writes beyond the size fail
//! with `ENOSPC` in that environment only, and the page cache over the filesystem is ordinary
//! file cache: it is still charged to the writer's memory cgroup, but the kernel writes it back
//! and reclaims it when the cgroup reaches its limit instead of killing anything.
//!
//! - The loop device does direct I/O to its image, so data is not cached a second time in the
//!   host's page cache (measured: large writes under a small memory limit are also several
//!   times faster that way).
//! - The loop device is attached with `LO_FLAGS_AUTOCLEAR` and the image is unlinked as soon as
//!   it is attached: the mount is the only thing holding either, so unmounting frees the device
//!   and the disk space, and a crash leaves nothing but mounts (see
//!   [`ScratchDisks::remove_leftovers`]).
//! - `mkfs.ext4` runs once per size, into a template image; a new image is a copy of the
//!   template's few allocated blocks (about 60 KiB, whatever the size) instead of a format, which
//!   costs a fork, an exec and 5–10 ms of CPU. All images of a size share the template's UUID,
//!   which ext4 does not mind.
//! - Mounting costs about 1.5 ms, so a background thread keeps a few disks ready for each size
//!   in use: copied, attached and mounted as *detached* mounts (`fsmount(2)`), held only by a
//!   file descriptor. Starting an environment attaches one at `<scratch dir>/<env>` with
//!   `move_mount(2)`, which takes about 0.1 ms; only when none is ready does it prepare one
//!   itself. A detached mount is in no mount namespace, so it is not copied into sandboxes
//!   started meanwhile, and it disappears with the process.
//! - Releasing a disk shuts the filesystem down first (`FS_IOC_SHUTDOWN`), so the unmount does
//!   not write back dirty pages of files nobody will read again.
//!
//! - Each environment's disk is a mount in the host's mount namespace, and bubblewrap reads the
//!   whole mount table for every bind it makes: with hundreds of environments alive, most of a
//!   sandbox's start-up went into formatting and parsing other environments' mounts. So the
//!   scratch directory is a mount point of its own (bound onto itself), and the sandbox's
//!   launcher, between fork and exec, enters a new mount namespace, detaches the scratch
//!   directory (every environment's disk with it, in one call) and puts back only its own disk,
//!   at the scratch directory's path ([`NarrowView`]); bubblewrap starts from that.
//!
//! The scratch directory holds `<env>/` (a mount point, named by [`EnvId`] only), `probe/`
//! (the start-up check), `template/<MB>.img`, and `spare/<n>.img` between a copy and its
//! attachment.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quarters_types::EnvId;

/// Disks kept ready per size, unless configured otherwise.
pub const DEFAULT_SPARES: usize = 4;
/// Lambda's default (and smallest) `EphemeralStorage`.
pub const DEFAULT_TMP_MB: u32 = 512;
/// How many distinct sizes are kept warm at once; the least recently used one is dropped.
const MAX_WARM_SIZES: usize = 8;
const SPARE_DIR: &str = "spare";
const TEMPLATE_DIR: &str = "template";
const PROBE: &str = "probe";
const MIB: u64 = 1024 * 1024;

/// `mkfs.ext4` options: no journal (the data dies with the environment, and a journal costs
/// writes), no blocks reserved for root, no `resize_inode` (images never grow), inode tables
/// left for lazy initialisation (and never initialised: see [`MOUNT_FLAG`]), and no discard
/// pass over the fresh, already sparse image. `-T default` keeps 4 KiB blocks and one inode per
/// 16 KiB at every size.
const MKFS_ARGS: &[&str] =
    &["-q", "-F", "-T", "default", "-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard", "-m", "0"];
/// The image is fresh and sparse, so its uninitialised inode tables already read as zeros:
/// don't start the kernel thread that would zero them in the background.
const MOUNT_FLAG: &CStr = c"noinit_itable";

/// Where and how to keep scratch disks.
#[derive(Debug, Clone)]
pub struct ScratchConfig {
    /// Holds the mount points; made if missing. Leftovers of an earlier run in it are removed
    /// by [`ScratchDisks::new`]. Its filesystem holds the (sparse) images, up to each
    /// environment's `EphemeralStorage`.
    pub dir: PathBuf,
    /// Disks kept ready for each size in use.
    pub spares: usize,
    /// Sizes (MB) to keep ready from the start; others become warm when first used.
    pub warm_sizes: Vec<u32>,
}

impl ScratchConfig {
    /// Keep [`DEFAULT_SPARES`] disks of Lambda's default 512 MB ready, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), spares: DEFAULT_SPARES, warm_sizes: vec![DEFAULT_TMP_MB] }
    }
}

/// Makes, pools and hands out scratch disks. Dropping it stops the background formatter, which
/// then releases the disks it kept ready; disks already handed out are unaffected.
pub struct ScratchDisks {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    spare_dir: PathBuf,
    template_dir: PathBuf,
    mkfs: PathBuf,
    spares: usize,
    pool: Mutex<Pool>,
    /// Signalled when a disk is taken from the pool, and on stop.
    wake: Condvar,
    /// Held while a template is made, copied or deleted. Taken before `pool`, never after.
    templates: Mutex<()>,
}

#[derive(Default)]
struct Pool {
    /// Least recently used size first.
    sizes: Vec<Spares>,
    /// Sizes no longer kept warm, for the formatter thread to unmount their disks and delete
    /// their templates.
    discard: Vec<Spares>,
    next_image: u64,
    stopping: bool,
}

struct Spares {
    mb: u32,
    ready: Vec<Prepared>,
}

/// A formatted filesystem on its loop device, mounted nowhere yet: the fd of a detached mount.
/// Dropping it unmounts it, which frees the device and the (already unlinked) image.
struct Prepared {
    mount: OwnedFd,
}

impl std::fmt::Debug for ScratchDisks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScratchDisks").field("dir", &self.shared.dir).field("spares", &self.shared.spares).finish()
    }
}

impl ScratchDisks {
    /// Remove what an earlier run left in `config.dir`, check that this host can make and mount
    /// a scratch disk (needs root, `/dev/loop-control`, ext4, Linux 5.8 and `mkfs.ext4`), and
    /// start the background formatter. An error means: fall back to a tmpfs `/tmp`.
    pub fn new(config: ScratchConfig) -> io::Result<Self> {
        let mkfs = find_mkfs()?;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&config.dir)?;
        let dir = config.dir.canonicalize()?;
        let removed = Self::remove_leftovers(&dir);
        if removed > 0 {
            tracing::warn!(removed, dir = %dir.display(), "removed scratch disks left by an earlier run");
        }
        bind_onto_itself(&dir)?;
        let spare_dir = dir.join(SPARE_DIR);
        let template_dir = dir.join(TEMPLATE_DIR);
        for d in [&spare_dir, &template_dir] {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(d)?;
        }
        let mut pool = Pool::default();
        for &mb in &config.warm_sizes {
            if !pool.sizes.iter().any(|s| s.mb == mb) {
                pool.sizes.push(Spares { mb, ready: Vec::new() });
            }
        }
        let shared = Arc::new(Shared {
            dir,
            spare_dir,
            template_dir,
            mkfs,
            spares: config.spares,
            pool: Mutex::new(pool),
            wake: Condvar::new(),
            templates: Mutex::new(()),
        });
        let disks = Self { shared };
        // A host that cannot make scratch disks fails here rather than at the first cold start.
        let mut probe = disks.attach_as(PROBE, config.warm_sizes.first().copied().unwrap_or(DEFAULT_TMP_MB))?;
        probe.release();
        let shared = disks.shared.clone();
        std::thread::Builder::new().name("scratch-mkfs".into()).spawn(move || refill(&shared))?;
        Ok(disks)
    }

    /// The scratch directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Give environment `env` an empty, world-writable (1777) filesystem with a little under
    /// `tmp_mb` MiB of space (never more), mounted at `<dir>/<env>`. Blocking: about
    /// 0.1 ms with a disk ready; without one, a copy, an attachment and a mount too (about
    /// 2–3 ms), and a format (about 5–10 ms) the first time a size is seen.
    pub fn attach(&self, env: EnvId, tmp_mb: u32) -> io::Result<ScratchDisk> {
        self.attach_as(&env.to_string(), tmp_mb)
    }

    fn attach_as(&self, name: &str, tmp_mb: u32) -> io::Result<ScratchDisk> {
        let prepared = match self.take_spare(tmp_mb) {
            Some(p) => p,
            None => self.shared.prepare(tmp_mb)?,
        };
        let mount = self.shared.dir.join(name);
        fs::DirBuilder::new().mode(0o700).create(&mount)?;
        // From here on, dropping `disk` removes whatever of it exists.
        let mut disk = ScratchDisk { mount, mounted: false, released: false };
        move_mount(&prepared.mount, &disk.mount)?;
        disk.mounted = true;
        // Attached now, so closing the fd no longer unmounts it.
        drop(prepared);
        Ok(disk)
    }

    /// A ready disk of `mb`, if there is one; either way `mb` becomes the most recently used
    /// size and the formatter is woken to top the pool up.
    fn take_spare(&self, mb: u32) -> Option<Prepared> {
        let mut pool = lock(&self.shared.pool);
        let mut entry = match pool.sizes.iter().position(|s| s.mb == mb) {
            Some(i) => pool.sizes.remove(i),
            None => Spares { mb, ready: Vec::new() },
        };
        let spare = entry.ready.pop();
        pool.sizes.push(entry);
        if pool.sizes.len() > MAX_WARM_SIZES {
            let evicted = pool.sizes.remove(0);
            pool.discard.push(evicted);
        }
        drop(pool);
        self.shared.wake.notify_one();
        spare
    }

    /// How many disks of `mb` are ready now.
    pub fn ready(&self, mb: u32) -> usize {
        lock(&self.shared.pool).sizes.iter().find(|s| s.mb == mb).map_or(0, |s| s.ready.len())
    }

    /// Undo what a crashed or killed earlier run left in scratch directory `dir`: lazily unmount
    /// every filesystem mounted below it (which frees their loop devices and images) and delete
    /// the mount points, templates and any image not yet attached. Entries it did not make are
    /// left alone. Returns how many mounts and images were removed. [`ScratchDisks::new`] calls
    /// it; call it after the earlier run's sandboxes are killed.
    pub fn remove_leftovers(dir: &Path) -> usize {
        let Ok(dir) = dir.canonicalize() else {
            return 0;
        };
        let mut removed = 0;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(unescape_mount_path)
            .filter(|p| p.starts_with(&dir) && *p != dir)
            .collect();
        // Deepest first, in case anything is mounted on top of a scratch disk.
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for mount in mounts {
            match umount_detach(&mount) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(path = %mount.display(), error = %e, "cannot unmount a leftover scratch disk"),
            }
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            return removed;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == SPARE_DIR || name == TEMPLATE_DIR {
                for image in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                    let image_name = image.file_name().to_string_lossy().into_owned();
                    if (image_name.ends_with(".img") || image_name.ends_with(".img.part"))
                        && fs::remove_file(image.path()).is_ok()
                        && name == SPARE_DIR
                    {
                        removed += 1;
                    }
                }
            } else if name == PROBE || EnvId::parse_hex(&name).is_some() {
                // An empty mount point by now. Never remove_dir_all: if an unmount failed, this
                // is a tenant's filesystem.
                let _ = fs::remove_dir(entry.path());
            }
        }
        removed
    }
}

impl Drop for ScratchDisks {
    fn drop(&mut self) {
        lock(&self.shared.pool).stopping = true;
        self.shared.wake.notify_all();
        // The scratch directory's bind onto itself, so that the directory can be removed.
        if let Err(e) = umount_detach(&self.shared.dir) {
            tracing::debug!(error = %e, "cannot unmount the scratch directory");
        }
    }
}

impl Shared {
    /// Make a new image of `tmp_mb`, attach it to a loop device, unlink it and mount it,
    /// detached, with its root directory empty and world-writable.
    fn prepare(&self, tmp_mb: u32) -> io::Result<Prepared> {
        let image = {
            let mut pool = lock(&self.pool);
            pool.next_image += 1;
            self.spare_dir.join(format!("{}.img", pool.next_image))
        };
        {
            let _templates = lock(&self.templates);
            let template = self.template_path(tmp_mb);
            if !template.exists() {
                let part = template.with_extension("img.part");
                let _ = fs::remove_file(&part);
                format(&self.mkfs, &part, tmp_mb)?;
                fs::rename(&part, &template)?;
            }
            copy_sparse(&template, &image)?;
        }
        let attached = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .and_then(|file| LoopDevice::attach(&file, &image));
        // The loop device holds the image now (or nothing does): it needs no name.
        let _ = fs::remove_file(&image);
        let device = attached?;
        let mount = fsmount_ext4(&device.path)?;
        // The mount holds the device now; closing our fd leaves auto-clear to the unmount.
        drop(device);
        prepare_root(&mount)?;
        Ok(Prepared { mount })
    }

    fn template_path(&self, tmp_mb: u32) -> PathBuf {
        self.template_dir.join(format!("{tmp_mb}.img"))
    }

    /// Delete the template of `tmp_mb` unless the size is warm again.
    fn remove_template(&self, tmp_mb: u32) {
        let _templates = lock(&self.templates);
        if !lock(&self.pool).sizes.iter().any(|s| s.mb == tmp_mb) {
            let _ = fs::remove_file(self.template_path(tmp_mb));
        }
    }
}

/// The background formatter: keeps `spares` disks ready for every warm size, and unmounts the
/// ones no longer wanted (which takes milliseconds, so not on the caller's thread).
fn refill(shared: &Shared) {
    enum Job {
        Stop(Vec<Prepared>),
        Discard(Vec<Spares>),
        Prepare(u32),
    }
    loop {
        let job = {
            let mut pool = lock(&shared.pool);
            loop {
                if pool.stopping {
                    let pool = &mut *pool;
                    let all = pool.sizes.drain(..).chain(pool.discard.drain(..)).flat_map(|s| s.ready).collect();
                    break Job::Stop(all);
                }
                if !pool.discard.is_empty() {
                    break Job::Discard(std::mem::take(&mut pool.discard));
                }
                // The most recently used size first.
                if let Some(s) = pool.sizes.iter().rev().find(|s| s.ready.len() < shared.spares) {
                    break Job::Prepare(s.mb);
                }
                pool = shared.wake.wait(pool).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let mb = match job {
            Job::Stop(disks) => {
                drop(disks);
                let _templates = lock(&shared.templates);
                for template in fs::read_dir(&shared.template_dir).into_iter().flatten().flatten() {
                    let _ = fs::remove_file(template.path());
                }
                return;
            }
            Job::Discard(sizes) => {
                for size in sizes {
                    drop(size.ready);
                    shared.remove_template(size.mb);
                }
                continue;
            }
            Job::Prepare(mb) => mb,
        };
        match shared.prepare(mb) {
            Ok(prepared) => {
                let mut pool = lock(&shared.pool);
                let stopping = pool.stopping;
                if let Some(s) = pool.sizes.iter_mut().find(|s| s.mb == mb)
                    && !stopping
                {
                    s.ready.push(prepared);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, mb, "cannot prepare a spare scratch disk");
                // Don't spin on a persistent failure (a full disk); cold starts make their own.
                let pool = lock(&shared.pool);
                let _ = shared.wake.wait_timeout(pool, Duration::from_secs(5));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Make `dir` a private mount point of its own (a bind onto itself), unless it is one already
/// (an earlier run's), so that one `umount2` detaches every disk mounted below it.
fn bind_onto_itself(dir: &Path) -> io::Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let already = mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).any(|p| unescape_mount_path(p) == dir);
    let c = c_path(dir)?;
    if !already {
        // SAFETY: mount(2) with NUL-terminated paths that outlive the call.
        if unsafe { libc::mount(c.as_ptr(), c.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: as above; MS_PRIVATE changes only the propagation of the mount at `dir`.
    if unsafe { libc::mount(std::ptr::null(), c.as_ptr(), std::ptr::null(), libc::MS_PRIVATE, std::ptr::null()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a sandbox's launcher needs, between fork and exec, to start bubblewrap in a mount
/// namespace where the scratch directory holds only its own disk (see the module's notes).
/// Made before the fork, since the child may not allocate.
#[derive(Debug)]
pub struct NarrowView {
    own: CString,
    dir: CString,
}

impl NarrowView {
    pub fn new(disks: &ScratchDisks, disk: &ScratchDisk) -> io::Result<Self> {
        Ok(Self { own: c_path(disk.path())?, dir: c_path(disks.dir())? })
    }

    /// Where the sandbox finds its disk once [`NarrowView::enter`] ran: the scratch directory.
    pub fn path(&self) -> &CStr {
        &self.dir
    }

    /// Enter a new mount namespace (propagation from the host only), take a copy of our disk's
    /// mount, detach the scratch directory and attach the copy in its place.
    ///
    /// Only for the child between fork and exec: it changes the calling thread's mount
    /// namespace. It makes raw system calls only and allocates nothing.
    pub fn enter(&self) -> io::Result<()> {
        let check = |rc: libc::c_long| if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) };
        // SAFETY: unshare(2) and mount(2) with NUL-terminated strings that outlive the calls
        // (`self` is borrowed across them).
        unsafe {
            check(libc::c_long::from(libc::unshare(libc::CLONE_NEWNS)))?;
            check(libc::c_long::from(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            )))?;
        }
        // SAFETY: open_tree(2) reads the NUL-terminated path and returns a new fd, owned here
        // and closed below (no allocation: a raw close).
        let copy = check(unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                self.own.as_ptr(),
                libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
            )
        })? as libc::c_int;
        // SAFETY: umount2 and move_mount with NUL-terminated paths that outlive the calls, and
        // the fd open_tree just returned; the fd is closed once, after its last use.
        let attached = unsafe {
            check(libc::c_long::from(libc::umount2(self.dir.as_ptr(), libc::MNT_DETACH))).and_then(|_| {
                check(libc::syscall(
                    libc::SYS_move_mount,
                    copy,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    self.dir.as_ptr(),
                    libc::MOVE_MOUNT_F_EMPTY_PATH,
                ))
            })
        };
        // SAFETY: `copy` is ours and not used after this.
        unsafe { libc::close(copy) };
        attached.map(|_| ())
    }
}

/// An environment's mounted scratch disk. [`ScratchDisk::release`] (or dropping it) unmounts it,
/// which frees its loop device and image. Blocking; keep it off async workers.
#[derive(Debug)]
pub struct ScratchDisk {
    mount: PathBuf,
    mounted: bool,
    released: bool,
}

impl ScratchDisk {
    /// Where the filesystem is mounted on the host; the sandbox binds it at `/tmp`.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Unmount and remove the mount point. Whatever the filesystem holds is thrown away
    /// unwritten. Call after the sandbox's processes are gone (they would get `EIO`).
    pub fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        if self.mounted {
            shut_down(&self.mount);
            if let Err(e) = umount_detach(&self.mount) {
                tracing::warn!(path = %self.mount.display(), error = %e, "cannot unmount a scratch disk");
                return;
            }
        }
        if let Err(e) = fs::remove_dir(&self.mount)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.mount.display(), error = %e, "cannot remove a scratch mount point");
        }
    }
}

impl Drop for ScratchDisk {
    fn drop(&mut self) {
        self.release();
    }
}

/// Bytes of the image whose filesystem lets a file of a little under `tmp_mb` MiB be written
/// (about 2 MiB under: never more than the configured size). ext4's inode tables and bitmaps
/// take 1.58 % of the filesystem at every size, and ext4 keeps 2 % of the blocks, at most
/// 16 MiB, in reserve for its own metadata.
fn image_bytes(tmp_mb: u32) -> u64 {
    let mb = u64::from(tmp_mb);
    let reserve = mb.div_ceil(49).min(16);
    (mb.saturating_sub(2) + reserve) * 10_000 / 9_842 * MIB
}

fn find_mkfs() -> io::Result<PathBuf> {
    ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4", "/usr/bin/mkfs.ext4", "/usr/local/sbin/mkfs.ext4"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "mkfs.ext4 not found; install e2fsprogs"))
}

/// Create the sparse image `path` (which must not exist) and format it.
fn format(mkfs: &Path, path: &Path, tmp_mb: u32) -> io::Result<()> {
    let file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    let sized = file.set_len(image_bytes(tmp_mb));
    drop(file);
    let result = sized.and_then(|()| {
        let out = Command::new(mkfs)
            .args(MKFS_ARGS)
            .arg(path)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(io::Error::other(format!("mkfs.ext4 failed ({}): {}", out.status, stderr.trim())))
        }
    });
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Copy `template` to the new file `image`, only its allocated ranges: the rest stays a hole.
fn copy_sparse(template: &Path, image: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let src = fs::File::open(template)?;
    let len = src.metadata()?.len();
    let dst = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(image)?;
    let copied = (|| {
        dst.set_len(len)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut pos = 0u64;
        while pos < len {
            let Some(data) = seek(&src, pos, libc::SEEK_DATA)? else {
                break;
            };
            let end = seek(&src, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
            let mut at = data;
            while at < end {
                let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(buf.len());
                let n = src.read_at(&mut buf[..want], at)?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                dst.write_all_at(&buf[..n], at)?;
                at += n as u64;
            }
            pos = end;
        }
        Ok(())
    })();
    if copied.is_err() {
        let _ = fs::remove_file(image);
    }
    copied
}

/// `lseek(2)` with `SEEK_DATA` or `SEEK_HOLE`; `None` when there is no more data.
fn seek(file: &fs::File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on an fd we own; it only moves the file offset, which nothing else uses.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
    }
    Ok(u64::try_from(rc).ok())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Turn a syscall's `long` result into a new fd or the error.
fn fd_result(rc: libc::c_long) -> io::Result<OwnedFd> {
    match i32::try_from(rc) {
        Ok(fd) if fd >= 0 => {
            // SAFETY: the syscall just returned this fd, and nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        _ => Err(io::Error::last_os_error()),
    }
}

/// Mount ext4 from `device`, `nosuid,nodev`, as a detached mount: the returned fd is all that
/// holds it until [`move_mount`] attaches it somewhere.
fn fsmount_ext4(device: &Path) -> io::Result<OwnedFd> {
    let source = c_path(device)?;
    // SAFETY: fsopen takes a NUL-terminated name and flags, and returns a new fd or -1.
    let fs_fd = fd_result(unsafe { libc::syscall(libc::SYS_fsopen, c"ext4".as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    let configure = |cmd: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| {
        let key = key.map_or(std::ptr::null(), CStr::as_ptr);
        let value = value.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: fsconfig reads the NUL-terminated key and value (or takes null for them, as
        // these commands require); both outlive the call.
        let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fs_fd.as_raw_fd(), cmd, key, value, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    configure(libc::FSCONFIG_SET_STRING, Some(c"source"), Some(&source))?;
    configure(libc::FSCONFIG_SET_FLAG, Some(MOUNT_FLAG), None)?;
    configure(libc::FSCONFIG_CMD_CREATE, None, None)?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    // SAFETY: fsmount takes the configured context's fd and two flag words, and returns a new
    // fd or -1.
    fd_result(unsafe { libc::syscall(libc::SYS_fsmount, fs_fd.as_raw_fd(), libc::FSMOUNT_CLOEXEC, attrs) })
}

/// Attach the detached mount `mount` at `target`.
fn move_mount(mount: &OwnedFd, target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: move_mount reads two NUL-terminated paths (the empty one names `mount` itself,
    // with MOVE_MOUNT_F_EMPTY_PATH); both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make the root directory of the (detached) mount `mount` what Lambda's `/tmp` is: empty (no
/// `lost+found`) and world-writable (1777).
fn prepare_root(mount: &OwnedFd) -> io::Result<()> {
    // SAFETY: openat with an fd we own and a NUL-terminated path; on success we own the new fd.
    let root = fd_result(libc::c_long::from(unsafe {
        libc::openat(mount.as_raw_fd(), c".".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
    }))?;
    // SAFETY: unlinkat with an fd we own and a NUL-terminated name.
    if unsafe { libc::unlinkat(root.as_raw_fd(), c"lost+found".as_ptr(), libc::AT_REMOVEDIR) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::NotFound {
            return Err(e);
        }
    }
    // SAFETY: fchmod on an fd we own; no memory is involved.
    if unsafe { libc::fchmod(root.as_raw_fd(), 0o1777) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn umount_detach(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `FS_IOC_SHUTDOWN` (`_IOR('X', 125, __u32)`), ext4's "going down" ioctl.
const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Stop the filesystem at once without flushing anything.
const FS_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// Make the filesystem mounted at `mount` refuse all further I/O and drop its dirty data, so the
/// unmount does not write back pages of files nobody will read (measured with 64 MiB dirty:
/// unmount 4 ms instead of 40–60 ms). Best effort.
fn shut_down(mount: &Path) {
    let Ok(dir) = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(mount)
    else {
        return;
    };
    let flags = FS_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: FS_IOC_SHUTDOWN reads one u32 from the pointer, which points at `flags`.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SHUTDOWN as _, &flags as *const u32) };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "scratch disk shutdown ioctl failed");
    }
}

/// Paths in `/proc/self/mountinfo` escape space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

// The loop device interface, from <linux/loop.h>; the libc crate does not have it.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;
/// Another process (or thread) can take the free device between our two ioctls.
const ATTACH_ATTEMPTS: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`, the argument of `LOOP_CONFIGURE` (Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

impl LoopConfig {
    fn new(fd: u32, flags: u32, name: &Path) -> Self {
        let mut lo_file_name = [0u8; LO_NAME_SIZE];
        let bytes = name.as_os_str().as_bytes();
        let n = bytes.len().min(LO_NAME_SIZE - 1);
        lo_file_name[..n].copy_from_slice(&bytes[bytes.len() - n..]);
        Self {
            fd,
            // Zero: the kernel's default (the backing device's logical block size for
            // direct I/O, else 512).
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: flags,
                lo_file_name,
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        }
    }
}

/// An attached loop device, held open: with auto-clear, the last close detaches it.
struct LoopDevice {
    _fd: fs::File,
    path: PathBuf,
}

impl LoopDevice {
    /// Attach `image` to a free loop device, with direct I/O where the image's filesystem
    /// supports it. `name` is what `losetup -l` shows.
    fn attach(image: &fs::File, name: &Path) -> io::Result<Self> {
        let control = fs::OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
        let image_fd = u32::try_from(image.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
        let mut last_error = io::Error::other("no free loop device");
        for _ in 0..ATTACH_ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and only returns a number.
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let device = match fs::OpenOptions::new().read(true).write(true).open(&path) {
                Ok(d) => d,
                // devtmpfs makes the node right after the device; give it a moment.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    last_error = e;
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) => return Err(e),
            };
            loop {
                let config = LoopConfig::new(image_fd, flags, name);
                // SAFETY: LOOP_CONFIGURE reads one `struct loop_config` from the pointer, and
                // `config` is one (repr(C), size checked above) that outlives the call. The
                // kernel takes its own reference to the image file.
                let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE as _, &config as *const LoopConfig) };
                if rc == 0 {
                    return Ok(Self { _fd: device, path });
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Someone else configured this device first: ask for another.
                    Some(libc::EBUSY) => {
                        last_error = e;
                        break;
                    }
                    // The image's filesystem cannot do direct I/O: use the page cache.
                    Some(libc::EINVAL) if flags & LO_FLAGS_DIRECT_IO != 0 => flags &= !LO_FLAGS_DIRECT_IO,
                    _ => return Err(e),
                }
            }
        }
        Err(last_error)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    use super::*;

    fn disks(dir: &Path, spares: usize) -> ScratchDisks {
        let config = ScratchConfig { dir: dir.to_path_buf(), spares, warm_sizes: vec![DEFAULT_TMP_MB] };
        ScratchDisks::new(config).expect("scratch disks (needs root and loop devices)")
    }

    fn env() -> EnvId {
        EnvId::from_random(rand::random())
    }

    fn mounted(path: &Path) -> bool {
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        info.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| unescape_mount_path(m) == path)
    }

    /// Loop devices whose backing file was in `dir`.
    fn loops_of(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        for dev in fs::read_dir("/sys/block").expect("sysfs").flatten() {
            let backing = fs::read_to_string(dev.path().join("loop/backing_file")).unwrap_or_default();
            if backing.starts_with(&*dir.to_string_lossy()) {
                found.push(backing.trim().to_string());
            }
        }
        found
    }

    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Fill `dir` with 1 MiB writes until one fails; the bytes written and the error.
    fn fill(dir: &Path) -> (u64, io::Error) {
        let mut f = fs::File::create(dir.join("fill")).expect("create");
        let block = vec![0xa5u8; 1024 * 1024];
        let mut written = 0u64;
        loop {
            match f.write(&block) {
                Ok(n) => written += n as u64,
                Err(e) => return (written, e),
            }
        }
    }

    #[test]
    fn disk_fills_to_its_size_then_enospc_and_is_cleaned_up() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = disks(tmp.path(), 1);
        let id = env();
        let mut disk = d.attach(id, 512).expect("attach");
        let mount = disk.path().to_path_buf();
        assert_eq!(mount, d.dir().join(id.to_string()));
        assert!(mounted(&mount));
        let mode = fs::metadata(&mount).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777);
        assert_eq!(fs::read_dir(&mount).expect("ls").count(), 0, "an empty /tmp, without lost+found");
        let (written, err) = fill(&mount);
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        let mb = written / MIB;
        assert!((500..=512).contains(&mb), "ENOSPC after {mb} MiB");
        disk.release();
        assert!(!mounted(&mount));
        assert!(!mount.exists());
        drop(d);
        // Every loop device, the used one and the spares, goes with its mount.
        eventually("loop devices detached", || loops_of(tmp.path()).is_empty());
        assert_eq!(fs::read_dir(tmp.path().join(SPARE_DIR)).expect("spare").count(), 0);
    }

    /// Space a non-root writer can use, as `df` shows it.
    fn available_mib(dir: &Path) -> u64 {
        let path = c_path(dir).expect("path");
        // SAFETY: all-zero is a valid statvfs (plain integers), which the call then fills.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a pointer to a statvfs, both outliving the call.
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize / MIB
    }

    #[test]
    fn every_size_gives_a_little_under_its_mib() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = disks(tmp.path(), 0);
        for mb in [512, 700, 1024, 2048, 4096, 10240] {
            let disk = d.attach(env(), mb).expect("attach");
            let available = available_mib(disk.path());
            assert!(mb - 8 <= available as u32 && available as u32 <= mb, "{mb} MB gives {available} MiB");
        }
    }

    #[test]
    fn disks_of_two_environments_are_separate() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = disks(tmp.path(), 0);
        let a = d.attach(env(), 512).expect("attach");
        let b = d.attach(env(), 1024).expect("attach");
        fs::write(a.path().join("x"), b"a").expect("write");
        assert!(!b.path().join("x").exists());
        let (written, err) = fill(a.path());
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert!(written < 600 * MIB);
        fs::write(b.path().join("y"), vec![1u8; 4 * 1024 * 1024]).expect("the other disk still has room");
    }

    #[test]
    fn pool_is_refilled_in_the_background() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = disks(tmp.path(), 2);
        eventually("two 512 MB spares", || d.ready(512) == 2);
        let disk = d.attach(env(), 512).expect("attach");
        assert!(d.ready(512) <= 1);
        eventually("refilled", || d.ready(512) == 2);
        // A size never seen is made on the spot, then kept warm too.
        let other = d.attach(env(), 700).expect("attach");
        eventually("two 700 MB spares", || d.ready(700) == 2);
        drop((disk, other));
        // The used disks are released in the background; the four spares stay attached.
        eventually("only the spares attached", || loops_of(tmp.path()).len() == 4);
        drop(d);
        eventually("spares released after drop", || loops_of(tmp.path()).is_empty());
    }

    #[test]
    fn only_the_most_recently_used_sizes_are_kept_warm() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = disks(tmp.path(), 1);
        eventually("a 512 MB spare", || d.ready(512) == 1);
        let sizes: Vec<u32> = (1..=8).map(|i| 512 + i).collect();
        for &mb in &sizes {
            drop(d.attach(env(), mb).expect("attach"));
        }
        eventually("one spare of each recent size", || sizes.iter().all(|&mb| d.ready(mb) == 1));
        assert_eq!(d.ready(512), 0, "the least recently used size is dropped");
        eventually("the dropped spare is unmounted", || loops_of(tmp.path()).len() == sizes.len());
        eventually("its template is deleted", || !d.shared.template_path(512).exists());
        assert!(d.shared.template_path(513).exists());
    }

    #[test]
    fn leftovers_of_a_crash_are_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // No spares: the formatter must not race with the clean-up below.
        let d = disks(tmp.path(), 0);
        let disk = d.attach(env(), 512).expect("attach");
        let mount = disk.path().to_path_buf();
        fs::write(mount.join("data"), b"left behind").expect("write");
        fs::write(d.dir().join(SPARE_DIR).join("9.img"), b"a half-formatted image").expect("write");
        // A crash: nothing is released.
        std::mem::forget(disk);
        std::mem::forget(d);
        assert_eq!(ScratchDisks::remove_leftovers(tmp.path()), 2);
        assert!(!mounted(&mount));
        let mut left: Vec<_> = fs::read_dir(tmp.path()).expect("dir").flatten().map(|e| e.file_name()).collect();
        left.sort();
        assert_eq!(left, [SPARE_DIR, TEMPLATE_DIR].map(std::ffi::OsString::from));
        for sub in [SPARE_DIR, TEMPLATE_DIR] {
            assert_eq!(fs::read_dir(tmp.path().join(sub)).expect("sub").count(), 0, "{sub}");
        }
        eventually("loop device detached", || loops_of(tmp.path()).is_empty());
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b\134c\011"), PathBuf::from("/a b\\c\t"));
        assert_eq!(unescape_mount_path(r"/plain\0x"), PathBuf::from(r"/plain\0x"));
        assert_eq!(image_bytes(512), 529 * MIB);
    }

    /// Prints the costs: `cargo test -p quarters-sandbox timings -- --nocapture --test-threads 1`.
    #[test]
    fn timings() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = disks(tmp.path(), 0);
        let n: u32 = 20;
        let mut total = [Duration::ZERO; 6];
        for i in 0..n {
            let image = d.shared.spare_dir.join(format!("t{i}.img"));
            let t = Instant::now();
            format(&d.shared.mkfs, &image, 512).expect("format");
            total[0] += t.elapsed();
            fs::remove_file(&image).expect("rm");
            let t = Instant::now();
            copy_sparse(&d.shared.template_path(512), &image).expect("copy");
            total[1] += t.elapsed();
            fs::remove_file(&image).expect("rm");
            let t = Instant::now();
            let prepared = d.shared.prepare(512).expect("prepare");
            total[2] += t.elapsed();
            lock(&d.shared.pool)
                .sizes
                .iter_mut()
                .for_each(|s| s.ready.push(Prepared { mount: prepared.mount.try_clone().expect("dup") }));
            drop(prepared);
            let t = Instant::now();
            let mut disk = d.attach(env(), 512).expect("attach");
            total[3] += t.elapsed();
            fs::write(disk.path().join("f"), vec![7u8; 64 * 1024 * 1024]).expect("write");
            let t = Instant::now();
            disk.release();
            total[4] += t.elapsed();
            let t = Instant::now();
            let mut cold = d.attach(env(), 512).expect("attach");
            total[5] += t.elapsed();
            cold.release();
        }
        let [mkfs, copy, prepare, attach, release, cold] = total.map(|t| t / n);
        eprintln!(
            "scratch disk of 512 MB, mean of {n}: mkfs.ext4 {mkfs:?}; copy of the template {copy:?}; \
             prepare a spare (copy, loop, unlink, fsmount, chmod) {prepare:?}; attach a spare (mkdir, move_mount) {attach:?}; \
             release with 64 MiB dirty (shutdown, umount, rmdir) {release:?}; attach with no spare ready {cold:?}"
        );
    }
}
