//! A well-formed handler that imports `outpost:test/nope`, which no host
//! provides; Outpost must refuse to load it.

wit_bindgen::generate!({
    inline: "
        package outpost:test;
        interface nope { boom: func() -> u32; }
        world needs-nope { import nope; }
    ",
    world: "needs-nope",
});

fn handle(_req: outpost_sdk::Request) -> String {
    format!("{}\n", outpost::test::nope::boom())
}

outpost_sdk::export!(handle);
