/* Upload: drag and drop or pick a file, resumable tus upload (tus-js-client) with progress, speed
   and time left; a reload or a dropped connection resumes from the server's offset once the same
   file is chosen again; then the video's processing progress until it is ready. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var form = $("upload-form"), input = $("file"), drop = $("drop");
  var CHUNK = window.reelUploadChunkSize || 5 * 1024 * 1024;  // resumption granularity
  var file = null, upload = null, previous = null, samples = [];
  var state = window.reelUpload = { resumedFrom: null, uploadUrl: null, videoId: null, done: false };

  function fingerprintNote() {
    var pending = Object.keys(localStorage).some(function (k) { return k.indexOf("tus::") === 0; });
    if (pending && !file) note("An upload did not finish. Choose the same file again to resume it.");
  }

  function note(text) { $("resume-note").hidden = !text; $("resume-note").textContent = text || ""; }

  function options() {
    var f = form.elements;
    return {
      endpoint: "/api/v1/uploads",
      chunkSize: CHUNK,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      removeFingerprintOnSuccess: true,
      headers: { Authorization: "Bearer " + reel.session().token },
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream",
                  title: f.title.value.trim() || file.name.replace(/\.[^.]+$/, ""),
                  description: f.description.value, tags: f.tags.value.split(",").map(function (t) {
                    return t.trim(); }).filter(Boolean).join(","), privacy: f.privacy.value },
      onProgress: progress,
      onSuccess: finished,
      onError: failed
    };
  }

  function choose(f) {
    file = f;
    $("file-name").textContent = f.name + " (" + (f.size / 1048576).toFixed(1) + " MB)";
    if (!form.elements.title.value) form.elements.title.value = f.name.replace(/\.[^.]+$/, "").slice(0, 200);
    upload = new tus.Upload(file, options());
    upload.findPreviousUploads().then(function (found) {
      previous = found.length ? found[0] : null;
      note(previous ? "This file was partly uploaded before: the upload will resume where it stopped." : "");
    });
  }

  input.addEventListener("change", function () { if (input.files[0]) choose(input.files[0]); });
  ["dragenter", "dragover"].forEach(function (type) {
    drop.addEventListener(type, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    drop.addEventListener(type, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    if (e.dataTransfer.files[0]) choose(e.dataTransfer.files[0]);
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!file) { $("form-error").textContent = "Choose a video file first."; return; }
    $("form-error").textContent = "";
    upload.options = Object.assign(upload.options, options());
    if (previous) upload.resumeFromPreviousUpload(previous);
    form.hidden = true;
    $("progress-box").hidden = false;
    samples = [];
    upload.start();
  });

  $("pause").addEventListener("click", function () {
    var paused = $("pause").textContent === "Resume";
    if (paused) upload.start(); else upload.abort();
    $("pause").textContent = paused ? "Pause" : "Resume";
  });

  function progress(sent, total) {
    if (state.resumedFrom === null) state.resumedFrom = sent;
    state.uploadUrl = upload.url;
    var now = performance.now();
    samples.push([now, sent]);
    while (samples.length > 2 && now - samples[0][0] > 5000) samples.shift();
    var dt = (now - samples[0][0]) / 1000, speed = dt > 0 ? (sent - samples[0][1]) / dt : 0;
    $("upload-progress").value = Math.floor(100 * sent / total);
    $("upload-stats").textContent = Math.floor(100 * sent / total) + "% · " +
      (sent / 1048576).toFixed(1) + " of " + (total / 1048576).toFixed(1) + " MB" +
      (speed > 0 ? " · " + (speed / 1048576).toFixed(2) + " MB/s · " +
                   reel.formatTime((total - sent) / speed) + " left" : "");
  }

  function failed(err) {
    var problem = { detail: String(err.message || err) };
    var body = err.originalResponse && err.originalResponse.getBody();
    try { if (body) problem = JSON.parse(body); } catch (x) { /* not JSON */ }
    form.hidden = false;
    $("progress-box").hidden = true;
    reel.showProblem(form, problem, $("form-error"));
  }

  function finished() {
    $("upload-progress").value = 100;
    $("upload-stats").textContent = "Uploaded.";
    $("pause").hidden = true;
    var id = upload.url.split("/").pop();
    reel.api("GET", "/api/v1/uploads/" + id).then(function (u) {
      state.videoId = u.video_id;
      $("processing-box").hidden = false;
      $("watch-link").href = "/watch/" + u.video_id;
      watchProcessing(u.video_id);
    }, failed);
  }

  function watchProcessing(videoId) {
    reel.api("GET", "/api/v1/videos/" + videoId).then(function (v) {
      var pct = v.progress && v.progress.total ? Math.floor(100 * v.progress.done / v.progress.total) : 0;
      $("processing-progress").value = pct;
      state.state = v.state;
      if (v.state === "ready") {
        state.done = true;
        $("processing-stats").textContent = "Ready to watch.";
        return;
      }
      $("processing-stats").textContent = v.state === "failed" ? "Processing failed: " + v.reason :
        v.state === "queued" ? "Waiting for a worker…" : "Processing… " + pct + "%";
      if (v.state !== "failed") setTimeout(function () { watchProcessing(videoId); }, 1000);
    }, function () { setTimeout(function () { watchProcessing(videoId); }, 3000); });
  }

  if (reel.session()) fingerprintNote();
})();
