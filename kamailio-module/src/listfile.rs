//! `list_file_sync`: the dispatcher's own list file rewritten after every
//! swap, atomically (temporary file, fsync, rename, fsync of the directory),
//! so a cold restart with the feeder down starts from the last known sets
//! and a crash mid-write never leaves a half file.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::Path;

/// Replaces `path` with `list`, headed by a comment naming `version`.
pub fn write_atomic(path: &Path, version: &str, list: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.dsfeed-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        writeln!(file, "# written by dsfeed.so: feed version {version}")?;
        file.write_all(list)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dispatcher.list");
        fs::write(&path, "1 sip:old 0 0\n").unwrap();
        write_atomic(&path, "v2", b"1 sip:new 0 0\n").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# written by dsfeed.so: feed version v2\n1 sip:new 0 0\n"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("dispatcher.list");
        assert!(write_atomic(&path, "v1", b"1 sip:a 0 0\n").is_err());
    }
}
