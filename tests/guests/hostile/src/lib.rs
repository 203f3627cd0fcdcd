//! Misbehaves on purpose, chosen by the path after the function's name
//! (shown here deployed as `hostile`), so the host's limits can be tested
//! one by one:
//!
//! - `/hostile/loop`: spins forever;
//! - `/hostile/memory`: allocates until refused;
//! - `/hostile/recurse`: recurses until Rust's stack in linear memory is gone;
//! - `/hostile/recurse-native`: recurses until the wasm call stack is gone;
//! - `/hostile/sleep?ms=N`: blocks in a host call for N ms, then answers;
//! - `/hostile/stream-forever`: sends a body that never ends;
//! - `/hostile/big?mib=N`: sends an N MiB body;
//! - `/hostile/flood?mib=N`: writes N MiB to stdout, then answers;
//! - `/hostile/fetch?url=U&times=N`: makes N outbound GETs, answers what
//!   each returned (`200 <body>` or the error code);
//! - `/hostile/read-body`: reads the whole request body, answers its size;
//! - `/hostile/say?out=A&err=B`: writes line A to stdout and B to stderr;
//! - `/hostile/pieces`: writes one stderr line in five pieces, each through
//!   a fresh handle, then an empty line and `after pieces`;
//! - anything else: `ok`.

use std::hint::black_box;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasip2::io::streams::{OutputStream, StreamError};

struct Hostile;

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let n = bytes.len().min(4096);
        stream.blocking_write_and_flush(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    Ok(())
}

fn answer(out: ResponseOutparam, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = outgoing.write().unwrap();
        let _ = write_all(&stream, body);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Streams `chunks` chunks of 64 KiB (forever if `None`).
fn stream(out: ResponseOutparam, chunks: Option<u64>) {
    let response = OutgoingResponse::new(Fields::new());
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let chunk = vec![b'x'; 64 * 1024];
    {
        let stream = outgoing.write().unwrap();
        let mut sent = 0;
        while chunks.is_none_or(|n| sent < n) {
            if write_all(&stream, &chunk).is_err() {
                return;
            }
            sent += 1;
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Never returns: recurses with big frames until Rust's stack (in linear
/// memory) runs out, on purpose.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth as u8; 512]);
    recurse(depth + 1).wrapping_add(u64::from(frame[(depth % 512) as usize]))
}

/// Never returns: recurses with frames that live only on the wasm call
/// stack until the engine's stack limit stops it, on purpose.
#[allow(unconditional_recursion)]
fn recurse_native(depth: u64) -> u64 {
    black_box(recurse_native(black_box(depth + 1))).wrapping_add(1)
}

fn fetch(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "bad url".into();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return format!("error {code:?}"),
    };
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return format!("error {code:?}"),
        other => return format!("error {other:?}"),
    };
    let status = response.status();
    let body = response.consume().unwrap();
    let mut bytes = Vec::new();
    {
        let stream = body.stream().unwrap();
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            bytes.extend_from_slice(&chunk);
        }
    }
    format!("{status} {}", String::from_utf8_lossy(&bytes).trim_end())
}

impl wasip2::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        // Whatever the function is deployed as, act on what follows its name.
        let action = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, rest)| rest);
        let number = |name: &str, default: u64| {
            param(query, name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        match action {
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1024 * 1024]));
                }
            }
            "recurse" => {
                let n = recurse(0);
                answer(out, n.to_string().as_bytes());
            }
            "recurse-native" => {
                let n = recurse_native(0);
                answer(out, n.to_string().as_bytes());
            }
            "sleep" => {
                let ms = number("ms", 1000);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                answer(out, b"woke");
            }
            "stream-forever" => stream(out, None),
            "big" => stream(out, Some(number("mib", 1) * 16)),
            "flood" => {
                let line = format!("{}\n", "flood".repeat(200));
                let stdout = wasip2::cli::stdout::get_stdout();
                let mut written = 0;
                while written < number("mib", 1) * 1024 * 1024 {
                    let _ = write_all(&stdout, line.as_bytes());
                    written += line.len() as u64;
                }
                answer(out, b"flooded");
            }
            "say" => {
                let line = |name| format!("{}\n", percent_decode(param(query, name).unwrap_or("")));
                let _ = write_all(&wasip2::cli::stdout::get_stdout(), line("out").as_bytes());
                let _ = write_all(&wasip2::cli::stderr::get_stderr(), line("err").as_bytes());
                answer(out, b"said");
            }
            "pieces" => {
                // One line written through a fresh stderr handle per piece
                // (as `eprint!` does), then an empty line, then one more.
                for piece in [
                    "start a print ",
                    "1",
                    "2",
                    "3",
                    "4\n",
                    "\n",
                    "after pieces\n",
                ] {
                    let _ = write_all(&wasip2::cli::stderr::get_stderr(), piece.as_bytes());
                }
                answer(out, b"pieced");
            }
            "fetch" => {
                let url = percent_decode(param(query, "url").unwrap_or(""));
                let results: Vec<String> = (0..number("times", 1)).map(|_| fetch(&url)).collect();
                answer(out, results.join("\n").as_bytes());
            }
            "read-body" => {
                let body = request.consume().unwrap();
                let mut size = 0usize;
                let mut failed = false;
                {
                    let stream = body.stream().unwrap();
                    loop {
                        match stream.blocking_read(64 * 1024) {
                            Ok(chunk) => size += chunk.len(),
                            Err(StreamError::Closed) => break,
                            Err(_) => {
                                failed = true;
                                break;
                            }
                        }
                    }
                }
                answer(out, format!("{size} {failed}").as_bytes());
            }
            _ => answer(out, b"ok"),
        }
    }
}

wasip2::http::proxy::export!(Hostile);
