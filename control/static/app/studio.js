/* Studio: your videos with their state, views and privacy; edit in a dialog; delete after
   confirming. */
(function () {
  "use strict";
  var me = reel.session();
  if (!me) return;
  var $ = function (id) { return document.getElementById(id); };
  var rows = $("studio-rows"), editing = null, deleting = null;
  var FIELDS = ["title", "description", "tags", "privacy"];

  function cell(row, content, label) {
    var td = document.createElement("td");
    if (label) td.dataset.label = label;
    if (typeof content === "string") td.textContent = content; else td.append(content);
    row.appendChild(td);
    return td;
  }

  function button(text, label, onclick) {
    var b = document.createElement("button");
    b.type = "button"; b.textContent = text; b.setAttribute("aria-label", label);
    b.addEventListener("click", onclick);
    return b;
  }

  function row(v) {
    var tr = document.createElement("tr");
    tr.dataset.video = v.id;
    var link = document.createElement("a");
    link.href = "/watch/" + v.id; link.textContent = v.title || v.id;
    cell(tr, link);
    var progress = v.progress && v.progress.total && v.state === "processing" ?
      " " + Math.floor(100 * v.progress.done / v.progress.total) + "%" : "";
    cell(tr, v.state + progress, "State").className = "state";
    cell(tr, String(v.views), "Views");
    cell(tr, v.privacy, "Privacy").className = "privacy";
    var actions = cell(tr, button("Edit", "Edit " + (v.title || v.id), function () { edit(v); }));
    if (v.kind === "live" && (v.state === "waiting" || v.state === "live")) {
      var manage = document.createElement("a");
      manage.className = "button"; manage.href = "/live?v=" + v.id; manage.textContent = "Stream";
      manage.setAttribute("aria-label", "Stream settings of " + (v.title || v.id));
      actions.append(" ", manage);
    }
    actions.append(" ", button("Delete", "Delete " + (v.title || v.id), function () { remove(v); }));
    return tr;
  }

  function load() {
    reel.api("GET", "/api/v1/users/" + me.user.id + "/videos?limit=100").then(function (page) {
      rows.textContent = "";
      page.items.forEach(function (v) { rows.appendChild(row(v)); });
      $("studio-empty").hidden = page.items.length > 0;
      $("studio").hidden = page.items.length === 0;
      var busy = page.items.some(function (v) { return v.state === "queued" || v.state === "processing"; });
      if (busy) setTimeout(load, 3000);
    });
  }

  function edit(v) {
    editing = v;
    var f = $("edit-form").elements;
    FIELDS.forEach(function (name) {
      f[name].value = name === "tags" ? v.tags.join(", ") : v[name];
    });
    $("edit-form-error").textContent = "";
    $("edit-dialog").showModal();
  }

  $("edit-cancel").addEventListener("click", function () { $("edit-dialog").close(); });
  $("edit-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var f = e.target.elements;
    var body = { title: f.title.value.trim(), description: f.description.value, privacy: f.privacy.value,
                 tags: f.tags.value.split(",").map(function (t) { return t.trim(); }).filter(Boolean) };
    reel.api("PATCH", "/api/v1/videos/" + editing.id, body).then(function () {
      $("edit-dialog").close();
      load();
    }, function (p) { reel.showProblem(e.target, p, $("edit-form-error"), "edit-"); });
  });

  function remove(v) {
    deleting = v;
    $("delete-what").textContent = "“" + (v.title || v.id) + "”";
    $("delete-dialog").returnValue = "";
    $("delete-dialog").showModal();
  }

  $("delete-dialog").addEventListener("close", function () {
    if ($("delete-dialog").returnValue !== "delete" || !deleting) return;
    reel.api("DELETE", "/api/v1/videos/" + deleting.id).then(load);
    deleting = null;
  });

  load();
})();
