//! `quiver fs mb | ls | cp`: buckets and objects, as `mc` or `aws s3` handle them.
//!
//! Storage is configured as for every other command (config file, the AWS
//! environment, `--conf s3.*=...`). The stack's one-shot `init` service uses
//! `mb` and `cp --recursive` to create the lake's buckets and load the sample
//! data, so no other client image is needed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use quiver_core::config::Settings;
use quiver_core::storage::{BucketCreated, S3Settings, StorageContext, create_bucket, explain_storage_error};
use tokio::io::AsyncWriteExt;

use super::{UsageError, pairs};

#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// Create buckets (s3://NAME ...); a bucket these credentials already own is left as it is.
    Mb {
        /// The buckets.
        #[arg(required = true, value_name = "s3://BUCKET")]
        buckets: Vec<String>,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// List objects under s3://BUCKET/PREFIX (one level, or all with --recursive).
    Ls {
        /// Where to list.
        #[arg(value_name = "s3://BUCKET[/PREFIX]")]
        path: String,
        /// Every object under the prefix, not one level.
        #[arg(long, short)]
        recursive: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Copy a file, or a directory with --recursive, to or from S3.
    Cp {
        /// A local path or s3://BUCKET/KEY.
        source: String,
        /// A local path or s3://BUCKET/KEY (a key ending in / is a prefix).
        destination: String,
        /// Copy a directory (or everything under a prefix).
        #[arg(long, short)]
        recursive: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Args)]
pub struct StorageArgs {
    /// A storage setting, e.g. --conf s3.endpoint=http://minio:9000 (repeatable).
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    conf: Vec<String>,
}

/// Storage of this process with the command's `--conf` on top.
struct Storage {
    context: StorageContext,
    session: S3Settings,
}

impl Storage {
    fn new(args: &StorageArgs, config: Option<&Path>) -> anyhow::Result<Self> {
        let conf = pairs(&args.conf, "--conf")?;
        if let Some((key, _)) = conf.without_section("s3").iter().next() {
            return Err(UsageError(format!("--conf {key}: `quiver fs` takes s3.* settings only")).into());
        }
        let session = S3Settings::from_section(&conf.section("s3"))?;
        let context = StorageContext::new(&Settings::load(config)?)?;
        Ok(Self { context, session })
    }

    fn store(&self, location: &S3Location) -> anyhow::Result<Arc<dyn ObjectStore>> {
        Ok(self.context.s3_store(&location.bucket, &self.session)?)
    }

    /// `error` with a hint about what to fix when it is a storage error.
    fn explain(&self, error: impl std::fmt::Display, what: &str) -> anyhow::Error {
        let message = error.to_string();
        match explain_storage_error(&message, &self.context.effective(&self.session)) {
            Some(hint) => anyhow::anyhow!("{what}: {message}\n  hint: {hint}"),
            None => anyhow::anyhow!("{what}: {message}"),
        }
    }
}

/// `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct S3Location {
    bucket: String,
    key: String,
}

