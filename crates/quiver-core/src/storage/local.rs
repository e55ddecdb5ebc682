//! Which local files a process's jobs may read and write: [`LocalPaths`], and
//! the object store that holds `file://` URLs and plain paths to it.
//!
//! A cluster's scheduler and executors run scripts other people submit; a
//! `LOCATION '/etc/passwd'` or `COPY ... TO '/...'` there would reach the
//! server's own disk. So in a cluster local paths are off unless the operator
//! names directories (`--allow-local-paths DIR`); embedded mode and the CLI,
//! which run on the user's own machine, allow any path.
//!
//! ```
//! use quiver_core::storage::LocalPaths;
//! let dir = std::env::temp_dir();
//! let policy = LocalPaths::under([&dir]).unwrap();
//! assert!(policy.allows(&dir.join("orders.csv")));
//! assert!(!policy.allows(std::path::Path::new("/etc/passwd")));
//! assert!(LocalPaths::Any.allows(std::path::Path::new("/etc/passwd")));
//! ```

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions,
};
use url::Url;

use crate::config::ConfigError;

/// Which local files jobs may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LocalPaths {
    /// Any path this process can open: embedded mode and the CLI.
    #[default]
    Any,
    /// Only files under these directories (absolute, resolved); none at all
    /// when empty. A cluster's scheduler and executors.
    Under(Vec<PathBuf>),
}

impl LocalPaths {
    /// Files under `dirs` only; each must be an existing directory.
    pub fn under<P: AsRef<FsPath>>(dirs: impl IntoIterator<Item = P>) -> std::result::Result<Self, ConfigError> {
        let mut roots = Vec::new();
        for dir in dirs {
            let dir = dir.as_ref();
            let resolved = std::fs::canonicalize(dir).map_err(|e| ConfigError::InvalidValue {
                key: "--allow-local-paths".into(),
                message: format!("{}: {e}", dir.display()),
            })?;
            if !resolved.is_dir() {
                return Err(ConfigError::InvalidValue {
                    key: "--allow-local-paths".into(),
                    message: format!("{} is not a directory", dir.display()),
                });
            }
            roots.push(resolved);
        }
        Ok(Self::Under(roots))
    }

    /// True when jobs may read and write `path` (an absolute path). A path
    /// with `..` in it is refused under a limit, whatever it would resolve to.
    pub fn allows(&self, path: &FsPath) -> bool {
        match self {
            Self::Any => true,
            Self::Under(roots) => {
                let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
                let climbs = path.components().any(|c| c == std::path::Component::ParentDir);
                !climbs && roots.iter().any(|root| path.starts_with(root))
            }
        }
    }

    /// Refuses `url` when it is a local path this policy does not allow.
    pub fn check_url(&self, url: &Url) -> Result<()> {
        if !matches!(url.scheme(), "file" | "") {
            return Ok(());
        }
        match url.to_file_path() {
            Ok(path) if self.allows(&path) => Ok(()),
            Ok(path) => Err(DataFusionError::Plan(self.refusal(&path.display().to_string()))),
            Err(()) => Err(DataFusionError::Plan(self.refusal(url.as_str()))),
        }
    }

    /// The store for `file://` URLs under this policy (refusing damaged
    /// Parquet footers, like every store).
    pub(crate) fn store(&self) -> Arc<dyn ObjectStore> {
        let store: Arc<dyn ObjectStore> = match self {
            Self::Any => Arc::new(LocalFileSystem::new()),
            Self::Under(roots) => Arc::new(RootedLocal {
                inner: LocalFileSystem::new(),
                limit: Arc::new(Limit {
                    policy: self.clone(),
                    roots: roots.iter().filter_map(|r| Path::from_absolute_path(r).ok()).collect(),
                }),
            }),
        };
        Arc::new(super::FooterCheck::new(store))
    }

    fn refusal(&self, path: &str) -> String {
        let allowed = match self {
            Self::Under(roots) if !roots.is_empty() => {
                let dirs: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
                format!("this cluster allows local paths only under {}", dirs.join(", "))
            }
            _ => "local paths are off in this cluster".to_owned(),
        };
        format!(
            "local path {path} refused: {allowed}; keep data in s3://..., or start the scheduler and executors \
             with --allow-local-paths DIR"
        )
    }
}

