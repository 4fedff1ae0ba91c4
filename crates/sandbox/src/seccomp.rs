//! The seccomp filter every sandbox runs under, in the spirit of Docker's default profile:
//! everything is allowed except what lets a process leave or reshape its sandbox (mounts, new
//! namespaces, ptrace, BPF, kernel modules, kexec, keyrings, ...), which fails with `EPERM`.
//! `clone3` fails with `ENOSYS` instead, so C libraries fall back to `clone`, whose flags the
//! filter can inspect.
//!
//! The filters are compiled once, to the raw `struct sock_filter` arrays bubblewrap loads with
//! `--add-seccomp-fd` (bubblewrap also sets `no_new_privs` before loading them).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Syscalls refused outright.
const DENIED: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "keyctl",
    "add_key",
    "request_key",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "lookup_dcookie",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
    "uselib",
    "ustat",
    "sysfs",
    "vhangup",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "mknod",
    "mknodat",
    "personality",
    "nfsservctl",
    "fanotify_init",
    "set_mempolicy",
    "mbind",
    "move_pages",
    "migrate_pages",
    "pidfd_getfd",
    "_sysctl",
];

/// Syscalls that fail with ENOSYS (so callers fall back to an inspectable alternative).
const UNAVAILABLE: &[&str] = &["clone3"];

const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

fn syscall_number(name: &str) -> Option<i64> {
    let n = match name {
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "pivot_root" => libc::SYS_pivot_root,
        "chroot" => libc::SYS_chroot,
        "move_mount" => libc::SYS_move_mount,
        "open_tree" => libc::SYS_open_tree,
        "fsopen" => libc::SYS_fsopen,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fspick" => libc::SYS_fspick,
        "mount_setattr" => libc::SYS_mount_setattr,
        "unshare" => libc::SYS_unshare,
        "setns" => libc::SYS_setns,
        "ptrace" => libc::SYS_ptrace,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "kcmp" => libc::SYS_kcmp,
        "bpf" => libc::SYS_bpf,
        "perf_event_open" => libc::SYS_perf_event_open,
        "userfaultfd" => libc::SYS_userfaultfd,
        "kexec_load" => libc::SYS_kexec_load,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        "delete_module" => libc::SYS_delete_module,
        "keyctl" => libc::SYS_keyctl,
        "add_key" => libc::SYS_add_key,
        "request_key" => libc::SYS_request_key,
        "reboot" => libc::SYS_reboot,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "syslog" => libc::SYS_syslog,
        "acct" => libc::SYS_acct,
        "settimeofday" => libc::SYS_settimeofday,
        "clock_settime" => libc::SYS_clock_settime,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "adjtimex" => libc::SYS_adjtimex,
        "quotactl" => libc::SYS_quotactl,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "name_to_handle_at" => libc::SYS_name_to_handle_at,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "mknodat" => libc::SYS_mknodat,
        "personality" => libc::SYS_personality,
        "fanotify_init" => libc::SYS_fanotify_init,
        "set_mempolicy" => libc::SYS_set_mempolicy,
        "mbind" => libc::SYS_mbind,
        "move_pages" => libc::SYS_move_pages,
        "migrate_pages" => libc::SYS_migrate_pages,
        "pidfd_getfd" => libc::SYS_pidfd_getfd,
        "vhangup" => libc::SYS_vhangup,
        "clone3" => libc::SYS_clone3,
        #[cfg(target_arch = "x86_64")]
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        #[cfg(target_arch = "x86_64")]
        "iopl" => libc::SYS_iopl,
        #[cfg(target_arch = "x86_64")]
        "ioperm" => libc::SYS_ioperm,
        #[cfg(target_arch = "x86_64")]
        "uselib" => libc::SYS_uselib,
        #[cfg(target_arch = "x86_64")]
        "ustat" => libc::SYS_ustat,
        #[cfg(target_arch = "x86_64")]
        "sysfs" => libc::SYS_sysfs,
        #[cfg(target_arch = "x86_64")]
        "mknod" => libc::SYS_mknod,
        #[cfg(target_arch = "x86_64")]
        "nfsservctl" => libc::SYS_nfsservctl,
        #[cfg(target_arch = "x86_64")]
        "_sysctl" => libc::SYS__sysctl,
        _ => return None,
    };
    Some(n)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the seccomp filter: {0}")]
pub struct SeccompError(String);

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<Vec<u8>, SeccompError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), ARCH)
        .map_err(|e| SeccompError(e.to_string()))?;
    let prog: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| SeccompError(e.to_string()))?;
    let mut bytes = Vec::with_capacity(prog.len() * 8);
    for ins in prog {
        bytes.extend_from_slice(&ins.code.to_ne_bytes());
        bytes.push(ins.jt);
        bytes.push(ins.jf);
        bytes.extend_from_slice(&ins.k.to_ne_bytes());
    }
    Ok(bytes)
}

/// The compiled filters, as raw `sock_filter` arrays, in the order they are loaded.
#[derive(Debug, Clone)]
pub struct Filters {
    pub programs: Vec<Vec<u8>>,
}

impl Filters {
    pub fn build() -> Result<Self, SeccompError> {
        let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for name in DENIED {
            if let Some(n) = syscall_number(name) {
                deny.insert(n, Vec::new());
            }
        }
        // clone may make threads and processes, but no namespaces.
        let mut clone_rules = Vec::new();
        for flag in NAMESPACE_FLAGS {
            let cond = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(*flag), *flag)
                .map_err(|e| SeccompError(e.to_string()))?;
            clone_rules.push(SeccompRule::new(vec![cond]).map_err(|e| SeccompError(e.to_string()))?);
        }
        deny.insert(libc::SYS_clone, clone_rules);
        let mut nosys: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for name in UNAVAILABLE {
            if let Some(n) = syscall_number(name) {
                nosys.insert(n, Vec::new());
            }
        }
        Ok(Self { programs: vec![compile(deny, libc::EPERM)?, compile(nosys, libc::ENOSYS)?] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_and_name_known_syscalls() {
        let f = Filters::build().expect("filters");
        assert_eq!(f.programs.len(), 2);
        for p in &f.programs {
            assert!(!p.is_empty() && p.len() % 8 == 0);
        }
        let known = DENIED.iter().filter(|n| syscall_number(n).is_some()).count();
        assert!(known >= DENIED.len() - 2, "most denied syscalls resolve on this arch");
    }
}
