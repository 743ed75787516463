//! Bundles: upload (streamed to a temporary file while hashing, then the signature and every
//! payload verified before it is kept as `<sha256>.p6b`), list, and download with ranges.

use std::io::{Read, SeekFrom};
use std::path::Path;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use p6os_bundle::format::{self, Manifest};
use p6os_bundle::keys::PublicKey;
use p6os_protocol::{Bundle, BundlePage};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::extract::{content_length, content_type_is, drain, too_large, Caller, Operator, Param};
use super::{json, now, AppState};
use crate::auth::hex;
use crate::db::{self, bundles};
use crate::error::{error_chain, ApiError};
use crate::page::{query_pairs, PageQuery};
use crate::range::{self, Plan};

/// Largest bundle accepted.
pub const MAX_BUNDLE: u64 = 16 << 30;

fn internal_io(what: &str, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("{what}: {e}"))
}

/// `GET /api/v1/bundles?limit=&after=`: a page.
pub async fn list(
    State(st): State<AppState>,
    _: Operator,
    RawQuery(query): RawQuery,
) -> Result<Json<BundlePage>, ApiError> {
    let page = PageQuery::only(query_pairs(query.as_deref())?)?;
    let after = page.after.clone();
    st.db
        .run(move |c| bundles::list(c, &page).map_err(ApiError::from))
        .await?
        .map(|(items, next)| Json(BundlePage { items, next }))
        .ok_or_else(|| {
            ApiError::field(
                "after",
                format!(
                    "no bundle {}: pass the `next` of the previous page",
                    after.unwrap_or_default()
                ),
            )
        })
}

/// What an upload turned out to be.
enum Stored {
    New(Bundle),
    Existing(Bundle),
}

/// `POST /api/v1/bundles` (`application/octet-stream`, the `.p6b` file): 201 new, 200 already
/// held, 409 another bundle with the same name, version and arch, 422 refused (signature,
/// damaged payload, not a bundle).
pub async fn upload(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Checked here rather than by an extractor, so a refused upload's body is drained first
    // (the gate has let the caller in).
    if let Err(e) = content_type_is(&headers, "application/octet-stream") {
        return Err(drain(body, e).await);
    }
    if content_length(&headers).is_some_and(|n| n > MAX_BUNDLE) {
        return Err(too_large(MAX_BUNDLE));
    }
    let temp = tempfile::Builder::new()
        .prefix(".upload-")
        .suffix(".tmp")
        .tempfile_in(&st.bundles)
        .map_err(|e| internal_io("cannot create a temporary file", e))?;
    let (sha256, size) = receive(body, &temp).await?;

    let trusted = st.trusted.clone();
    let (temp, manifest, key_id) = tokio::task::spawn_blocking(move || {
        verify(temp.path(), size, &trusted).map(|(m, k)| (temp, m, k))
    })
    .await
    .map_err(|_| ApiError::internal("the verifying thread stopped"))??;

    let bundle = Bundle {
        sha256: sha256.clone(),
        name: manifest.name,
        version: manifest.version,
        arch: manifest.arch,
        size,
        key_id,
        uploaded_at: now(),
    };
    let dir = st.bundles.clone();
    let stored = st.db.run(move |c| store(c, &dir, temp, bundle)).await?;
    Ok(match stored {
        Stored::New(b) => json(StatusCode::CREATED, b),
        Stored::Existing(b) => json(StatusCode::OK, b),
    })
}

/// Streams the body into `temp`, hashing it; the sha256 hex and the size.
async fn receive(body: Body, temp: &NamedTempFile) -> Result<(String, u64), ApiError> {
    let file = temp
        .as_file()
        .try_clone()
        .map_err(|e| internal_io("cannot open the temporary file", e))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let mut body = body;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(format!("the upload was interrupted: {}", error_chain(&e)))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > MAX_BUNDLE {
            return Err(too_large(MAX_BUNDLE));
        }
        hasher.update(&data);
        out.write_all(&data)
            .await
            .map_err(|e| internal_io("cannot write the temporary file", e))?;
    }
    out.flush()
        .await
        .map_err(|e| internal_io("cannot write the temporary file", e))?;
    let file = out.into_inner();
    file.sync_all()
        .await
        .map_err(|e| internal_io("cannot sync the temporary file", e))?;
    Ok((hex(&hasher.finalize()), size))
}

fn refused(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("bundle refused: {e}"),
    )
}

