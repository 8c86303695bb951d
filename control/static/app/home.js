/* Home, signed in: the feed of the creators you follow. */
(function () {
  "use strict";
  if (!reel.session()) return;
  var list = document.getElementById("feed-list");

  function card(v) {
    var li = document.createElement("li");
    li.className = "card";
    var thumb = document.createElement("a");
    thumb.className = "thumb";
    thumb.href = "/watch/" + v.id;
    if (v.poster_url) {
      var img = document.createElement("img");
      img.src = v.poster_url; img.alt = ""; img.width = 320; img.height = 180;
      thumb.appendChild(img);
    }
    if (v.state === "live") {
      var badge = document.createElement("span");
      badge.className = "badge-live"; badge.textContent = "LIVE";
      thumb.appendChild(badge);
    } else if (v.duration) {
      var dur = document.createElement("span");
      dur.className = "dur"; dur.textContent = reel.formatTime(v.duration);
      thumb.appendChild(dur);
    }
    var info = document.createElement("div");
    info.className = "info";
    var title = document.createElement("a");
    title.className = "title"; title.href = "/watch/" + v.id; title.textContent = v.title || v.id;
    var meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = v.state === "live" ? (v.viewers || 0) + " watching" : v.views + (v.views === 1 ? " view" : " views");
    info.append(title, meta);
    li.append(thumb, info);
    return li;
  }

  reel.api("GET", "/api/v1/me/feed?limit=12").then(function (page) {
    page.items.forEach(function (v) { list.appendChild(card(v)); });
    document.getElementById("feed-empty").hidden = page.items.length > 0;
    window.reelFeed = page.items.map(function (v) { return v.id; });
  }, function () { document.getElementById("feed").hidden = true; });
})();
