//! The smallest Outpost function: answers every request with a greeting.

use outpost_sdk::Request;

fn handle(_req: Request) -> &'static str {
    "Hello from Outpost!\n"
}

outpost_sdk::export!(handle);
