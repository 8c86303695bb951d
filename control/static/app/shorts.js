/* The short-video feed: one vertical video at a time; swipe, scroll, arrow keys or the buttons
   move on. The current video and the next three each have an hls.js player: the next ones load
   their first segment and stop (a small buffer goal), so a swipe starts playing at once. */
(function () {
  "use strict";
  var feed = document.getElementById("shorts");
  if (!feed) return;
  var items = Array.prototype.slice.call(feed.querySelectorAll(".short"));
  var AHEAD = 3, WARM_BUFFER = 4, PLAY_BUFFER = 30;
  var players = {};
  var muted = true;
  var state = window.reelShorts = { index: -1, started: [], warmed: [], errors: [] };

  function player(i) {
    if (players[i] || !items[i] || !(window.Hls && Hls.isSupported())) return players[i];
    var video = items[i].querySelector("video");
    var hls = new Hls({ maxBufferLength: WARM_BUFFER, maxMaxBufferLength: WARM_BUFFER, startLevel: -1 });
    hls.on(Hls.Events.FRAG_BUFFERED, function () {
      if (state.warmed.indexOf(i) < 0) state.warmed.push(i);
    });
    hls.on(Hls.Events.ERROR, function (event, err) {
      state.errors.push({ index: i, details: err.details, fatal: !!err.fatal });
      if (err.fatal && err.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
      else if (err.fatal && err.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    video.addEventListener("playing", function () {
      if (state.started.indexOf(i) < 0) state.started.push(i);
    });
    hls.loadSource(items[i].dataset.src);
    hls.attachMedia(video);
    players[i] = hls;
    return hls;
  }

  function activate(i) {
    if (i === state.index || !items[i]) return;
    state.index = i;
    Object.keys(players).forEach(function (k) {
      var n = Number(k);
      if (n < i - 1 || n > i + AHEAD) { players[k].destroy(); delete players[k]; }
    });
    items.forEach(function (item, n) {
      var video = item.querySelector("video");
      if (n !== i) video.pause();
      item.setAttribute("aria-current", n === i ? "true" : "false");
    });
    var hls = player(i);
    if (hls) { hls.config.maxBufferLength = PLAY_BUFFER; hls.config.maxMaxBufferLength = PLAY_BUFFER; }
    var video = items[i].querySelector("video");
    video.muted = muted;
    video.play().catch(function () { /* paused by a later swipe */ });
    for (var n = i + 1; n <= i + AHEAD; n++) player(n);
  }

  function go(by) {
    var next = Math.min(Math.max(state.index + by, 0), items.length - 1);
    items[next].scrollIntoView({ behavior: "smooth", block: "start" });
    activate(next);
  }

  var seen = new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) activate(items.indexOf(entry.target));
    });
  }, { root: feed, threshold: 0.6 });
  items.forEach(function (item) { seen.observe(item); });

  document.addEventListener("keydown", function (e) {
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName)) return;
    if (e.key === "ArrowDown" || e.key === "PageDown" || e.key === "j") { go(1); e.preventDefault(); }
    else if (e.key === "ArrowUp" || e.key === "PageUp" || e.key === "k") { go(-1); e.preventDefault(); }
    else if (e.key === "m") document.getElementById("short-mute").click();
  });
  document.getElementById("short-next").addEventListener("click", function () { go(1); });
  document.getElementById("short-prev").addEventListener("click", function () { go(-1); });
  document.getElementById("short-mute").addEventListener("click", function (e) {
    muted = !muted;
    items[state.index].querySelector("video").muted = muted;
    e.currentTarget.setAttribute("aria-label", muted ? "Unmute" : "Mute");
    e.currentTarget.classList.toggle("muted", muted);
  });
  items.forEach(function (item, n) {
    item.querySelector("video").addEventListener("click", function (e) {
      if (n !== state.index) return;
      if (e.target.paused) e.target.play(); else e.target.pause();
    });
  });
  activate(0);
})();
