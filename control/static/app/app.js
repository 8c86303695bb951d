/* reel's shared page code: the session (a bearer token in localStorage), API calls, and
   showing what depends on being signed in. Every page loads it first. */
(function () {
  "use strict";
  var KEY = "reel.session";

  function session() {
    try {
      var s = JSON.parse(localStorage.getItem(KEY) || "null");
      if (s && s.token && (!s.expires_at || Date.parse(s.expires_at) > Date.now())) return s;
    } catch (e) { /* a damaged entry is no session */ }
    return null;
  }

  /* The same token as a cookie for watch pages only: the server renders a private video's page
     for its owner (it reads, never acts; the API itself ignores cookies). */
  function watchCookie(s) {
    var age = s ? Math.floor(((s.expires_at ? Date.parse(s.expires_at) : Date.now() + 86400e3) - Date.now()) / 1000) : 0;
    document.cookie = "reel_watch=" + (s ? encodeURIComponent(s.token) : "") + "; Path=/watch; SameSite=Lax; Max-Age=" +
      Math.max(age, 0) + (location.protocol === "https:" ? "; Secure" : "");
  }

  function save(s) {
    if (s) localStorage.setItem(KEY, JSON.stringify(s));
    else localStorage.removeItem(KEY);
    watchCookie(s);
    applySession(document);
  }

  /* An API call: resolves with the JSON body (null for 204), rejects with the problem
     ({status, detail, title}). A 401 on a token we hold means the session ended. */
  function api(method, path, body) {
    var s = session();
    var headers = { Accept: "application/json" };
    if (s) headers.Authorization = "Bearer " + s.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, { method: method, headers: headers,
                         body: body === undefined ? undefined : JSON.stringify(body) })
      .then(function (r) {
        if (r.status === 204) return null;
        return r.json().catch(function () { return {}; }).then(function (data) {
          if (r.ok) return data;
          if (r.status === 401 && s) save(null);
          return Promise.reject({ status: r.status, title: data.title || r.statusText,
                                  detail: data.detail || "Something went wrong (" + r.status + ")" });
        });
      }, function () {
        return Promise.reject({ status: 0, detail: "The server cannot be reached: check your connection." });
      });
  }

  function applySession(root) {
    var signedIn = !!session();
    root.querySelectorAll("[data-signed-in]").forEach(function (el) { el.hidden = !signedIn; });
    root.querySelectorAll("[data-signed-out]").forEach(function (el) { el.hidden = signedIn; });
  }

  /* Show an API problem next to the field it names (`field`: ... in its detail), else in `fallback`. */
  function showProblem(form, problem, fallback, prefix) {
    form.querySelectorAll(".field-error").forEach(function (el) { el.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    var detail = problem.detail || String(problem);
    var named = /`([a-z_]+)(?:\.[0-9]+)?`/.exec(detail);
    var field = named ? named[1] : (/\bemail\b/i.test(detail) && form.elements.email ? "email" : null);
    var input = field && form.querySelector("#" + (prefix || "") + field);
    var target = input && document.getElementById(input.id + "-error");
    if (target) {
      target.textContent = detail.replace(/`([a-z_.0-9]+)`: /, "");
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } else if (fallback) {
      fallback.textContent = detail;
    }
  }

  function formatTime(seconds) {
    if (!isFinite(seconds) || seconds < 0) seconds = 0;
    var s = Math.floor(seconds % 60), m = Math.floor(seconds / 60) % 60, h = Math.floor(seconds / 3600);
    var mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
  }

  document.addEventListener("DOMContentLoaded", function () {
    applySession(document);
    var had = /(^|; )reel_watch=./.test(document.cookie);  // visible on watch pages only
    watchCookie(session());
    // A session from before the cookie: a private video's page was refused without it, once.
    if (!had && session() && document.getElementById("not-found") && /^\/watch\//.test(location.pathname) &&
        sessionStorage.getItem("reel.retried") !== location.pathname) {
      sessionStorage.setItem("reel.retried", location.pathname);  // never a reload loop
      location.reload();
    }
    var out = document.getElementById("signout");
    if (out) out.addEventListener("click", function () {
      api("DELETE", "/api/v1/sessions/current").catch(function () { /* ended anyway */ })
        .then(function () { save(null); location.href = "/"; });
    });
  });

  window.reel = { session: session, save: save, api: api, applySession: applySession,
                  showProblem: showProblem, formatTime: formatTime };
})();