impl S3Location {
    fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("s3://").or_else(|| text.strip_prefix("s3a://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        Some(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    fn required(text: &str) -> anyhow::Result<Self> {
        match Self::parse(text) {
            Some(l) if !l.bucket.is_empty() => Ok(l),
            _ => Err(UsageError(format!("'{text}' is not an S3 location: write s3://bucket/key")).into()),
        }
    }

    /// The key under this location for `relative` (a prefix ends with `/`).
    fn join(&self, relative: &str) -> String {
        let prefix = self.key.trim_end_matches('/');
        if prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{prefix}/{relative}")
        }
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

pub async fn run(command: FsCommand, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    match command {
        FsCommand::Mb { buckets, storage } => make_buckets(&buckets, &Storage::new(&storage, config)?).await,
        FsCommand::Ls {
            path,
            recursive,
            storage,
        } => {
            list(
                &S3Location::required(&path)?,
                recursive,
                &Storage::new(&storage, config)?,
            )
            .await
        }
        FsCommand::Cp {
            source,
            destination,
            recursive,
            storage,
        } => {
            let storage = Storage::new(&storage, config)?;
            match (S3Location::parse(&source), S3Location::parse(&destination)) {
                (None, Some(_)) => {
                    upload(
                        Path::new(&source),
                        &S3Location::required(&destination)?,
                        recursive,
                        &storage,
                    )
                    .await
                }
                (Some(_), None) => {
                    download(
                        &S3Location::required(&source)?,
                        Path::new(&destination),
                        recursive,
                        &storage,
                    )
                    .await
                }
                (Some(_), Some(_)) => Err(UsageError(
                    "copy between two S3 locations by way of a local directory (cp to a path, then cp to S3)".into(),
                )
                .into()),
                (None, None) => Err(UsageError("one side of `quiver fs cp` must be an s3:// location".into()).into()),
            }
        }
    }
}

async fn make_buckets(buckets: &[String], storage: &Storage) -> anyhow::Result<ExitCode> {
    let settings = storage.context.effective(&storage.session);
    for text in buckets {
        let location = S3Location::required(text)?;
        if !location.key.trim_matches('/').is_empty() {
            return Err(UsageError(format!("'{text}' is not a bucket: write s3://bucket")).into());
        }
        match create_bucket(&settings, &location.bucket).await? {
            BucketCreated::Created => println!("created bucket s3://{}", location.bucket),
            BucketCreated::AlreadyOwned => println!("bucket s3://{} exists", location.bucket),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(location: &S3Location, recursive: bool, storage: &Storage) -> anyhow::Result<ExitCode> {
    let store = storage.store(location)?;
    let prefix = (!location.key.is_empty()).then(|| ObjectPath::from(location.key.trim_end_matches('/')));
    let what = || format!("cannot list {}", location.url(&location.key));
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if recursive {
        let mut objects = store.list(prefix.as_ref());
        while let Some(meta) = objects.try_next().await.map_err(|e| storage.explain(e, &what()))? {
            print_object(&mut out, &meta)?;
        }
    } else {
        let listing = store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| storage.explain(e, &what()))?;
        for dir in listing.common_prefixes {
            writeln!(out, "{:>33}  {dir}/", "PRE")?;
        }
        for meta in &listing.objects {
            print_object(&mut out, meta)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of `ls`: modified, size, key.
fn print_object(out: &mut impl std::io::Write, meta: &object_store::ObjectMeta) -> std::io::Result<()> {
    writeln!(
        out,
        "{}  {:>12}  {}",
        meta.last_modified.format("%Y-%m-%d %H:%M:%S"),
        meta.size,
        meta.location
    )
}

/// Every file under `dir`, with its path relative to `dir` in `/` form.
fn files_under(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in
            std::fs::read_dir(&current).with_context(|| format!("cannot read directory {}", current.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                let relative = path
                    .strip_prefix(dir)
                    .expect("walked from dir")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                found.push((path, relative));
            }
        }
    }
    found.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(found)
}

async fn upload(
    source: &Path,
    destination: &S3Location,
    recursive: bool,
    storage: &Storage,
) -> anyhow::Result<ExitCode> {
    let files = if source.is_dir() {
        if !recursive {
            bail!(UsageError(format!(
                "{} is a directory: add --recursive",
                source.display()
            )));
        }
        files_under(source)?
    } else if source.is_file() {
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key_is_prefix = destination.key.is_empty() || destination.key.ends_with('/');
        let relative = if key_is_prefix { name } else { String::new() };
        vec![(source.to_path_buf(), relative)]
    } else {
        bail!("cannot read {}: no such file or directory", source.display());
    };
    let store = storage.store(destination)?;
    let mut bytes = 0u64;
    for (path, relative) in &files {
        let key = if relative.is_empty() {
            destination.key.clone()
        } else {
            destination.join(relative)
        };
        let url = destination.url(&key);
        let mut file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        // Large files go up in parts; small ones in one request.
        let mut writer = BufWriter::new(Arc::clone(&store), ObjectPath::from(key.as_str()));
        let copied = tokio::io::copy(&mut file, &mut writer).await;
        let finished = match copied {
            Ok(n) => writer.shutdown().await.map(|()| n),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        };
        let n = finished.map_err(|e| storage.explain(e, &format!("cannot upload {} to {url}", path.display())))?;
        bytes += n;
        println!("{} -> {url} ({n} bytes)", path.display());
    }
    eprintln!(
        "{} file{} uploaded, {bytes} bytes",
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

async fn download(
    source: &S3Location,
    destination: &Path,
    recursive: bool,
    storage: &Storage,
) -> anyhow::Result<ExitCode> {
    let store = storage.store(source)?;
    let objects: Vec<(ObjectPath, PathBuf)> = if recursive {
        let prefix = source.key.trim_end_matches('/');
        let listed: Vec<_> = store
            .list((!prefix.is_empty()).then(|| ObjectPath::from(prefix)).as_ref())
            .try_collect()
            .await
            .map_err(|e| storage.explain(e, &format!("cannot list {}", source.url(&source.key))))?;
        listed
            .into_iter()
            .map(|meta| {
                let relative = meta
                    .location
                    .as_ref()
                    .strip_prefix(prefix)
                    .unwrap_or(meta.location.as_ref());
                let target = destination.join(relative.trim_start_matches('/'));
                (meta.location, target)
            })
            .collect()
    } else {
        let name = source.key.rsplit('/').next().unwrap_or_default();
        let target = if destination.is_dir() || destination.to_string_lossy().ends_with('/') {
            destination.join(name)
        } else {
            destination.to_path_buf()
        };
        vec![(ObjectPath::from(source.key.as_str()), target)]
    };
    for (key, target) in &objects {
        let url = source.url(key.as_ref());
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let mut stream = store
            .get(key)
            .await
            .map_err(|e| storage.explain(e, &format!("cannot read {url}")))?
            .into_stream();
        // Written beside the target and renamed, so a failed copy leaves no half file.
        let partial = target.with_extension("quiver-partial");
        let mut file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut n = 0u64;
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| storage.explain(e, &format!("cannot read {url}")))?
        {
            n += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        tokio::fs::rename(&partial, target).await?;
        println!("{url} -> {} ({n} bytes)", target.display());
    }
    Ok(ExitCode::SUCCESS)
}
