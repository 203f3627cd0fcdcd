// The Outpost function `{{name}}`: a wasi:http handler built with
// componentize-js. Outpost runs each request in a fresh instance, so
// globals start from scratch every time.
addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  // `GET /{{name}}?ada` answers `hello, ada, from {{name}}`.
  const who = url.search.slice(1) || "stranger";
  event.respondWith(
    new Response(`hello, ${who}, from {{name}}\n`, {
      headers: { "content-type": "text/plain" },
    }),
  );
});