/// Header, signature against the trusted keys, every payload's bytes, and no trailing bytes.
/// The manifest and the signing key's id.
fn verify(path: &Path, size: u64, trusted: &[PublicKey]) -> Result<(Manifest, String), ApiError> {
    let file = std::fs::File::open(path)
        .map_err(|e| internal_io("cannot reopen the temporary file", e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let header = format::read_header(&mut r).map_err(refused)?;
    let key = header.verify(trusted).map_err(refused)?;
    format::verify_compressed(&mut r, &header.manifest).map_err(refused)?;
    let expected = header.len + header.manifest.compressed_total();
    let mut extra = [0u8; 1];
    if expected != size || r.read(&mut extra).map_err(|e| internal_io("read", e))? != 0 {
        return Err(refused(format!(
            "{size} bytes, the manifest accounts for {expected}"
        )));
    }
    Ok((header.manifest, key.id().to_string()))
}

/// Keeps the verified upload as `<sha256>.p6b` and records it (under the database lock, so
/// two uploads of one bundle cannot race).
fn store(
    c: &mut db::Conn,
    dir: &Path,
    temp: NamedTempFile,
    bundle: Bundle,
) -> Result<Stored, ApiError> {
    c.write(|tx| {
        db::sql::hold(tx, db::sql::Lock::Bundles).map_err(|e| ApiError::from(db::DbError::Query {
            what: "bundles lock",
            source: e,
        }))?;
        if let Some(existing) = bundles::get_in(tx, &bundle.sha256)? {
            if dir.join(format!("{}.p6b", bundle.sha256)).exists() {
                return Ok(Stored::Existing(existing));
            }
            // The row outlived its file (removed by hand): put the file back.
            temp.persist(dir.join(format!("{}.p6b", bundle.sha256)))
                .map_err(|e| internal_io("cannot keep the bundle", e.error))?;
            return Ok(Stored::Existing(existing));
        }
        if let Some(other) = bundles::find(tx, &bundle.name, &bundle.version, &bundle.arch)? {
            return Err(ApiError::conflict(format!(
                "another bundle of {} {} for {} is already held (sha256 {}): versions are immutable",
                bundle.name, bundle.version, bundle.arch, other.sha256
            )));
        }
        temp.persist(dir.join(format!("{}.p6b", bundle.sha256)))
            .map_err(|e| internal_io("cannot keep the bundle", e.error))?;
        bundles::insert(tx, &bundle)?;
        Ok(Stored::New(bundle))
    })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn value(s: String) -> Result<HeaderValue, ApiError> {
    HeaderValue::try_from(s).map_err(|e| ApiError::internal(format!("header value: {e}")))
}

/// `GET /api/v1/bundles/{sha256}/content` (a paired device's token or the admin token): the
/// file with `Content-Length` (never chunked), `ETag`, and one `Range` (206, 416).
pub async fn content(
    State(st): State<AppState>,
    _caller: Caller,
    Param(sha256): Param,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !is_sha256_hex(&sha256) {
        return Err(ApiError::field(
            "sha256",
            "not a bundle id: 64 lowercase hexadecimal digits",
        ));
    }
    let known = {
        let sha256 = sha256.clone();
        st.db
            .run(move |c| bundles::get(c, &sha256).map_err(ApiError::from))
            .await?
    };
    if known.is_none() {
        return Err(ApiError::not_found(format!("no bundle {sha256}")));
    }
    let path = st.bundles.join(format!("{sha256}.p6b"));
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| internal_io(&format!("cannot open {}", path.display()), e))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| internal_io("cannot stat the bundle", e))?
        .len();
    let etag = format!("\"{sha256}\"");
    let plan = range::plan(
        header_str(&headers, header::RANGE),
        header_str(&headers, header::IF_RANGE),
        len,
        &etag,
    );
    let (status, start, count) = match plan {
        Plan::Full => (StatusCode::OK, 0, len),
        Plan::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Plan::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the range is outside the bundle's {len} bytes"),
            )
            .into_response();
            r.headers_mut()
                .insert(header::CONTENT_RANGE, value(format!("bytes */{len}"))?);
            return Ok(r);
        }
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| internal_io("cannot seek in the bundle", e))?;
    }
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(count), 256 << 10));
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // Set explicitly: hyper then sends this length instead of chunked encoding.
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, value(etag)?);
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            value(format!("bytes {start}-{}/{len}", start + count - 1))?,
        );
    }
    Ok(response)
}
