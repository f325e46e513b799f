//! The fields by which a request says where it came from: the client's address, the scheme and
//! host it used, the path a front end saw, its id. Frameworks believe them, so alb removes them
//! from clients it does not trust (`proxy::header_policy`) and drops their look-alikes
//! (`Real_IP`, `X--Forwarded-Proto`) wherever names are read: one list for both.
//!
//! A deny list cannot be complete; it holds the names common frameworks and CDNs read.

/// Fields a proxy writes about its client and this hop, but X-Forwarded-For (a list of hops,
/// continued rather than dropped) and X-Request-Id (replaced, not dropped).
pub fn is_forwarding(name: &str) -> bool {
    matches!(
        name,
        "forwarded"
            | "forwarded-for"
            | "x-forwarded"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-ssl"
            | "x-forwarded-scheme"
            | "x-forwarded-protocol"
            | "x-forwarded-server"
            | "x-forwarded-uri"
            | "x-forwarded-path"
            | "x-original-forwarded-for"
            | "x-original-url"
            | "x-original-uri"
            | "x-rewrite-url"
            | "x-original-host"
            | "x-host"
            | "x-real-ip"
            | "x-client-ip"
            | "client-ip"
            | "true-client-ip"
            | "x-cluster-client-ip"
            | "cf-connecting-ip"
            | "fastly-client-ip"
            | "x-envoy-external-address"
            | "x-url-scheme"
            | "front-end-https"
    )
}

/// Every field alb writes or decides by: the framing, Host, Connection, and the forwarding
/// fields with X-Forwarded-For and X-Request-Id. A look-alike of one of these is never passed on.
pub fn is_alb_field(name: &str) -> bool {
    matches!(
        name,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "host"
            | "x-forwarded-for"
            | "x-request-id"
    ) || is_forwarding(name)
}
