//! What every Keystone v3 client here shares: the tokens URL built from `OS_AUTH_URL`, the
//! token document's catalog, and the choice of an endpoint in it by service type, region and
//! interface, as keystoneauth chooses. Used by the Swift storage and the freezer-api client.

use serde::Deserialize;

/// `{OS_AUTH_URL}/auth/tokens`, adding `/v3` when the URL names no version. Keystone v2 is
/// refused (with the reason as the error).
pub(crate) fn tokens_url(auth_url: &str) -> Result<String, String> {
    let base = auth_url.trim_end_matches('/');
    if base.ends_with("/v2.0") || base.ends_with("/v2") {
        return Err(format!(
            "{auth_url}: Keystone v2 is not supported; give the v3 URL"
        ));
    }
    Ok(if base.ends_with("/v3") {
        format!("{base}/auth/tokens")
    } else {
        format!("{base}/v3/auth/tokens")
    })
}

/// The part of a token document a client reads.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenDoc {
    pub token: TokenBody,
}

/// The token itself.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenBody {
    // Read by the service (its Keystone validation); not by the storages alone.
    #[cfg_attr(not(feature = "service"), allow(dead_code))]
    #[serde(default)]
    pub expires_at: Option<String>,
    #[cfg_attr(not(feature = "service"), allow(dead_code))]
    #[serde(default)]
    pub project: Option<ProjectRef>,
    #[serde(default)]
    pub catalog: Vec<CatalogService>,
}

/// The project a token is scoped to.
#[derive(Debug, Deserialize)]
pub(crate) struct ProjectRef {
    #[cfg_attr(not(feature = "service"), allow(dead_code))]
    pub id: String,
}

/// A service of the catalog.
#[derive(Debug, Deserialize)]
pub(crate) struct CatalogService {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub endpoints: Vec<CatalogEndpoint>,
}

/// One endpoint of a service.
#[derive(Debug, Deserialize)]
pub(crate) struct CatalogEndpoint {
    pub interface: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub region_id: Option<String>,
    pub url: String,
}

/// Why no endpoint was chosen.
#[derive(Debug, PartialEq)]
pub(crate) enum NoEndpoint {
    /// The catalog has no service of that type.
    NoService,
    /// None of its endpoints has that region and interface; what it offers instead, as
    /// sorted `region/interface` pairs.
    NoMatch {
        /// The interface looked for, normalised.
        interface: String,
        offered: Vec<String>,
    },
}

/// The endpoint of service `kind` for `region` (any when `None` or empty) and `interface`
/// (`public` when `None` or empty; keystoneauth's `publicURL`, `internalURL` and `adminURL`
/// are read as `public`, `internal` and `admin`).
pub(crate) fn find_endpoint<'a>(
    catalog: &'a [CatalogService],
    kind: &str,
    region: Option<&str>,
    interface: Option<&str>,
) -> Result<&'a CatalogEndpoint, NoEndpoint> {
    let interface = match interface.map(str::trim).filter(|s| !s.is_empty()) {
        None => "public",
        Some("publicURL") => "public",
        Some("internalURL") => "internal",
        Some("adminURL") => "admin",
        Some(other) => other,
    };
    let region = region.filter(|r| !r.is_empty());
    let endpoints: Vec<&CatalogEndpoint> = catalog
        .iter()
        .filter(|s| s.kind == kind)
        .flat_map(|s| s.endpoints.iter())
        .collect();
    if endpoints.is_empty() {
        return Err(NoEndpoint::NoService);
    }
    if let Some(e) = endpoints.iter().find(|e| {
        e.interface == interface
            && region
                .is_none_or(|r| e.region.as_deref() == Some(r) || e.region_id.as_deref() == Some(r))
    }) {
        return Ok(e);
    }
    let mut offered: Vec<String> = endpoints
        .iter()
        .map(|e| {
            let region = e.region.as_deref().or(e.region_id.as_deref());
            format!("{}/{}", region.unwrap_or("-"), e.interface)
        })
        .collect();
    offered.sort();
    offered.dedup();
    Err(NoEndpoint::NoMatch {
        interface: interface.to_string(),
        offered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_urls_get_the_v3_path_and_v2_is_refused() {
        for (given, want) in [
            ("http://k:5000/v3", "http://k:5000/v3/auth/tokens"),
            ("http://k:5000/v3/", "http://k:5000/v3/auth/tokens"),
            ("http://k:5000", "http://k:5000/v3/auth/tokens"),
            ("https://k/identity/v3", "https://k/identity/v3/auth/tokens"),
        ] {
            assert_eq!(tokens_url(given).unwrap(), want);
        }
        let e = tokens_url("http://k:5000/v2.0").unwrap_err();
        assert!(e.contains("v2 is not supported"), "{e}");
    }

    #[test]
    fn endpoints_are_chosen_by_type_region_and_interface() {
        let doc: TokenDoc = serde_json::from_str(
            r#"{"token": {"catalog": [
                {"type": "backup", "endpoints": [
                    {"interface": "public", "region": "r1", "url": "http://pub1"},
                    {"interface": "internal", "region_id": "r2", "url": "http://int2"}]},
                {"type": "identity", "endpoints": []}]}}"#,
        )
        .unwrap();
        let c = &doc.token.catalog;
        let url = |r, i| find_endpoint(c, "backup", r, i).map(|e| e.url.as_str());
        assert_eq!(url(None, None), Ok("http://pub1"));
        assert_eq!(url(Some(""), Some("publicURL")), Ok("http://pub1"));
        assert_eq!(url(Some("r2"), Some("internalURL")), Ok("http://int2"));
        assert_eq!(
            url(Some("r1"), Some("admin")),
            Err(NoEndpoint::NoMatch {
                interface: "admin".into(),
                offered: vec!["r1/public".into(), "r2/internal".into()],
            })
        );
        assert_eq!(
            find_endpoint(c, "object-store", None, None).map(|e| e.url.as_str()),
            Err(NoEndpoint::NoService)
        );
    }
}
