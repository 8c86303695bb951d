// Upload a file with tus-js-client (Node), abort it after `cut` bytes, then resume it from the
// server's offset with a new Upload. Prints {"url": ..., "resumedFrom": ...} as JSON.
// usage: node tus_js_upload.js ENDPOINT TOKEN FILE CUT [CHUNK_SIZE]
"use strict";
const fs = require("fs");
const tus = require("tus-js-client");

const [endpoint, token, file, cutArg, chunkArg] = process.argv.slice(2);
const data = fs.readFileSync(file);
const cut = Number(cutArg);
const options = {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: "from-node.mp4", title: "tus-js-client upload" },
  retryDelays: [0, 100, 300],
  removeFingerprintOnSuccess: true,
};
if (chunkArg) options.chunkSize = Number(chunkArg);

function fail(err) {
  console.error(String(err));
  process.exit(1);
}

function firstPart() {
  return new Promise((resolve) => {
    let aborted = false;
    const upload = new tus.Upload(data, {
      ...options,
      onError: fail,
      onSuccess: () => resolve(upload.url),  // finished before the cut: nothing to resume
      onProgress: (sent) => {
        if (!aborted && sent >= cut && upload.url) {
          aborted = true;
          upload.abort(false).then(() => resolve(upload.url), fail);
        }
      },
    });
    upload.start();
  });
}

async function main() {
  const url = await firstPart();
  let resumedFrom = null;
  await new Promise((resolve) => {
    const upload = new tus.Upload(data, {
      ...options,
      uploadUrl: url,
      onError: fail,
      onSuccess: resolve,
      onProgress: (sent) => {
        if (resumedFrom === null) resumedFrom = sent;
      },
    });
    upload.start();
  });
  process.stdout.write(JSON.stringify({ url, resumedFrom }));
}

main().catch(fail);
