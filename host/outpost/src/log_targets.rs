//! `RUST_LOG` directives written for the one-crate layout keep working.
//! The host's modules were `outpost::MODULE`; they now live in crates of
//! their own (`outpost_edge::invoke`, `outpost_store::committer`, ...), and
//! log under those targets. An operator's `outpost::invoke=trace` would
//! silently match nothing, so such directives are rewritten to the new
//! targets. (`outpost=LEVEL` needs nothing: targets match by prefix.)

/// Where each old `outpost::MODULE` logs now.
const MOVED: &[(&str, &[&str])] = &[
    (
        "server",
        &["outpost_http::listener", "outpost_edge::server"],
    ),
    ("reply", &["outpost_http::reply"]),
    ("request_id", &["outpost_http::request_id"]),
    ("bearer", &["outpost_http::bearer"]),
    ("storage", &["outpost_store"]),
    ("cloud::store", &["outpost_cloud::sled_store"]),
    ("cloud", &["outpost_cloud"]),
    ("kv", &["outpost_caps::kv"]),
    ("stores", &["outpost_caps::kv::catalog"]),
    ("queue", &["outpost_caps::queue"]),
    ("outbound", &["outpost_caps::outbound"]),
    ("bindings", &["outpost_caps::bindings"]),
    ("wire", &["outpost_wire"]),
    ("names", &["outpost_wire::names"]),
];

/// `directives` with every `outpost::MODULE...` target rewritten.
pub fn translate(directives: &str) -> String {
    directives
        .split(',')
        .flat_map(translate_one)
        .collect::<Vec<_>>()
        .join(",")
}

fn translate_one(directive: &str) -> Vec<String> {
    let trimmed = directive.trim();
    let Some(rest) = trimmed.strip_prefix("outpost::") else {
        return vec![directive.to_owned()];
    };
    // The target ends where a span filter or the level begins.
    let end = rest.find(['[', '=']).unwrap_or(rest.len());
    let (path, tail) = rest.split_at(end);
    // `outpost::guest` is an explicit target, not a module: unchanged.
    if path == "guest" || path.starts_with("guest::") {
        return vec![directive.to_owned()];
    }
    let moved = MOVED.iter().find(|(old, _)| {
        path == *old || path.strip_prefix(old).is_some_and(|r| r.starts_with("::"))
    });
    match moved {
        Some((old, targets)) => targets
            .iter()
            .map(|target| format!("{target}{}{tail}", &path[old.len()..]))
            .collect(),
        // Everything else moved into the edge crate under the same path.
        None => vec![format!("outpost_edge::{path}{tail}")],
    }
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn old_module_targets_map_to_their_crates() {
        assert_eq!(
            translate("info,outpost::invoke=trace"),
            "info,outpost_edge::invoke=trace"
        );
        assert_eq!(
            translate("outpost::storage::committer=debug"),
            "outpost_store::committer=debug"
        );
        assert_eq!(
            translate("outpost::server=debug"),
            "outpost_http::listener=debug,outpost_edge::server=debug"
        );
        assert_eq!(
            translate("outpost::cloud::store=debug"),
            "outpost_cloud::sled_store=debug"
        );
        assert_eq!(
            translate("outpost::kv[open]=debug"),
            "outpost_caps::kv[open]=debug"
        );
    }

    #[test]
    fn other_directives_are_left_alone() {
        for same in [
            "info",
            "outpost=debug",
            "outpost::guest=warn",
            "hyper=debug",
            "warn,outpost_edge=trace",
        ] {
            assert_eq!(translate(same), same);
        }
    }
}
