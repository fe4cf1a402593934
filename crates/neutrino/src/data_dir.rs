//! The data directory, held by one server at a time.
//!
//! SQLite serves one server process: two servers on one data directory
//! would both write the file and fail each other with "database is locked".
//! The first server holds an exclusive lock on `DATA_DIR/neutrino.lock`
//! (released by the kernel when the process ends, however it ends) and
//! writes who it is into it; a second one is refused with that name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create or open {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "the data directory {dir} is in use by another neutrino server ({holder}). The embedded SQLite database serves one server; to run several servers, share a PostgreSQL database between them (--database-url postgres://...)"
    )]
    InUse { dir: PathBuf, holder: String },
}

/// The lock on a data directory; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the directory (creating it), or says who has it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataDirError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("neutrino.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "a process that has not written its name yet".to_string(),
                    h => h.to_string(),
                };
                return Err(DataDirError::InUse { dir: dir.to_path_buf(), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        let me = format!("pid {} on {}, started {}", std::process::id(), hostname(), started());
        file.set_len(0).map_err(io(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        file.write_all(me.as_bytes()).map_err(io(&path))?;
        Ok(DataDirLock { _file: file })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}

fn started() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("at unix time {secs}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("PostgreSQL"), "{text}");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the first is gone");
    }
}
