//! A counter per name in the function's own store.
//!
//! `POST /counter/NAME` adds one and answers the new count;
//! `GET /counter/NAME` answers the count. NAME defaults to `hits`.

use outpost_sdk::{Request, http, kv};

fn handle(req: Request) -> Result<String, kv::Error> {
    let name = req
        .uri()
        .path()
        .trim_start_matches("/counter")
        .trim_matches('/');
    let name = if name.is_empty() { "hits" } else { name };
    let store = kv::Store::open("default")?;
    let count = if req.method() == http::Method::POST {
        store.increment(name, 1)?
    } else {
        store
            .get(name)?
            .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(format!("{count}\n"))
}

outpost_sdk::export!(handle);
