//! Mounted certificates (a user-provided Secret or cert-manager's): the serving certificate, its
//! key and optionally the CA bundle, re-read on a timer. The kubelet updates a mounted Secret by
//! swapping the `..data` symlink, which leaves the files' own mtimes unreliable, so what is
//! compared is the contents.

use std::fmt;
use std::path::{Path, PathBuf};

use super::CertError;

/// The files of the mounted-certificates mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// Serving certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA bundle standbys verify the leader with (PEM).
    pub ca: Option<PathBuf>,
}

/// What the files held when read. `Debug` shows no content.
#[derive(Clone, PartialEq, Eq)]
pub struct FileContents {
    /// The certificate chain.
    pub cert: Vec<u8>,
    /// The key.
    pub key: Vec<u8>,
    /// The CA bundle, when configured.
    pub ca: Option<Vec<u8>>,
}

impl fmt::Debug for FileContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileContents")
            .field("cert_bytes", &self.cert.len())
            .field("ca", &self.ca.is_some())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::File {
        path: path.to_owned(),
        source,
    })
}

impl CertFiles {
    /// Reads every file.
    pub fn read(&self) -> Result<FileContents, CertError> {
        Ok(FileContents {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            ca: self.ca.as_deref().map(read).transpose()?,
        })
    }
}

/// Whether contents read now must be loaded: the first read, or anything changed.
pub fn changed(last: Option<&FileContents>, now: &FileContents) -> bool {
    last != Some(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_not_mtimes_decide() {
        let dir = std::env::temp_dir().join(format!("ebb-cert-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: Some(dir.join("ca.crt")),
        };
        assert!(matches!(files.read(), Err(CertError::File { .. })));
        std::fs::write(&files.cert, "cert-1").unwrap();
        std::fs::write(&files.key, "key-1").unwrap();
        std::fs::write(files.ca.as_ref().unwrap(), "ca-1").unwrap();
        let first = files.read().unwrap();
        assert!(changed(None, &first));
        // Rewritten with the same bytes (a new mtime): nothing to do.
        std::fs::write(&files.cert, "cert-1").unwrap();
        assert!(!changed(Some(&first), &files.read().unwrap()));
        std::fs::write(files.ca.as_ref().unwrap(), "ca-2").unwrap();
        let second = files.read().unwrap();
        assert!(changed(Some(&first), &second));
        assert!(!format!("{second:?}").contains("key-1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
