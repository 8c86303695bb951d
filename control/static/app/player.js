/* The watch page's player: hls.js, our own controls (quality menu, storyboard thumbnails on the
   seek bar, keyboard shortcuts), processing progress with the preview rendition, one view
   counted after a few seconds of real playback; and live streams: waiting for the publisher, the
   seek bar over the DVR window, a LIVE button back to the live edge, the recording once ended.
   Tests read window.hls, hlsErrors, playedLevels. */
(function () {
  "use strict";
  var VIEW_AFTER = 5;  // seconds actually played before a view counts
  var data = JSON.parse(document.getElementById("reel-video").textContent);
  var video = document.getElementById("video");
  var $ = function (id) { return document.getElementById(id); };
  var seek = $("seek"), quality = $("quality"), board = $("storyboard");
  var playing = null;  // the URL hls.js is playing
  var liveSource = false;  // it is a live stream's (the seek bar spans the DVR window)
  var cues = [];
  var played = 0, lastTime = null;
  window.reelVideo = data.video;
  window.reelPlayer = { viewCounted: false, views: null };

  function showStatus(text, percent) {
    $("status").hidden = !text;
    $("status-text").textContent = text || "";
    $("processing").hidden = percent === undefined;
    if (percent !== undefined) $("processing").value = percent;
  }

  /* The same media whatever playback token a URL carries (a private video's is signed anew on
     every read of the video). */
  function media(url) { return url && url.replace(/\/~[^/]+/, ""); }

  function load(url, live) {
    if (media(playing) === media(url)) return;
    playing = url;
    liveSource = !!live;
    $("player").classList.toggle("is-live", liveSource);
    if (window.hls) window.hls.destroy();
    if (!(window.Hls && Hls.isSupported())) {
      if (video.canPlayType("application/vnd.apple.mpegurl")) video.src = url;
      else showStatus("This browser cannot play HLS.");
      return;
    }
    // Live: a player that fell behind its target (a stall, a slow start) plays up to 1.5x until
    // it is back, instead of staying behind for the rest of the stream (hls.js's default is 1: no
    // catch-up; loadtest/bench_live measured ~1.5 s of latency kept that way). VOD is untouched.
    var hls = new Hls(live ? { lowLatencyMode: true, backBufferLength: 90, maxLiveSyncPlaybackRate: 1.5 }
                           : {});
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
        if (cues.length) window.reelPlayer.storyboardSrc = cues[0].src;
      }).catch(function () { /* no storyboard: the seek bar works without */ });
  }

  /* What the seek bar spans: the whole video, or a live stream's DVR window (what is seekable). */
  function range() {
    if (liveSource && video.seekable.length) {
      return { start: video.seekable.start(0), end: video.seekable.end(video.seekable.length - 1) };
    }
    var d = video.duration;
    return { start: 0, end: isFinite(d) && d ? d : (data.video.duration || 0) };
  }

  function seekTo(t) {
    var r = range();
    if (r.end > r.start) video.currentTime = Math.min(Math.max(t, r.start), r.end);
  }

  /* Seconds behind the live edge; small enough counts as live. */
  function behindLive() {
    var r = range(), target = window.hls && window.hls.targetLatency ? window.hls.targetLatency : 6;
    var behind = Math.max(0, r.end - video.currentTime);
    return behind > target + 4 ? behind : 0;
  }

  function previewAt(fraction, clientX) {
    var r = range();
    var t = r.start + fraction * (r.end - r.start);
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
    var f = seek.value / 1000, r = range();
    previewAt(f, rect.left + f * rect.width);
    seekTo(r.start + f * (r.end - r.start));
  });
  seek.addEventListener("change", function () { board.hidden = true; });

  /* -- controls and keys -------------------------------------------------------------------- */
  function toggle() { if (video.paused) video.play().catch(function () {}); else video.pause(); }
  function setMuted(m) { video.muted = m; }
  function jump(by) { seekTo(video.currentTime + by); }
  function toLive() {
    seekTo(window.hls && window.hls.liveSyncPosition ? window.hls.liveSyncPosition : range().end);
    if (video.paused) video.play().catch(function () {});
  }
  function fullscreen() {
    if (document.fullscreenElement) document.exitFullscreen();
    else $("player").requestFullscreen().catch(function () {});
  }

  $("play").addEventListener("click", toggle);
  video.addEventListener("click", toggle);
  $("mute").addEventListener("click", function () { setMuted(!video.muted); });
  $("fullscreen").addEventListener("click", fullscreen);
  $("golive").addEventListener("click", toLive);
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
    var r = range(), span = r.end - r.start, t = video.currentTime - r.start;
    if (span > 0 && document.activeElement !== seek) seek.value = String(Math.round(1000 * t / span));
    if (liveSource) {
      var behind = behindLive();
      $("golive").classList.toggle("behind", behind > 0);
      $("golive").setAttribute("aria-label", behind > 0 ? "Jump to live (" + reel.formatTime(behind) + " behind)" : "Live");
      $("time").textContent = behind > 0 ? "-" + reel.formatTime(behind) : "";
      seek.setAttribute("aria-valuetext", behind > 0 ? reel.formatTime(behind) + " behind live" : "live");
      window.reelPlayer.behindLive = behind;
    } else {
      seek.setAttribute("aria-valuetext", reel.formatTime(video.currentTime) + " of " + reel.formatTime(span));
      $("time").textContent = reel.formatTime(video.currentTime) + " / " + reel.formatTime(span);
    }
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
    if (/^[0-9]$/.test(e.key)) { var r = range(); seekTo(r.start + (r.end - r.start) * Number(e.key) / 10); e.preventDefault(); return; }
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
    if (v.state === "waiting") return "Waiting for the stream to start…";
    if (v.kind === "live") return "The stream has ended. Its recording will be ready in a moment…";
    return "Processing…" + (v.progress && v.progress.total ? " " + Math.floor(100 * v.progress.done / v.progress.total) + "%" : "");
  }

  function update(v) {
    data.video = window.reelVideo = v;
    if ($("state")) $("state").textContent = v.state;
    $("live-badge").hidden = v.state !== "live";
    if (v.state === "live") $("views").textContent = (v.viewers || 0) + " watching";
    else if (v.kind === "live" && v.state !== "waiting") $("views").textContent = v.views + (v.views === 1 ? " view" : " views");
    if (v.state === "ready") {
      showStatus("");
      $("status").classList.remove("corner");
      if (v.poster_url) video.poster = v.poster_url;
      load(v.playback_url);
      loadStoryboard(v);
      return;
    }
    if (v.state === "live") {
      showStatus("");
      $("status").classList.remove("corner");
      load(v.playback_url, true);
      setTimeout(poll, 5000);  // viewers now, and the end of the stream
      return;
    }
    var percent = v.progress && v.progress.total ? Math.floor(100 * v.progress.done / v.progress.total) : 0;
    showStatus(describe(v), v.state === "failed" || v.kind === "live" ? undefined : percent);
    if (v.preview_url) load(v.preview_url);
    $("status").classList.toggle("corner", !!playing && v.state !== "failed");
    if (v.state !== "failed") setTimeout(poll, 2000);
  }

  function poll() {
    reel.api("GET", data.api_url).then(update, function () { setTimeout(poll, 5000); });
  }

  update(data.video);
})();
