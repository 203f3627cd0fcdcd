// A wasi:http handler in JavaScript, built with componentize-js by
// `cargo xtask`. It exists to prove that components from other toolchains
// load and serve.
addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  event.respondWith(
    new Response(`javascript saw ${url.pathname}${url.search}\n`, {
      headers: { "content-type": "text/plain" },
    }),
  );
});
