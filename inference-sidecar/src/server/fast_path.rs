//! The prediction route answered ahead of the router, and the body read that bounds every request.

use super::*;

/// The sidecar's HTTP service: the router, with the prediction route answered ahead of it.
///
/// Production traffic is nearly all `POST /v1/models/{name}:predict`. Through the router each such
/// request also paid for path matching, the request-id middleware (a boxed future, a clone of the
/// inner route) and the layers around the handler: about 2 µs, as much as the whole handler, on
/// the one runtime thread that is the sidecar's bottleneck under load (BENCHMARKS.md). Here the
/// same steps run inline. Anything else — another route, another model's name, a path that needs
/// percent-decoding — goes through the router, which answers it as before.
#[derive(Clone)]
pub struct Sidecar {
    state: Arc<AppState>,
    router: Router,
}

pub fn app(state: Arc<AppState>) -> Sidecar {
    Sidecar { router: router(state.clone()), state }
}

impl Sidecar {
    fn is_predict(&self, req: &Request) -> bool {
        req.method() == Method::POST
            && req
                .uri()
                .path()
                .strip_prefix("/v1/models/")
                .and_then(|target| target.strip_suffix(":predict"))
                .is_some_and(|name| name == self.state.model_name)
    }
}

impl tower::Service<Request> for Sidecar {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if self.is_predict(&req) {
            let state = self.state.clone();
            Box::pin(async move { Ok(predict_inline(state, req).await) })
        } else if req.method() == Method::POST {
            // The other POST routes read their body here, bounded the same way; a refusal is
            // rendered by the router's middleware (see `around`), which counts it per route.
            let mut router = self.router.clone();
            let limit = self.state.max_payload_bytes;
            Box::pin(async move {
                let (mut parts, body) = req.into_parts();
                let body = match read_decoded(&parts.headers, body, limit).await {
                    BodyRead::Whole(bytes) => axum::body::Body::from(bytes),
                    refused => {
                        parts.extensions.insert(Refused(refused));
                        axum::body::Body::empty()
                    }
                };
                router.call(Request::from_parts(parts, body)).await
            })
        } else {
            Box::pin(self.router.call(req))
        }
    }
}

/// A body read within the payload limit.
#[derive(Clone, Debug)]
pub(super) enum BodyRead {
    Whole(Bytes),
    /// Over the limit; `drained`: the rest was read (so the connection can stay open).
    TooLarge {
        drained: bool,
    },
    Broken(String),
    /// Sent with a `Content-Encoding` this server does not decode (named).
    UnsupportedEncoding(String),
}

/// A request whose body was refused before the router, for `around` to answer.
#[derive(Clone, Debug)]
pub(super) struct Refused(pub BodyRead);

/// Past the limit, at most this much more of a body is read and dropped...
const DRAIN_BOUND: usize = 4 << 20;
/// ... for at most this long.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a body of at most `limit` bytes. A longer one is refused, but its rest is read and
/// dropped first (within [`DRAIN_BOUND`] and [`DRAIN_TIME`]): a server that answers 413 and closes
/// while the client is still sending has unread data on the socket, the kernel then resets the
/// connection, and the client often sees the reset instead of the 413.
pub(super) async fn read_bounded(mut body: axum::body::Body, limit: usize) -> BodyRead {
    // A body in one frame (the usual case) is passed on as it came; only a body in several
    // frames is copied together.
    let mut whole = Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    loop {
        match body.frame().await {
            None => return BodyRead::Whole(joined.map_or(whole, bytes::BytesMut::freeze)),
            Some(Err(e)) => return BodyRead::Broken(e.to_string()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                let read = joined.as_ref().map_or(whole.len(), bytes::BytesMut::len);
                if read + data.len() > limit {
                    let drained = drain(body, DRAIN_BOUND.saturating_sub(data.len())).await;
                    return BodyRead::TooLarge { drained };
                }
                match &mut joined {
                    Some(buf) => buf.extend_from_slice(&data),
                    None if whole.is_empty() => whole = data,
                    None => {
                        let mut buf = bytes::BytesMut::with_capacity(whole.len() + data.len());
                        buf.extend_from_slice(&whole);
                        buf.extend_from_slice(&data);
                        joined = Some(buf);
                    }
                }
            }
        }
    }
}

/// Reads a body within the limit and decodes it per its `Content-Encoding`, within the limit again
/// (see [`content_encoding`](super::content_encoding)).
pub(super) async fn read_decoded(headers: &HeaderMap, body: axum::body::Body, limit: usize) -> BodyRead {
    match read_bounded(body, limit).await {
        BodyRead::Whole(bytes) => super::content_encoding::decode(headers, bytes, limit),
        refused => refused,
    }
}

/// Reads and drops up to `bound` bytes; true when the body ended within the bound and the time.
async fn drain(mut body: axum::body::Body, bound: usize) -> bool {
    let read = async {
        let mut left = bound;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            let n = frame.data_ref().map_or(0, Bytes::len);
            if n > left {
                return false;
            }
            left -= n;
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read).await.unwrap_or(false)
}

/// The answer to a refused body.
/// `oip`: the request came to an Open Inference Protocol path, whose errors are `{"error": "..."}`.
pub(super) fn refusal(read: BodyRead, limit: usize, oip: bool) -> Response {
    match read {
        BodyRead::TooLarge { drained } => {
            let mut resp = failure_response(ApiError::PayloadTooLarge { limit }, oip);
            if !drained {
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
        BodyRead::Broken(e) => {
            failure_response(ApiError::invalid("body", Reason::Malformed, format!("failed to read the body: {e}")), oip)
        }
        BodyRead::UnsupportedEncoding(name) => failure_response(ApiError::UnsupportedEncoding(name), oip),
        BodyRead::Whole(_) => unreachable!("a whole body is not refused"),
    }
}

/// `POST /v1/models/{this model}:predict` without the router (see [`Sidecar`]): the same steps as
/// [`around`] and [`predict`].
pub(super) async fn predict_inline(state: Arc<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let (rid, id_header) = request_id(&state, req.headers());
    let arrival = state.arrival();
    let limit = state.max_payload_bytes;
    let (parts, body) = req.into_parts();
    let resp = match read_decoded(&parts.headers, body, limit).await {
        BodyRead::Whole(body) => {
            predict_body(&state, rid, &body, arrival).await.unwrap_or_else(IntoResponse::into_response)
        }
        refused => refusal(refused, limit, false),
    };
    finish(&state, resp, id_header, route_index(&state, "/v1/models/{target}"), start)
}
