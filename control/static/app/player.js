/* The watch page's player: hls.js, our own controls (quality menu, storyboard thumbnails on the
   seek bar, keyboard shortcuts), processing progress with the preview rendition, and one view
   counted after a few seconds of real playback. Tests read window.hls, hlsErrors, playedLevels. */
(function () {
  "use strict";
  var VIEW_AFTER = 5;  // seconds actually played before a view counts
  var data = JSON.parse(document.getElementById("reel-video").textContent);
  var video = document.getElementById("video");
  var $ = function (id) { return document.getElementById(id); };
  var seek = $("seek"), quality = $("quality"), board = $("storyboard");
  var playing = null;  // the URL hls.js is playing
  var cues = [];
  var played = 0, lastTime = null;
  window.reelVideo = data.video;
  window.reelPlayer = { viewCounted: false, views: null };

  function showStatus(text, percent) {
    $("status").hidden = !text;
    $("status-text").textContent = text || "";
    if (percent !== undefined) { $("processing").hidden = false; $("processing").value = percent; }
  }

  function load(url) {
    if (playing === url) return;
    playing = url;
    if (window.hls) window.hls.destroy();
    if (!(window.Hls && Hls.isSupported())) {
      if (video.canPlayType("application/vnd.apple.mpegurl")) video.src = url;
      else showStatus("This browser cannot play HLS.");
      return;
    }
    // Live, LL-HLS: a player that fell behind its target (a stall, a slow start) plays up to 1.5x
    // until it is back, instead of staying behind for the rest of the stream (hls.js's default
    // is 1: no catch-up; loadtest/bench_live measured ~1.5 s of latency kept that way). VOD and
    // plain HLS are untouched.
    var hls = new Hls({ maxLiveSyncPlaybackRate: 1.5 });
    window.hls = hls;
    hls.on(Hls.Events.ERROR, function (event, err) {
      window.hlsErrors.push({ type: err.type, details: err.details, fatal: !!err.fatal });
      if (!err.fatal) return;
      if (err.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
      else if (err.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
      else { showStatus("Playback failed: " + err.details); hls.destroy(); }
    });
    hls.on(Hls.Events.FRAG_CHANGED, function (event, info) {
      if (window.playedLevels.indexOf(info.frag.level) < 0) window.playedLevels.push(info.frag.level);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, function () { fillQualities(hls); });
    hls.on(Hls.Events.LEVEL_SWITCHED, function () { showAutoLevel(hls); });
    hls.loadSource(url);
    hls.attachMedia(video);
  }

  function fillQualities(hls) {
    var seen = {};
    quality.length = 1;
    hls.levels.forEach(function (level, i) {
      var name = level.height ? level.height + "p" : Math.round(level.bitrate / 1000) + " kb/s";
      if (seen[name]) return;
      seen[name] = true;
      quality.add(new Option(name, String(i)));
    });
  }

  function showAutoLevel(hls) {
    var level = hls.levels[hls.currentLevel];
    quality.options[0].text = hls.autoLevelEnabled && level && level.height ? "Auto (" + level.height + "p)" : "Auto";
  }

  quality.addEventListener("change", function () {
    if (window.hls) window.hls.currentLevel = Number(quality.value);
  });

  /* -- storyboard thumbnails (thumbs/storyboard.vtt, #xywh= sprite cues) -------------------- */
  function parseTime(text) {
    var parts = text.trim().split(":").map(Number);
    return parts.reduce(function (acc, n) { return acc * 60 + n; }, 0);
  }

  function loadStoryboard(v) {
    if (!v.poster_url) return;
    var url = v.poster_url.replace(/poster\.jpg(?=$|\?)/, "storyboard.vtt");  // keeps a query (a token)
    fetch(url).then(function (r) { return r.ok ? r.text().then(function (t) { return [r.url, t]; }) : null; })
      .then(function (got) {
        if (!got) return;
        got[1].split(/\r?\n\r?\n/).forEach(function (block) {
          var m = /([\d:.]+)\s+-->\s+([\d:.]+)\s*\n(.+)#xywh=(\d+),(\d+),(\d+),(\d+)/.exec(block);
          if (m) cues.push({ start: parseTime(m[1]), end: parseTime(m[2]), src: new URL(m[3].trim(), got[0]).href,
                             x: +m[4], y: +m[5], w: +m[6], h: +m[7] });
        });
        window.reelPlayer.storyboardCues = cues.length;
      }).catch(function () { /* no storyboard: the seek bar works without */ });
  }

  function previewAt(fraction, clientX) {
    var t = fraction * (video.duration || data.video.duration || 0);
    var cue = cues.find(function (c) { return t >= c.start && t < c.end; }) || cues[cues.length - 1];
    if (!cue) return;
    var frame = board.firstElementChild;
    frame.style.width = cue.w + "px"; frame.style.height = cue.h + "px";
    frame.style.background = "url(" + JSON.stringify(cue.src) + ") -" + cue.x + "px -" + cue.y + "px";
    board.lastElementChild.textContent = reel.formatTime(t);
    var rect = seek.getBoundingClientRect();
    var x = Math.min(Math.max(clientX - rect.left, cue.w / 2), rect.width - cue.w / 2);
    board.style.left = x + "px";
    board.hidden = false;
  }

  seek.addEventListener("pointermove", function (e) {
    var rect = seek.getBoundingClientRect();
    previewAt(Math.min(Math.max((e.clientX - rect.left) / rect.width, 0), 1), e.clientX);
  });
  seek.addEventListener("pointerleave", function () { board.hidden = true; });
  seek.addEventListener("input", function () {
    var rect = seek.getBoundingClientRect();
    var f = seek.value / 1000;
    previewAt(f, rect.left + f * rect.width);
    if (video.duration) video.currentTime = f * video.duration;
  });
  seek.addEventListener("change", function () { board.hidden = true; });

  /* -- controls and keys -------------------------------------------------------------------- */
  function toggle() { if (video.paused) video.play().catch(function () {}); else video.pause(); }
  function setMuted(m) { video.muted = m; }
  function jump(by) { if (video.duration) video.currentTime = Math.min(Math.max(video.currentTime + by, 0), video.duration); }
  function fullscreen() {
    if (document.fullscreenElement) document.exitFullscreen();
    else $("player").requestFullscreen().catch(function () {});
  }

  $("play").addEventListener("click", toggle);
  video.addEventListener("click", toggle);
  $("mute").addEventListener("click", function () { setMuted(!video.muted); });
  $("fullscreen").addEventListener("click", fullscreen);
  function playingChanged() {
    $("player").classList.toggle("playing", !video.paused);
    $("play").setAttribute("aria-label", video.paused ? "Play" : "Pause");
  }
  video.addEventListener("play", playingChanged);
  video.addEventListener("pause", playingChanged);
  video.addEventListener("volumechange", function () {
    $("player").classList.toggle("muted", video.muted);
    $("mute").setAttribute("aria-label", video.muted ? "Unmute" : "Mute");
  });
  video.addEventListener("timeupdate", function () {
    var d = video.duration || 0;
    if (d && document.activeElement !== seek) seek.value = String(Math.round(1000 * video.currentTime / d));
    seek.setAttribute("aria-valuetext", reel.formatTime(video.currentTime) + " of " + reel.formatTime(d));
    $("time").textContent = reel.formatTime(video.currentTime) + " / " + reel.formatTime(d);
    countPlayback();
  });

  var KEYS = { k: toggle, " ": toggle, j: function () { jump(-10); }, l: function () { jump(10); },
               ArrowLeft: function () { jump(-5); }, ArrowRight: function () { jump(5); },
               m: function () { setMuted(!video.muted); }, f: fullscreen };
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || /^(INPUT|TEXTAREA|SELECT|BUTTON|SUMMARY|A)$/.test(t.tagName)) {
      if (!(t === seek && /^[jklmf0-9]$/.test(e.key))) return;
    }
    if (/^[0-9]$/.test(e.key) && video.duration) { video.currentTime = video.duration * Number(e.key) / 10; e.preventDefault(); return; }
    var action = KEYS[e.key];
    if (action) { action(); e.preventDefault(); }
  });

  /* -- a view: after VIEW_AFTER seconds actually played ------------------------------------- */
  function countPlayback() {
    var now = video.currentTime;
    if (lastTime !== null && !video.paused && !video.seeking && now > lastTime && now - lastTime < 1.5) played += now - lastTime;
    lastTime = now;
    if (played < VIEW_AFTER || window.reelPlayer.viewCounted || data.video.state !== "ready") return;
    window.reelPlayer.viewCounted = true;
    reel.api("POST", data.api_url + "/views").then(function (r) {
      window.reelPlayer.views = r.views;
      $("views").textContent = r.views + (r.views === 1 ? " view" : " views");
    }, function () { window.reelPlayer.viewCounted = false; });
  }

  /* -- processing: progress, the preview rendition, then the real thing --------------------- */
  function describe(v) {
    if (v.state === "failed") return "This video could not be processed: " + (v.reason || "unknown error");
    if (v.state === "queued") return "Waiting to be processed…";
    return "Processing…" + (v.progress && v.progress.total ? " " + Math.floor(100 * v.progress.done / v.progress.total) + "%" : "");
  }

  function update(v) {
    data.video = window.reelVideo = v;
    if ($("state")) $("state").textContent = v.state;
    if (v.state === "ready") {
      showStatus("");
      $("status").classList.remove("corner");
      if (v.poster_url) video.poster = v.poster_url;
      load(v.playback_url);
      loadStoryboard(v);
      return;
    }
    var percent = v.progress && v.progress.total ? Math.floor(100 * v.progress.done / v.progress.total) : 0;
    showStatus(describe(v), v.state === "failed" ? undefined : percent);
    if (v.preview_url) { load(v.preview_url); $("status").classList.add("corner"); }
    if (v.state !== "failed") setTimeout(poll, 2000);
  }

  function poll() {
    reel.api("GET", data.api_url).then(update, function () { setTimeout(poll, 5000); });
  }

  update(data.video);
})();
