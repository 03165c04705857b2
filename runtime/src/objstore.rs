//! Object stores named by URL, shared by checkpoint storage and the file connectors:
//! `s3://<bucket>/<prefix>` (credentials, region and endpoint from the standard `AWS_*`
//! environment variables), `gs://<bucket>/<prefix>` (`GOOGLE_*`: a service account file or
//! key, or the metadata server), `az://<container>/<prefix>` (`AZURE_*`: storage account and
//! key, SAS or workload identity), else a local path (`file://` or plain). The same
//! `object_store` code serves all three clouds; the tests run against an S3-compatible server.

use object_store::ObjectStore;
use std::sync::Arc;
use thiserror::Error;

/// A URL that does not name a usable store.
#[derive(Debug, Error)]
#[error("{url}: {msg}")]
pub struct UrlError {
    pub url: String,
    pub msg: String,
}

/// A remote store and the path prefix inside it (no leading or trailing `/`).
pub type Remote = (Arc<dyn ObjectStore>, String);

/// Whether `url` names a remote store rather than a local path.
pub fn is_remote(url: &str) -> bool {
    ["s3://", "gs://", "az://"]
        .iter()
        .any(|s| url.starts_with(s))
}

/// The local path a `file://` URL or plain path names.
pub fn local_path(url: &str) -> &str {
    url.strip_prefix("file://").unwrap_or(url)
}

/// The store for a remote URL and the prefix inside it, or `None` for local paths. Builds the
/// client only: nothing is sent until the first request.
pub fn remote(url: &str) -> Result<Option<Remote>, UrlError> {
    if let Some(rest) = url
        .strip_prefix("gs://")
        .or_else(|| url.strip_prefix("az://"))
    {
        return other_cloud(url, rest);
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        return Ok(None);
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(UrlError {
            url: url.to_string(),
            msg: "no bucket: expected s3://<bucket>/<prefix>".into(),
        });
    }
    // Fail a request within seconds when the store is down (a checkpoint is retried at the
    // next interval, a job restarts from its checkpoint) rather than stall for minutes.
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    use object_store::ClientConfigKey as C;
    use object_store::aws::AmazonS3ConfigKey as K;
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry);
    // Timeouts unless the environment sets them (`with_client_options` would drop its
    // AWS_ALLOW_HTTP and the like).
    if std::env::var_os("AWS_CONNECT_TIMEOUT").is_none() {
        builder = builder.with_config(K::Client(C::ConnectTimeout), "2s");
    }
    if std::env::var_os("AWS_TIMEOUT").is_none() {
        builder = builder.with_config(K::Client(C::Timeout), "60s");
    }
    if std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| e.starts_with("http://")) {
        builder = builder.with_config(K::Client(C::AllowHttp), "true");
    }
    let store = builder.build().map_err(|e| UrlError {
        url: url.to_string(),
        msg: format!("{e}; set AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for S3-compatible servers)"),
    })?;
    Ok(Some((
        Arc::new(store),
        prefix.trim_matches('/').to_string(),
    )))
}

/// Google Cloud Storage or Azure Blob Storage, configured from the environment.
fn other_cloud(url: &str, rest: &str) -> Result<Option<Remote>, UrlError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let err = |msg: String| UrlError {
        url: url.to_string(),
        msg,
    };
    if bucket.is_empty() {
        return Err(err(
            "no bucket or container: expected gs://<bucket>/<prefix> or az://<container>/<prefix>"
                .into(),
        ));
    }
    let retry = object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    let store: Arc<dyn ObjectStore> = if url.starts_with("gs://") {
        let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry);
        Arc::new(b.build().map_err(|e| {
            err(format!("{e}; set GOOGLE_SERVICE_ACCOUNT (a key file) or GOOGLE_SERVICE_ACCOUNT_KEY, or run where the metadata server gives credentials"))
        })?)
    } else {
        let b = object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_container_name(bucket)
            .with_retry(retry);
        Arc::new(b.build().map_err(|e| {
            err(format!("{e}; set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or a SAS token, or workload identity)"))
        })?)
    };
    Ok(Some((store, prefix.trim_matches('/').to_string())))
}

/// An S3 error's code (`NoSuchBucket`, `SignatureDoesNotMatch`, ...) rather than the whole
/// XML body the server sent.
pub fn short(e: &object_store::Error) -> String {
    let text = e.to_string();
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next());
    match code {
        Some(c) => {
            let status = text
                .split("status code: ")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .unwrap_or("");
            format!("{c}, {status}")
        }
        None => text.chars().take(300).collect(),
    }
}

/// What to check when a store refuses a request, for error messages.
pub const CHECK_SETTINGS: &str = "check the bucket name, the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), AWS_REGION and, for S3-compatible servers, AWS_ENDPOINT_URL";

/// Runs `f` to completion from synchronous code, inside a tokio runtime or not (plan
/// validation is synchronous and may run on a runtime's thread, where `block_on` would panic):
/// on a thread of its own with a current-thread runtime.
pub fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(f))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("object store request panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        assert!(remote("data/x").unwrap().is_none());
        assert!(remote("s3:///x").is_err());
        assert_eq!(local_path("file:///tmp/a"), "/tmp/a");
        assert!(is_remote("s3://b/p") && !is_remote("/b/p"));
        assert!(is_remote("gs://b/p") && is_remote("az://c/p"));
        assert!(remote("gs:///x").is_err() && remote("az:///x").is_err());
    }
}
