/* Follow buttons (`data-follow` = the creator's user id), their state as the API has it, and the
   follower count beside them. */
(function () {
  "use strict";
  var counter = document.getElementById("followers");

  function show(button, following) {
    button.setAttribute("aria-pressed", following ? "true" : "false");
    button.textContent = following ? "Following" : "Follow";
  }

  function recount(delta) {
    if (!counter) return;
    var n = Number(counter.dataset.count) + delta;
    counter.dataset.count = String(n);
    counter.textContent = n + (n === 1 ? " follower" : " followers");
  }

  document.querySelectorAll("[data-follow]").forEach(function (button) {
    var userId = button.dataset.follow;
    var me = reel.session();
    if (me && me.user && me.user.id === userId) { button.hidden = true; return; }
    show(button, false);
    if (me) reel.api("GET", "/api/v1/users/" + userId + "/follow").then(function (r) {
      show(button, r.following);
      button.dataset.known = "true";
    }, function () { /* unknown: the button still works */ });
    button.addEventListener("click", function () {
      if (!reel.session()) { location.href = "/signin?next=" + encodeURIComponent(location.pathname); return; }
      var now = button.getAttribute("aria-pressed") !== "true";
      reel.api(now ? "PUT" : "DELETE", "/api/v1/users/" + userId + "/follow").then(function () {
        show(button, now);
        recount(now ? 1 : -1);
      }, function (problem) { button.title = problem.detail; });
    });
  });
})();
