//! The database URL of the MariaDB/MySQL store: what this store reads itself, and how it is
//! named in messages (never with its password).

use mysql_async::Opts;

/// The database a connection reaches, without the password: `mysql://user@host:port/db`.
pub(super) fn describe(opts: &Opts) -> String {
    let user = opts.user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = opts.db_name().unwrap_or("");
    let socket = opts
        .socket()
        .map(|s| format!("?socket={s}"))
        .unwrap_or_default();
    format!(
        "mysql://{user}{}:{}/{db}{socket}",
        opts.ip_or_hostname(),
        opts.tcp_port()
    )
}

/// `url` with a `mariadb://` scheme read as `mysql://`, and the parameters this store reads
/// itself taken out (`ssl_ca`).
pub(super) fn own_params(url: &str) -> (String, Option<String>) {
    let url = match url.get(..10) {
        Some(s) if s.eq_ignore_ascii_case("mariadb://") => format!("mysql://{}", &url[10..]),
        _ => url.to_string(),
    };
    let Some((base, query)) = url.split_once('?') else {
        return (url, None);
    };
    let mut ssl_ca = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("ssl_ca=") {
            Some(v) => {
                ssl_ca = Some(v.to_string());
                false
            }
            None => true,
        })
        .collect();
    if kept.is_empty() {
        (base.to_string(), ssl_ca)
    } else {
        (format!("{base}?{}", kept.join("&")), ssl_ca)
    }
}

/// `url` with any password replaced by `***`, for a URL that does not parse.
pub(super) fn mask_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return "the database URL".to_string();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { ":***" } else { "" };
            format!("{}{user}{masked}{}", &url[..start], &url[start + at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_password_of_a_url() {
        assert_eq!(
            mask_url("mysql://u:s3cret@h:3306/db?x=1"),
            "mysql://u:***@h:3306/db?x=1"
        );
        assert_eq!(mask_url("mysql://u@h/db"), "mysql://u@h/db");
        assert_eq!(mask_url("mysql://h/db"), "mysql://h/db");
        assert_eq!(mask_url("mysql://u:p@ss:w@h/db"), "mysql://u:***@h/db");
        assert_eq!(mask_url("no scheme"), "the database URL");
    }

    #[test]
    fn reads_mariadb_urls_and_its_own_parameters() {
        assert_eq!(
            own_params("MariaDB://u:p@h/db?require_ssl=true&ssl_ca=/etc/ca.pem&pool_max=4"),
            (
                "mysql://u:p@h/db?require_ssl=true&pool_max=4".to_string(),
                Some("/etc/ca.pem".to_string())
            )
        );
        assert_eq!(
            own_params("mysql://h/db?ssl_ca=x"),
            ("mysql://h/db".to_string(), Some("x".to_string()))
        );
        assert_eq!(
            own_params("mysql://h/db"),
            ("mysql://h/db".to_string(), None)
        );
    }

    #[test]
    fn describes_a_database_without_its_password() {
        let opts = Opts::from_url("mysql://user:pa%40ss@127.0.0.1:3307/freezer").unwrap();
        let d = describe(&opts);
        assert_eq!(d, "mysql://user@127.0.0.1:3307/freezer");
        assert!(!d.contains("pa"));
    }
}
