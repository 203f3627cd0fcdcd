//! Maps a request path to what serves it: a host endpoint or a function name.

use outpost_wire::names;

/// Paths under this prefix belong to the host; no function can be named
/// `_outpost` (see [`names::is_valid`]), so none can shadow them.
pub const RESERVED_PREFIX: &str = "/_outpost";

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /_outpost/health`.
    Health,
    /// Any other path under `/_outpost`: answered by the host, never a guest.
    Reserved,
    /// `/NAME` or `/NAME/...` with a valid function name.
    Function(&'a str),
    /// Anything else (`/`, a segment that is not a valid name).
    NoFunction,
}

/// Routes on the first path segment only; the guest still sees the full
/// original path and query.
pub fn route(path: &str) -> Route<'_> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let first = rest.split('/').next().unwrap_or("");
    if first == &RESERVED_PREFIX[1..] {
        return if rest == "_outpost/health" {
            Route::Health
        } else {
            Route::Reserved
        };
    }
    if names::is_valid(first) {
        Route::Function(first)
    } else {
        Route::NoFunction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_on_the_first_segment() {
        assert_eq!(route("/hello"), Route::Function("hello"));
        assert_eq!(route("/hello/"), Route::Function("hello"));
        assert_eq!(route("/hello/a/b"), Route::Function("hello"));
        assert_eq!(route("/"), Route::NoFunction);
        assert_eq!(route(""), Route::NoFunction);
        assert_eq!(route("/Hello"), Route::NoFunction);
        assert_eq!(route("/hel%6co"), Route::NoFunction);
        assert_eq!(route("//hello"), Route::NoFunction);
    }

    #[test]
    fn reserved_prefix_is_never_a_function() {
        assert_eq!(route("/_outpost/health"), Route::Health);
        assert_eq!(route("/_outpost"), Route::Reserved);
        assert_eq!(route("/_outpost/"), Route::Reserved);
        assert_eq!(route("/_outpost/health/x"), Route::Reserved);
        assert_eq!(route("/_outpost/functions"), Route::Reserved);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_path_routes_without_panicking_and_never_shadows_the_host(path in ".{0,200}") {
            match route(&path) {
                Route::Function(name) => {
                    prop_assert!(names::is_valid(name));
                    prop_assert!(!path.starts_with(RESERVED_PREFIX));
                    let first = path.trim_start_matches('/').split('/').next().unwrap();
                    prop_assert_eq!(name, first);
                }
                Route::Health => prop_assert_eq!(path.as_str(), "/_outpost/health"),
                Route::Reserved => prop_assert!(path.starts_with(RESERVED_PREFIX)),
                Route::NoFunction => {}
            }
        }

        #[test]
        fn every_valid_name_routes_to_itself(
            name in "[a-z0-9][a-z0-9_-]{0,40}",
            rest in "(/[a-zA-Z0-9._~%-]{0,10}){0,4}",
            query in "(\\?[a-z=&0-9]{0,20})?",
        ) {
            let path = format!("/{name}{rest}{query}");
            let path_only = path.split('?').next().unwrap();
            prop_assert_eq!(route(path_only), Route::Function(&name));
        }
    }
}
