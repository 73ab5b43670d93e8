//! The file sink: writes `dispatcher.list` atomically, only when its content
//! changes.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::snapshot::Snapshot;

/// Writes `dispatcher.list` so that Kamailio only ever reads a whole file:
/// a temporary file in the same directory, fsync, rename over the target,
/// fsync the directory.
#[derive(Debug)]
pub struct ListWriter {
    path: PathBuf,
}

impl ListWriter {
    pub fn new(path: PathBuf) -> Self {
        ListWriter { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the snapshot unless the file already holds exactly that
    /// content; returns whether it wrote.
    pub fn write(&self, snapshot: &Snapshot) -> Result<bool, Error> {
        let content = snapshot.to_dispatcher_list();
        if std::fs::read(&self.path).is_ok_and(|old| old == content.as_bytes()) {
            return Ok(false);
        }
        write_atomically(&self.path, content.as_bytes()).map_err(|source| Error::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(true)
    }
}

fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the output path names no file",
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".dsfeed-{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(content)?;
        // Kamailio reads the file as its own user; keep it world-readable
        // like the lists it ships.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Destination, SetMap};

    fn snapshot(uri: &str) -> Snapshot {
        Snapshot::new(SetMap::from([(
            1,
            vec![Destination::parse_target(uri).unwrap()],
        )]))
        .unwrap()
    }

    #[test]
    fn writes_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let writer = ListWriter::new(dir.path().join("dispatcher.list"));
        assert!(writer.write(&snapshot("10.0.0.1")).unwrap());
        assert!(!writer.write(&snapshot("10.0.0.1")).unwrap());
        assert!(writer.write(&snapshot("10.0.0.2")).unwrap());
        let text = std::fs::read_to_string(writer.path()).unwrap();
        assert!(text.ends_with("1 sip:10.0.0.2:5060 0 0\n"), "{text}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dispatcher.list");
        let writer = ListWriter::new(path.clone());
        writer.write(&snapshot("10.0.0.1")).unwrap();
        let before = std::fs::read(&path).unwrap();
        // A directory where the temporary file should go makes the write fail.
        let blocker = dir.path().join(format!(
            ".dispatcher.list.dsfeed-{}.tmp",
            std::process::id()
        ));
        std::fs::create_dir(&blocker).unwrap();
        let err = writer.write(&snapshot("10.0.0.2")).unwrap_err();
        assert!(err.to_string().contains("dispatcher.list"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
