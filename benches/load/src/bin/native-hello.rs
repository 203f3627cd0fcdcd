//! The physical baseline for `load throughput`: a plain hyper HTTP/1.1 server
//! that answers every request with exactly what the hello guest answers.
//!
//! Usage: `native-hello [--listen ADDR] [--threads N]`

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Same bytes and content type as `examples/hello` (the SDK's `&str` reply),
/// so the wire cost differs from the wasm servers only by what runs behind it.
const BODY: &[u8] = b"Hello from Outpost!\n";
const CONTENT: &str = "text/plain; charset=utf-8";

const USAGE: &str = "usage: native-hello [--listen ADDR (127.0.0.1:8090)] [--threads N (1)]";

fn main() -> ExitCode {
    let (listen, threads) = match parse_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("native-hello: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("native-hello: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("native-hello: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, usize), String> {
    let mut listen: SocketAddr = "127.0.0.1:8090".parse().expect("valid default");
    let mut threads = 1usize;
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if name != "--listen" && name != "--threads" {
            return Err(format!("unknown flag {name}"));
        }
        let value = match inline.or_else(|| args.next()) {
            Some(value) => value,
            None => return Err(format!("{name} needs a value")),
        };
        match name.as_str() {
            "--listen" => {
                listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?
            }
            "--threads" => {
                threads = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--threads {value}: expected a positive number"))?
            }
            _ => unreachable!("checked above"),
        }
    }
    Ok((listen, threads))
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Running out of descriptors under load must not end the baseline.
            Err(e) => {
                eprintln!("native-hello: accept: {e}");
                continue;
            }
        };
        // Outpost sets it too; without it small replies wait on Nagle.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
    Ok(response)
}
