//! Standard HTTP reason phrases, as Pushpin fills them in when a GRIP response gives none.

/// The reason phrase Pushpin uses for `code` (IANA registry names, in the older wording Pushpin
/// kept for 413/414/416), or `"Undefined Reason"` for any code it does not know. This table is
/// deliberately separate from `http1::reason_phrase` (RFC 9110 wording, used for tack's own
/// answers): published and timed-out GRIP responses must read exactly as Pushpin's do.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        306 => "Reserved",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Requested Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Undefined Reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_codes() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(202), "Accepted");
        assert_eq!(reason_phrase(304), "Not Modified");
        assert_eq!(reason_phrase(404), "Not Found");
        assert_eq!(reason_phrase(413), "Request Entity Too Large");
        assert_eq!(reason_phrase(502), "Bad Gateway");
        assert_eq!(reason_phrase(299), "Undefined Reason");
        assert_eq!(reason_phrase(0), "Undefined Reason");
        assert_eq!(reason_phrase(999), "Undefined Reason");
    }

    #[test]
    fn every_phrase_is_a_valid_reason() {
        for code in 0..=999u16 {
            let r = reason_phrase(code);
            assert!(!r.is_empty() && r.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
        }
    }
}
