//! Files written whole or not at all: keys, certificates and the data
//! directory's secrets go to a temporary file in the same directory
//! (created new, so never through a symlink an attacker left there), are
//! flushed to disk, and only then take their name; the directory is
//! flushed too, so that a crash leaves either the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` (and its parents) if missing, and makes it readable by
/// its owner only: it holds the mirror, the trail and the keys.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Makes `path` readable by its owner only, creating it empty if missing
/// (never through a symlink). SQLite gives its `-wal` and `-shm` files the
/// database file's mode.
pub fn private_file(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
}

/// Writes `bytes` to `path` with `mode`, unless `path` exists (then
/// `Ok(false)`). Atomic: another process sees no file or the whole one.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    let mut file = NewFile::create(path, mode)?;
    file.write_all(bytes)?;
    file.link()
}

/// Writes `bytes` to `path` with `mode`, replacing what is there (a file,
/// or a symlink itself: never the file a symlink points at).
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = NewFile::create(path, mode)?;
    file.write_all(bytes)?;
    file.rename()
}

/// Linux's `O_NOFOLLOW`: opening a symlink fails.
const O_NOFOLLOW: i32 = 0o400_000;

/// A file being written under a temporary name in its directory (created
/// new, so never through a symlink); it takes its name only once whole and
/// on disk, and is removed if dropped before.
pub struct NewFile {
    temp: PathBuf,
    path: PathBuf,
    file: Option<File>,
}

impl NewFile {
    pub fn create(path: &Path, mode: u32) -> io::Result<Self> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(io::Error::other)?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{suffix}.tmp"));
        let temp = path.with_file_name(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        let new = Self {
            temp,
            path: path.to_owned(),
            file: Some(file),
        };
        // The process umask may have taken bits off `mode`; a key file is
        // exactly what it says.
        new.handle()?
            .set_permissions(fs::Permissions::from_mode(mode))?;
        Ok(new)
    }

    fn handle(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("the file is closed"))
    }

    /// Flushes it to disk and closes it.
    fn finish(&mut self) -> io::Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the file is closed"))?;
        file.sync_all()
    }

    /// Takes its name unless that exists (then `Ok(false)`, and the file
    /// is gone).
    pub fn link(mut self) -> io::Result<bool> {
        self.finish()?;
        // A hard link fails if the name exists, where a rename would replace.
        match fs::hard_link(&self.temp, &self.path) {
            Ok(()) => {
                sync_dir(&self.path)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes its name, replacing what had it.
    pub fn rename(mut self) -> io::Result<()> {
        self.finish()?;
        fs::rename(&self.temp, &self.path)?;
        sync_dir(&self.path)
    }
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut file = self.handle()?;
        file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut file = self.handle()?;
        file.flush()
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        // Gone after a rename; only a link left the temporary name behind.
        let _ = fs::remove_file(&self.temp);
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vnid-files-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_new_file_never_replaces_and_a_replacement_never_follows_a_link() {
        let dir = scratch("links");
        let key = dir.join("key.pem");
        assert!(write_new(&key, b"first", 0o600).unwrap());
        assert!(!write_new(&key, b"second", 0o600).unwrap());
        assert_eq!(fs::read(&key).unwrap(), b"first");
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);

        // A link planted where a key will be written: the link is
        // replaced, its target untouched.
        let target = dir.join("elsewhere");
        fs::write(&target, b"precious").unwrap();
        let planted = dir.join("agency.key");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        replace(&planted, b"secret", 0o600).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&planted).unwrap().is_symlink());
        assert_eq!(fs::metadata(&planted).unwrap().mode() & 0o777, 0o600);
        // An existing file of looser mode takes the mode asked for.
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        replace(&key, b"again", 0o600).unwrap();
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn private_paths_are_the_owners_alone() {
        let dir = scratch("private").join("data");
        private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let db = dir.join("mirror.sqlite3");
        fs::write(&db, b"").unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&db).unwrap();
        assert_eq!(fs::metadata(&db).unwrap().mode() & 0o777, 0o600);
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}
