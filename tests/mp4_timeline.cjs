// mp4box.js, an MP4 reader independent of FFmpeg and of our own box code: prints, as JSON, each
// track's timescale, its edit list's media_time (0 without one) and the first presentation time
// (cts) and decode time (dts) of its samples.
// Usage: node mp4_timeline.cjs FILE (an init segment followed by one or more media segments).
const fs = require("fs");
const MP4Box = require("mp4box");

const data = fs.readFileSync(process.argv[2]);
const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
buffer.fileStart = 0;
const file = MP4Box.createFile();
const tracks = {};
file.onError = (e) => { console.error(e); process.exit(1); };
file.onReady = (info) => {
  for (const t of info.tracks) {
    const trak = file.getTrackById(t.id);
    const edits = trak.edts && trak.edts.elst ? trak.edts.elst.entries : [];
    tracks[t.id] = {type: t.type, timescale: t.timescale, edit: edits.length ? edits[0].media_time : 0,
                    first_cts: null, first_dts: null, min_cts: null, samples: 0, end: 0};
    file.setExtractionOptions(t.id, null, {nbSamples: 1000000});
  }
  file.start();
};
file.onSamples = (id, user, samples) => {
  const t = tracks[id];
  for (const s of samples) {
    if (t.first_cts === null) { t.first_cts = s.cts; t.first_dts = s.dts; }
    t.min_cts = t.min_cts === null ? s.cts : Math.min(t.min_cts, s.cts);
    t.end = Math.max(t.end, s.dts + s.duration);
    t.samples += 1;
  }
};
file.appendBuffer(buffer);
file.flush();
process.stdout.write(JSON.stringify(Object.values(tracks)));
