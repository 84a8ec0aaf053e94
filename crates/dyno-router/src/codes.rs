//! Heroku router error codes, each defined once with its text, status and page.
//!
//! Descriptions are the `desc="..."` strings Heroku's router writes into the app log
//! (Heroku Dev Center, "Heroku Error Codes").

use hyper::StatusCode;

/// A Heroku router error code (`H10` … `H99`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HerokuCode {
    /// A crashed web dyno or a boot timeout on the web dyno.
    H10,
    /// More requests in flight than the app's dynos can take (200 × web dynos).
    H11,
    /// No first byte from the dyno within the request timeout (30 s).
    H12,
    /// The dyno closed the connection without sending a response.
    H13,
    /// The app has no `up` web dynos.
    H14,
    /// Web dynos were starting but none came up within the boot wait (75 s).
    H20,
    /// No data on an established connection for the idle timeout (55 s).
    H15,
    /// The dyno closed the socket (or errored) before the whole request body was sent.
    H18,
    /// Connecting to the dyno took longer than the connect timeout (5 s).
    H19,
    /// The dyno refused the connection.
    H21,
    /// The request or response broke an HTTP restriction (e.g. response headers too large).
    H25,
    /// The client went away before the response was delivered.
    H27,
    /// The client sent no data for the idle timeout (55 s).
    H28,
    /// The app is in maintenance mode.
    H80,
    /// The app has never been deployed.
    H81,
    /// Internal error of the router.
    H99,
}

impl HerokuCode {
    /// Every code, in order.
    pub const ALL: [HerokuCode; 16] = [
        Self::H10,
        Self::H11,
        Self::H12,
        Self::H13,
        Self::H14,
        Self::H15,
        Self::H18,
        Self::H19,
        Self::H20,
        Self::H21,
        Self::H25,
        Self::H27,
        Self::H28,
        Self::H80,
        Self::H81,
        Self::H99,
    ];

    /// `"H12"`.
    pub fn code(self) -> &'static str {
        match self {
            Self::H10 => "H10",
            Self::H11 => "H11",
            Self::H12 => "H12",
            Self::H13 => "H13",
            Self::H14 => "H14",
            Self::H20 => "H20",
            Self::H15 => "H15",
            Self::H18 => "H18",
            Self::H19 => "H19",
            Self::H21 => "H21",
            Self::H25 => "H25",
            Self::H27 => "H27",
            Self::H28 => "H28",
            Self::H80 => "H80",
            Self::H81 => "H81",
            Self::H99 => "H99",
        }
    }

    /// Heroku's `desc="..."` text.
    pub fn desc(self) -> &'static str {
        match self {
            Self::H10 => "App crashed",
            Self::H11 => "Backlog too deep",
            Self::H12 => "Request timeout",
            Self::H13 => "Connection closed without response",
            Self::H14 => "No web dynos running",
            Self::H20 => "App boot timeout",
            Self::H15 => "Idle connection",
            Self::H18 => "Server Request Interrupted",
            Self::H19 => "Backend connection timeout",
            Self::H21 => "Backend connection refused",
            Self::H25 => "HTTP Restriction",
            Self::H27 => "Client Request Interrupted",
            Self::H28 => "Client Connection Idle",
            Self::H80 => "Maintenance mode",
            Self::H81 => "Blank app",
            Self::H99 => "Platform error",
        }
    }

    /// HTTP status the router returns to the client (and logs).
    pub fn status(self) -> StatusCode {
        match self {
            // nginx's "client closed request"; the client is gone, it is only logged.
            Self::H27 | Self::H28 => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::H25 => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the router log line is `at=error` (all but H80/H81, which Heroku logs as `at=info`).
    pub fn is_error(self) -> bool {
        !matches!(self, Self::H80 | Self::H81)
    }

    /// The small HTML page sent to the client.
    pub fn html(self) -> String {
        let (title, text) = match self {
            Self::H80 => (
                "Offline for Maintenance",
                "This app is in maintenance mode. Please check back soon.",
            ),
            Self::H81 => (
                "Blank app",
                "There's nothing here, yet. This app has not been deployed.",
            ),
            _ => (
                "Application Error",
                "An error occurred in the application and your page could not be served.",
            ),
        };
        page(title, text, Some(self))
    }
}

impl std::fmt::Display for HerokuCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.code(), self.desc())
    }
}

