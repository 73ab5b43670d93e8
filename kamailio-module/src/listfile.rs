//! `list_file_sync`: the dispatcher's own list file rewritten after every
//! swap, atomically (see [`dsfeed_model::atomic`]), so a cold restart with
//! the feeder down starts from the last known sets and a crash mid-write
//! never leaves a half file.

use std::io;
use std::path::Path;

/// Replaces `path` with `list`, headed by a comment naming `version`. The
/// version came from the feeder: it is checked here again, where it enters
/// a file Kamailio parses, so that no version can add a line to the list.
pub fn write_atomic(path: &Path, version: &str, list: &[u8]) -> io::Result<()> {
    if version.is_empty()
        || version.len() > dsfeed_model::pb::MAX_VERSION
        || !version.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "version {:?} is not 1 to {} visible ASCII characters",
                version.escape_debug().to_string(),
                dsfeed_model::pb::MAX_VERSION
            ),
        ));
    }
    let mut content = format!("# written by dsfeed.so: feed version {version}\n").into_bytes();
    content.extend_from_slice(list);
    dsfeed_model::atomic::write_atomically(path, &content, 0o644)
}

/// Removes the temporary files a killed feed process left beside `path`.
pub fn remove_stale(path: &Path) {
    match dsfeed_model::atomic::remove_stale(path) {
        Ok(removed) => {
            for stale in removed {
                log::info!("removed {}, left by a killed write", stale.display());
            }
        }
        Err(err) => log::warn!("cannot look for leftovers beside {}: {err}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    /// A list file Kamailio started from, in a directory of its own.
    fn old_list() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dispatcher.list");
        fs::write(&path, "1 sip:old 0 0\n").unwrap();
        (dir, path)
    }

    #[test]
    fn replaces_the_file_whole() {
        let (dir, path) = old_list();
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

    #[test]
    fn a_version_cannot_add_a_line() {
        let (_dir, path) = old_list();
        for version in ["v1\n2 sip:evil 0 0", "v 1", "", &"v".repeat(129)] {
            let err = write_atomic(&path, version, b"1 sip:new 0 0\n").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{version:?}");
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), "1 sip:old 0 0\n");
    }

    #[test]
    fn a_symlink_at_the_old_temporary_name_is_not_followed() {
        let (dir, path) = old_list();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let predictable = dir
            .path()
            .join(format!(".dispatcher.list.dsfeed-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &predictable).unwrap();
        write_atomic(&path, "v1", b"1 sip:a 0 0\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    }
}
