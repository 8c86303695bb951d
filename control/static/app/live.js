/* Go live: create a stream, its ingest URLs and stream key (shown once, as the API gives it;
   masked until shown; copy buttons), rotate the key, preview the stream as viewers get it
   (hls.js, once it is live), end it after confirming, and follow it to its recording. Tests read
   window.reelLive. */
(function () {
  "use strict";
  var me = reel.session();
  if (!me) return;
  var $ = function (id) { return document.getElementById(id); };
  var ON_AIR = ["waiting", "live"];
  var STATES = { waiting: "Waiting for your encoder", live: "Live", processing: "Ended: making the recording",
                 ready: "Ended: the recording is ready", failed: "Ended" };
  var current = null, hls = null, timer = null;
  var state = window.reelLive = { videoId: null, state: null, previewing: false, errors: [] };

  /* -- the stream's key and URLs ------------------------------------------------------------ */
  function showKey(key, ingest) {
    var rtmp = ingest.rtmp || "";
    $("rtmp-server").value = key ? rtmp.slice(0, rtmp.length - key.length - 1) : rtmp.replace(/\/STREAM_KEY$/, "");
    $("stream-key").value = key || "";
    $("rtmp-url").value = key ? rtmp : "";
    $("srt-url").value = key ? (ingest.srt || "") : "";
    ["stream-key", "rtmp-url", "srt-url"].forEach(function (id) {
      $(id).placeholder = key ? "" : "Rotate the key to see it";
      document.querySelector("[data-copy='" + id + "']").disabled = !key;
    });
    $("key-note").textContent = key ?
      "Copy the key now: it is shown this once. If it leaks, rotate it." :
      "The key was shown when the stream was created. Rotate it to get a new one.";
  }

  $("reveal").addEventListener("click", function () {
    var show = $("reveal").getAttribute("aria-pressed") !== "true";
    $("reveal").setAttribute("aria-pressed", show ? "true" : "false");
    $("reveal").textContent = show ? "Hide" : "Show";
    ["stream-key", "rtmp-url", "srt-url"].forEach(function (id) { $(id).type = show ? "text" : "password"; });
  });

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var value = $(button.dataset.copy).value;
      var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 2000); };
      if (navigator.clipboard) navigator.clipboard.writeText(value).then(done, done); else done();
    });
  });

  /* -- the preview: what viewers get, through the edges ------------------------------------- */
  function preview(video) {
    var live = video.state === "live";
    $("preview-status").hidden = live && state.previewing;
    $("preview-text").textContent = live ? "Connecting to your stream…" : video.state === "waiting" ?
      "Waiting for your encoder to connect…" : video.state === "ready" ?
      "The stream has ended. Its recording is ready on the watch page." :
      video.state === "processing" ? "The stream has ended. Its recording is being made…" : "The stream has ended.";
    if (!live) { stopPreview(); return; }
    if (hls || !(window.Hls && Hls.isSupported())) return;
    hls = new Hls({ lowLatencyMode: true });
    hls.on(Hls.Events.ERROR, function (event, err) {
      state.errors.push({ details: err.details, fatal: !!err.fatal });
      if (err.fatal && err.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
      else if (err.fatal && err.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    $("preview").addEventListener("playing", function () {
      state.previewing = true;
      $("preview").controls = true;
      $("preview-status").hidden = true;
    }, { once: true });
    hls.loadSource(video.playback_url);
    hls.attachMedia($("preview"));
  }

  function stopPreview() {
    if (hls) { hls.destroy(); hls = null; }
    $("preview").controls = false;
    state.previewing = false;
    $("preview-status").hidden = false;
  }

  /* -- state ---------------------------------------------------------------------------------- */
  function show(video) {
    state.state = video.state;
    $("stream-title").textContent = video.title;
    $("stream-badge").hidden = video.state !== "live";
    $("stream-state").textContent = STATES[video.state] || video.state;
    $("stream-viewers").textContent = video.state === "live" ? " · " + (video.viewers || 0) + " watching" : "";
    $("stream-watch").href = "/watch/" + video.id;
    var onAir = ON_AIR.indexOf(video.state) >= 0;
    $("rotate").disabled = $("end").disabled = !onAir;
    $("ingest").hidden = !onAir;  // an ended stream takes no publisher: its key is of no use
    $("stream-watch").textContent = video.state === "ready" ? "Watch the recording" : "Watch page";
    preview(video);
    clearTimeout(timer);
    if (onAir || video.state === "processing") timer = setTimeout(poll, video.state === "live" ? 4000 : 2000);
  }

  function poll() {
    reel.api("GET", "/api/v1/live/" + current).then(function (s) { show(s.video); },
      function () { timer = setTimeout(poll, 5000); });
  }

  function open(videoId, key, ingest) {
    current = state.videoId = videoId;
    $("live-form").hidden = true;
    $("streams").hidden = true;
    $("stream").hidden = false;
    if (key) showKey(key, ingest);
    return reel.api("GET", "/api/v1/live/" + videoId).then(function (s) {
      if (!key) showKey(null, s.ingest);
      show(s.video);
    }, function (p) { $("stream-error").textContent = p.detail; });
  }

  /* -- create, rotate, end ------------------------------------------------------------------ */
  $("live-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var f = e.target.elements;
    var body = { title: f.title.value.trim() || "Live stream", description: f.description.value,
                 privacy: f.privacy.value, dvr_seconds: Number(f.dvr_seconds.value),
                 tags: f.tags.value.split(",").map(function (t) { return t.trim(); }).filter(Boolean) };
    reel.api("POST", "/api/v1/live", body).then(function (created) {
      history.replaceState(null, "", "/live?v=" + created.video.id);  // a reload manages it (no key)
      open(created.video.id, created.stream_key, created.ingest);
    }, function (p) { reel.showProblem(e.target, p, $("form-error")); });
  });

  $("rotate").addEventListener("click", function () { $("rotate-dialog").returnValue = ""; $("rotate-dialog").showModal(); });
  $("rotate-dialog").addEventListener("close", function () {
    if ($("rotate-dialog").returnValue !== "rotate") return;
    reel.api("POST", "/api/v1/live/" + current + "/key").then(function (r) {
      showKey(r.stream_key, r.ingest);
      $("key-note").textContent = "A new key: the old one no longer works. Give this one to your encoder.";
      state.rotated = true;
    }, function (p) { $("stream-error").textContent = p.detail; });
  });

  $("end").addEventListener("click", function () { $("end-dialog").returnValue = ""; $("end-dialog").showModal(); });
  $("end-dialog").addEventListener("close", function () {
    if ($("end-dialog").returnValue !== "end") return;
    reel.api("POST", "/api/v1/live/" + current + "/end").then(show, function (p) {
      $("stream-error").textContent = p.detail;
    });
  });

  /* -- the page: one stream (?v=), or the form and your streams on air ----------------------- */
  var wanted = new URLSearchParams(location.search).get("v");
  if (wanted) { open(wanted); return; }
  reel.api("GET", "/api/v1/users/" + me.user.id + "/videos?limit=100").then(function (page) {
    var list = $("stream-list");
    page.items.filter(function (v) { return v.kind === "live" && ON_AIR.indexOf(v.state) >= 0; }).forEach(function (v) {
      var li = document.createElement("li"), a = document.createElement("a");
      a.href = "/live?v=" + v.id; a.textContent = v.title;
      li.append(a, " · " + (STATES[v.state] || v.state));
      list.appendChild(li);
    });
    $("streams-empty").hidden = list.children.length > 0;
  });
})();