/// Why the router answered a request itself instead of a dyno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// A Heroku H-code.
    #[error("{0}")]
    Heroku(HerokuCode),
    /// The request broke an HTTP rule (bad Host, too-large headers, smuggling…): 400.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// `Expect` with anything but `100-continue`: 417.
    #[error("expectation failed")]
    ExpectationFailed,
    /// The whole request head is larger than the router buffers: 431.
    #[error("request header fields too large")]
    HeadTooLarge,
    /// No app for this Host: 404 "There's nothing here, yet." (Heroku's no-such-app page).
    #[error("no such app")]
    NoSuchApp,
}

impl From<HerokuCode> for RouterError {
    fn from(c: HerokuCode) -> Self {
        Self::Heroku(c)
    }
}

impl RouterError {
    /// Status returned to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Heroku(c) => c.status(),
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            Self::NoSuchApp => StatusCode::NOT_FOUND,
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// The H-code, if this error has one.
    pub fn code(&self) -> Option<HerokuCode> {
        match self {
            Self::Heroku(c) => Some(*c),
            _ => None,
        }
    }

    /// HTML page for the client, the app's own page framed when it has one for this error
    /// (`MAINTENANCE_PAGE_URL` for `H80`, `ERROR_PAGE_URL` for the other H-codes but `H81`).
    pub fn html_for(&self, pages: &crate::routes::ErrorPages) -> String {
        let url = match self {
            Self::Heroku(HerokuCode::H80) => pages.maintenance.as_deref(),
            Self::Heroku(HerokuCode::H81) => None,
            Self::Heroku(_) => pages.error.as_deref(),
            _ => None,
        };
        match url {
            Some(url) => framed_page(url),
            None => self.html(),
        }
    }

    /// HTML page for the client.
    pub fn html(&self) -> String {
        match self {
            Self::Heroku(c) => c.html(),
            Self::BadRequest(why) => page("Bad Request", why, None),
            Self::ExpectationFailed => page(
                "Expectation Failed",
                "Only Expect: 100-continue is supported.",
                None,
            ),
            Self::HeadTooLarge => page(
                "Request Header Fields Too Large",
                "The request head is too large.",
                None,
            ),
            Self::NoSuchApp => page(
                "No such app",
                "There's nothing here, yet. Check the address, or create an app with this name.",
                None,
            ),
        }
    }
}

/// A page that shows `url` over the whole window (Heroku serves custom error pages this way).
fn framed_page(url: &str) -> String {
    let src: String = url
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><style>html,body,iframe{{margin:0;\
         padding:0;border:0;width:100%;height:100%;display:block}}</style></head>\
         <body><iframe src=\"{src}\"></iframe></body></html>\n"
    )
}

fn page(title: &str, text: &str, code: Option<HerokuCode>) -> String {
    let code = code
        .map(|c| format!("<p><small>{}</small></p>", c.code()))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p>{code}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apps_own_pages_are_framed_for_its_codes() {
        let pages = crate::routes::ErrorPages::from_config(
            Some("https://pages.example.test/error.html?a=1&b=\"x\""),
            Some("https://pages.example.test/maintenance.html"),
        );
        let h10 = RouterError::Heroku(HerokuCode::H10).html_for(&pages);
        assert!(
            h10.contains(
                "<iframe src=\"https://pages.example.test/error.html?a=1&amp;b=&quot;x&quot;\">"
            ),
            "{h10}"
        );
        let h80 = RouterError::Heroku(HerokuCode::H80).html_for(&pages);
        assert!(h80.contains("maintenance.html"), "{h80}");
        let h81 = RouterError::Heroku(HerokuCode::H81).html_for(&pages);
        assert!(h81.contains("Blank app"), "{h81}");
        let none = RouterError::NoSuchApp.html_for(&pages);
        assert!(!none.contains("iframe"), "{none}");
        let plain = crate::routes::ErrorPages::from_config(Some("javascript:alert(1)"), None);
        assert_eq!(plain, crate::routes::ErrorPages::default());
    }

    #[test]
    fn every_code_has_text_status_and_page() {
        for c in HerokuCode::ALL {
            assert!(c.code().starts_with('H'));
            assert!(!c.desc().is_empty());
            assert!(c.html().contains("<html>"));
        }
        assert_eq!(HerokuCode::H12.desc(), "Request timeout");
        assert_eq!(HerokuCode::H12.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(HerokuCode::H27.status().as_u16(), 499);
        assert_eq!(HerokuCode::H25.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            RouterError::BadRequest("x").status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(RouterError::ExpectationFailed.status().as_u16(), 417);
    }
}
