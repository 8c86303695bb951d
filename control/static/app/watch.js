/* The watch page's social parts: likes, reviews, comments with replies, the share link. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("reel-video").textContent);
  var base = data.api_url;
  var $ = function (id) { return document.getElementById(id); };
  var actionError = $("action-error");

  function needSignIn() {
    if (reel.session()) return false;
    location.href = "/signin?next=" + encodeURIComponent(location.pathname);
    return true;
  }

  /* -- like / dislike ----------------------------------------------------------------------- */
  function showRating(r) {
    $("likes").textContent = r.likes;
    $("dislikes").textContent = r.dislikes;
    $("like").setAttribute("aria-pressed", r.my_rating === "like" ? "true" : "false");
    $("dislike").setAttribute("aria-pressed", r.my_rating === "dislike" ? "true" : "false");
  }

  function rate(kind) {
    if (needSignIn()) return;
    var mine = $(kind).getAttribute("aria-pressed") === "true";
    reel.api("PUT", base + "/rating", { rating: mine ? "none" : kind }).then(showRating, function (p) {
      actionError.textContent = p.detail;
    });
  }

  $("like").addEventListener("click", function () { rate("like"); });
  $("dislike").addEventListener("click", function () { rate("dislike"); });
  if (reel.session()) reel.api("GET", base + "/rating").then(showRating, function () {});

  /* -- share -------------------------------------------------------------------------------- */
  var share = $("share-link");
  share.value = location.origin + "/v/" + data.video.id;
  $("share").addEventListener("click", function () {
    share.select();
    var done = function () { $("share").textContent = "Copied"; };
    if (navigator.clipboard) navigator.clipboard.writeText(share.value).then(done, done);
    else done();
  });

  /* -- reviews ------------------------------------------------------------------------------ */
  $("review-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var form = e.target;
    var body = { rating: Number(form.elements.rating.value), text: form.elements.text.value };
    reel.api("PUT", base + "/review", body).then(function () {
      return reel.api("GET", base + "/reviews?limit=20");
    }).then(function (page) {
      var list = $("review-list");
      list.textContent = "";
      page.items.forEach(function (r) {
        var li = document.createElement("li");
        var who = document.createElement("strong"); who.textContent = r.user.name;
        var stars = document.createElement("span"); stars.className = "stars";
        stars.setAttribute("aria-label", r.rating + " out of 5");
        stars.textContent = "★".repeat(r.rating) + "☆".repeat(5 - r.rating);
        var text = document.createElement("p"); text.textContent = r.text;
        li.append(who, " ", stars, text);
        list.appendChild(li);
      });
      $("review-summary").textContent = page.average.toFixed(1) + " / 5 from " + page.count +
        (page.count === 1 ? " review" : " reviews");
      $("review-error").textContent = "";
    }, function (p) { reel.showProblem(form, p, $("review-error"), "review-"); });
  });

  /* -- comments and replies ----------------------------------------------------------------- */
  function commentItem(c) {
    var li = $("comment-template").content.firstElementChild.cloneNode(true);
    li.dataset.comment = c.id;
    li.querySelector(".who").textContent = c.user.name;
    li.querySelector(".text").textContent = c.text;
    if (c.parent_id) { li.querySelector(".comment-actions").remove(); li.querySelector(".replies").remove(); }
    reel.applySession(li);
    wire(li);
    return li;
  }

  function loadReplies(li) {
    var list = li.querySelector(".replies");
    return reel.api("GET", "/api/v1/comments/" + li.dataset.comment + "/replies?limit=50").then(function (page) {
      list.textContent = "";
      page.items.slice().reverse().forEach(function (c) { list.appendChild(commentItem(c)); });
      var toggle = li.querySelector(".show-replies");
      toggle.setAttribute("aria-expanded", "true");
      toggle.querySelector(".n").textContent = page.items.length + (page.items.length === 1 ? " reply" : " replies");
      toggle.hidden = page.items.length === 0;
    });
  }

  function replyForm(li) {
    var existing = li.querySelector("form");
    if (existing) { existing.querySelector("textarea").focus(); return; }
    var form = document.createElement("form");
    form.className = "stack reply-form";
    var id = "reply-" + li.dataset.comment;
    form.innerHTML = '<label></label><textarea rows="2" required maxlength="5000"></textarea>' +
                     '<p class="field-error" role="alert"></p><button type="submit">Reply</button>';
    form.querySelector("label").htmlFor = id;
    form.querySelector("label").textContent = "Reply to " + li.querySelector(".who").textContent;
    form.querySelector("textarea").id = id;
    li.insertBefore(form, li.querySelector(".replies"));
    form.querySelector("textarea").focus();
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var text = form.querySelector("textarea").value;
      reel.api("POST", base + "/comments", { text: text, parent_id: li.dataset.comment })
        .then(function () { form.remove(); return loadReplies(li); },
              function (p) { form.querySelector(".field-error").textContent = p.detail; });
    });
  }

  function wire(li) {
    var show = li.querySelector(".show-replies"), reply = li.querySelector(".reply");
    if (show) show.addEventListener("click", function () {
      if (show.getAttribute("aria-expanded") === "true") {
        li.querySelector(".replies").textContent = "";
        show.setAttribute("aria-expanded", "false");
      } else loadReplies(li);
    });
    if (reply) reply.addEventListener("click", function () { replyForm(li); });
  }

  document.querySelectorAll("#comment-list > .comment").forEach(wire);

  $("comment-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var form = e.target;
    reel.api("POST", base + "/comments", { text: form.elements.text.value }).then(function (c) {
      $("comment-list").prepend(commentItem(c));
      if ($("no-comments")) $("no-comments").remove();
      form.reset();
      $("comment-error").textContent = "";
    }, function (p) { $("comment-error").textContent = p.detail; });
  });
})();
