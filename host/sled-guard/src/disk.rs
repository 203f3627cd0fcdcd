//! What the operating system says about, and does to, a sled database's
//! files: free space, an fsync of everything under the database, and
//! fencing a failed sled instance off its log file so that a new instance
//! can open it while the old one is still in memory.

use std::fs::File;
use std::io;
use std::path::Path;

/// Bytes an unprivileged writer may still use on the filesystem holding
/// `path`; `None` if the filesystem cannot say.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stat` is large enough for
    // statvfs to fill in; it is read only when the call succeeded.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // The field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// fsyncs every file and directory under `dir`. After a reopen this makes
/// what the new instance recovered durable: the old instance may have
/// written pages it never got to sync, and the new one reads them from the
/// page cache as if they were on disk.
pub fn sync_all_under(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let result = if entry.file_type()?.is_dir() {
            sync_all_under(&path)
        } else {
            File::open(&path).and_then(|f| f.sync_all())
        };
        match result {
            // sled removes blobs and old snapshots as it goes.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    File::open(dir)?.sync_all()
}

/// Points every descriptor this process holds on `file` (a sled instance's
/// log file) at a new read-only description of the same file, and returns
/// how many it changed.
///
/// Why: a sled instance that hit an I/O error never writes again, and one
/// whose blob write failed blocks every flush forever, so it cannot even be
/// dropped (its drop flushes). A new instance needs sled's file lock,
/// which belongs to the old open file description; once no descriptor
/// refers to it any more (and calls in flight on it have returned, since
/// they hold it too) the lock is gone. The old instance keeps reading the
/// same bytes through the new description, but every write it attempts
/// fails (EBADF), which also gives it the sticky error that makes it shut
/// down without further I/O. From the file's point of view the old
/// instance crashed, and a new one recovers as after a crash.
#[cfg(target_os = "linux")]
pub fn fence(file: &Path) -> io::Result<usize> {
    use std::os::fd::{AsRawFd, RawFd};
    let target = std::fs::canonicalize(file)?;
    let read_only = File::open(&target)?;
    let mut fenced = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if fd == read_only.as_raw_fd()
            || std::fs::read_link(entry.path()).ok() != Some(target.clone())
        {
            continue;
        }
        // SAFETY: dup3 replaces what descriptor `fd` refers to, atomically,
        // with another description of the very same file; its owner (sled's
        // `File`) still owns and eventually closes `fd`. No memory is
        // involved, and no other file is ever put behind `fd`.
        if unsafe { libc::dup3(read_only.as_raw_fd(), fd, libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        fenced += 1;
    }
    Ok(fenced)
}

/// Without /proc there is no way to find sled's descriptor: nothing is
/// fenced, and a failed instance keeps its lock until it is dropped.
#[cfg(not(target_os = "linux"))]
pub fn fence(_file: &Path) -> io::Result<usize> {
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn free_space_is_known_for_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fenced_descriptor_still_reads_but_no_longer_writes_or_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"kept").unwrap();
        let mut held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        held.lock().unwrap();
        let other = File::open(&path).unwrap();
        assert!(other.try_lock().is_err(), "the lock is held");

        assert_eq!(fence(&path).unwrap(), 2, "both descriptors on the file");
        let mut read = String::new();
        held.read_to_string(&mut read).unwrap();
        assert_eq!(read, "kept");
        assert!(held.write_all(b"more").is_err(), "writes fail");
        assert!(
            File::open(&path).unwrap().try_lock().is_ok(),
            "the lock went with the old description"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
    }
}
