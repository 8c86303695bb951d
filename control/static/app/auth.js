/* Sign in and sign up: the API's errors appear next to the field they concern. */
(function () {
  "use strict";
  var form = document.getElementById("auth-form");
  var formError = document.getElementById("form-error");

  function signIn(email, password) {
    return reel.api("POST", "/api/v1/sessions", { email: email, password: password })
      .then(function (s) {
        reel.save({ token: s.token, expires_at: s.expires_at, user: s.user });
        var next = new URLSearchParams(location.search).get("next");
        location.href = next && next.charAt(0) === "/" && next.charAt(1) !== "/" ? next : "/";
      });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    formError.textContent = "";
    var email = form.elements.email.value.trim(), password = form.elements.password.value;
    var done;
    if (form.dataset.mode === "signup") {
      var body = { email: email, password: password };
      var name = form.elements.name.value.trim();
      if (name) body.name = name;
      done = reel.api("POST", "/api/v1/users", body).then(function () { return signIn(email, password); });
    } else {
      done = signIn(email, password);
    }
    done.catch(function (problem) {
      if (problem.status === 401) problem = { detail: "`password`: " + problem.detail };
      reel.showProblem(form, problem, formError);
    });
  });
})();
