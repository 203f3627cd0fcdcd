//! Test support (feature `test-support`): a real, small tmpfs to fill up,
//! for the tests of a database on a full disk. Mounting needs root and
//! mount(8): without them the tests fail (they do not skip).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// A tmpfs mounted for a test, unmounted on drop (after whatever uses it
/// was dropped: declare it first).
pub struct Tmpfs {
    /// The temp dir it is mounted on, if it made one.
    dir: Option<Arc<TempDir>>,
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as mount(8) takes it: "32m") on a fresh
    /// temp dir.
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir to mount on");
        let path = dir.path().to_owned();
        mount(&path, size);
        Self {
            dir: Some(Arc::new(dir)),
            path,
        }
    }

    /// Mounts a tmpfs of `size` on `at`, creating the directory if need be.
    pub fn mount_at(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("a directory to mount on");
        mount(at, size);
        Self {
            dir: None,
            path: at.to_owned(),
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp dir it is mounted on (made by [`Tmpfs::mount`]), to hand to
    /// what wants one.
    pub fn temp_dir(&self) -> Arc<TempDir> {
        self.dir
            .clone()
            .expect("Tmpfs::mount made the temp dir (not Tmpfs::mount_at)")
    }

    /// Gives the filesystem `size` in all, keeping its files.
    pub fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot grow the tmpfs to {size}");
    }

    /// Writes a file of `bytes` to take space, to free later.
    pub fn fill(&self, name: &str, bytes: usize) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, vec![0x5a; bytes]).expect("write the filler");
        path
    }

    /// Writes a file until the filesystem is full; returns it, to free later.
    pub fn fill_up(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).expect("create the filler");
        for chunk in [1024 * 1024, 4096] {
            let block = vec![0x5a; chunk];
            while file.write_all(&block).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

fn mount(at: &Path, size: &str) {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "cannot mount a {size} tmpfs on {} (tests on a tmpfs need root and mount(8)): {}",
        at.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A dropped database's threads let go of its files a moment later.
        for _ in 0..100 {
            let unmounted = Command::new("umount")
                .arg(self.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if unmounted {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} is still busy; unmounting it lazily",
            self.path().display()
        );
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