/// The local filesystem, limited to a policy's directories.
#[derive(Debug)]
struct RootedLocal {
    inner: LocalFileSystem,
    limit: Arc<Limit>,
}

/// A policy's directories, as object store paths (`data/lake` for
/// `/data/lake`), and the policy for its refusals.
#[derive(Debug)]
struct Limit {
    policy: LocalPaths,
    roots: Vec<Path>,
}

impl Limit {
    fn check(&self, location: &Path) -> object_store::Result<()> {
        if self.roots.iter().any(|root| location.prefix_matches(root)) {
            return Ok(());
        }
        Err(object_store::Error::PermissionDenied {
            path: format!("/{location}"),
            source: self.policy.refusal(&format!("/{location}")).into(),
        })
    }
}

impl fmt::Display for RootedLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalFileSystem(limited to {} directories)", self.limit.roots.len())
    }
}

impl RootedLocal {
    fn check(&self, location: &Path) -> object_store::Result<()> {
        self.limit.check(location)
    }

    fn check_prefix(&self, prefix: Option<&Path>) -> object_store::Result<()> {
        match prefix {
            Some(p) => self.check(p),
            None => self.check(&Path::default()),
        }
    }
}

fn refused_stream<T: Send + 'static>(e: object_store::Error) -> BoxStream<'static, object_store::Result<T>> {
    futures::stream::once(async move { Err(e) }).boxed()
}

#[async_trait]
impl ObjectStore for RootedLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let limit = Arc::clone(&self.limit);
        let checked = locations.map(move |location| {
            let location = location?;
            limit.check(&location).map(|()| location)
        });
        self.inner.delete_stream(checked.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_prefix(prefix) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => refused_stream(e),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_prefix(prefix) {
            Ok(()) => self.inner.list_with_offset(prefix, offset),
            Err(e) => refused_stream(e),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check_prefix(prefix)?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;

    #[tokio::test]
    async fn the_store_reads_and_writes_inside_its_directories_only() {
        let allowed = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("private.txt"), "private").unwrap();
        let store = LocalPaths::under([allowed.path()]).unwrap().store();

        let inside = Path::from_absolute_path(allowed.path().join("out/data.csv")).unwrap();
        store.put(&inside, PutPayload::from("a,b\n")).await.unwrap();
        let read = store.get(&inside).await.unwrap().bytes().await.unwrap();
        assert_eq!(&read[..], b"a,b\n");
        let listed: Vec<_> = store
            .list(Some(&Path::from_absolute_path(allowed.path()).unwrap()))
            .collect()
            .await;
        assert_eq!(listed.len(), 1);

        let outside = Path::from_absolute_path(other.path().join("private.txt")).unwrap();
        let err = store.get(&outside).await.unwrap_err().to_string();
        assert!(err.contains("--allow-local-paths"), "{err}");
        assert!(store.put(&outside, PutPayload::from("x")).await.is_err());
        let listed: Vec<_> = store.list(None).collect().await;
        assert!(listed.len() == 1 && listed[0].is_err(), "{listed:?}");
        assert_eq!(
            std::fs::read_to_string(other.path().join("private.txt")).unwrap(),
            "private"
        );
    }

    #[test]
    fn no_directories_means_no_local_paths_and_a_clear_reason() {
        let none = LocalPaths::under(Vec::<PathBuf>::new()).unwrap();
        let err = none
            .check_url(&Url::parse("file:///etc/passwd").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/passwd") && err.contains("local paths are off"),
            "{err}"
        );
        assert!(none.check_url(&Url::parse("s3://lake/x").unwrap()).is_ok());
        let tmp = LocalPaths::under([std::env::temp_dir()]).unwrap();
        assert!(!tmp.allows(&std::env::temp_dir().join("../etc/passwd")));
        assert!(LocalPaths::under(["/definitely/not/here"]).is_err());
    }
}
