//! The error codes the edge gives clients for a request to a function (the
//! `error` field of the JSON body, beside the error id), and the one table
//! from code to status.

use http::StatusCode;

/// Why the edge answered a request itself instead of with the guest's
/// response (or cut a guest's streamed response off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request cannot be handed to a function.
    BadRequest,
    /// No function (or host endpoint) at this path.
    NotFound,
    /// The function's file is there but failed to load, and no earlier
    /// version serves.
    LoadFailed,
    /// A host endpoint asked with a method it does not take.
    MethodNotAllowed,
    /// The request body is over the function's limit.
    BodyTooLarge,
    /// Every instance slot stayed busy for the queue timeout.
    Overloaded,
    /// The function did not answer within its timeout.
    Deadline,
    /// The guest trapped (panic, unreachable, out-of-bounds, ...).
    GuestTrap,
    /// The guest grew past its memory limit.
    MemoryLimit,
    /// The guest set an error instead of a response.
    GuestError,
    /// The guest returned without setting a response.
    NoResponse,
    /// The guest's response is over the size limit.
    ResponseTooLarge,
}

impl ErrorCode {
    /// The code as clients see it.
    pub fn as_str(self) -> &'static str {
        self.entry().0
    }

    /// The status a response with this code carries.
    pub fn status(self) -> StatusCode {
        self.entry().1
    }

    /// The table: code, then status.
    fn entry(self) -> (&'static str, StatusCode) {
        match self {
            Self::BadRequest => ("bad-request", StatusCode::BAD_REQUEST),
            Self::NotFound => ("not-found", StatusCode::NOT_FOUND),
            Self::LoadFailed => ("load-failed", StatusCode::SERVICE_UNAVAILABLE),
            Self::MethodNotAllowed => ("method-not-allowed", StatusCode::METHOD_NOT_ALLOWED),
            Self::BodyTooLarge => ("body-too-large", StatusCode::PAYLOAD_TOO_LARGE),
            Self::Overloaded => ("overloaded", StatusCode::SERVICE_UNAVAILABLE),
            Self::Deadline => ("deadline", StatusCode::GATEWAY_TIMEOUT),
            Self::GuestTrap => ("guest-trap", StatusCode::INTERNAL_SERVER_ERROR),
            Self::MemoryLimit => ("memory-limit", StatusCode::INTERNAL_SERVER_ERROR),
            Self::GuestError => ("guest-error", StatusCode::INTERNAL_SERVER_ERROR),
            Self::NoResponse => ("no-response", StatusCode::INTERNAL_SERVER_ERROR),
            Self::ResponseTooLarge => ("response-too-large", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_kebab_case_and_errors() {
        let all = [
            ErrorCode::BadRequest,
            ErrorCode::NotFound,
            ErrorCode::LoadFailed,
            ErrorCode::MethodNotAllowed,
            ErrorCode::BodyTooLarge,
            ErrorCode::Overloaded,
            ErrorCode::Deadline,
            ErrorCode::GuestTrap,
            ErrorCode::MemoryLimit,
            ErrorCode::GuestError,
            ErrorCode::NoResponse,
            ErrorCode::ResponseTooLarge,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), all.len());
        for code in all {
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-')
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        assert_eq!(
            ErrorCode::Overloaded.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(ErrorCode::Deadline.status(), StatusCode::GATEWAY_TIMEOUT);
    }
}
