// rmq console: the only script. It keeps the parts of a page marked data-live="URL" up to date
// by fetching that URL (an HTML fragment rendered by the server) every data-refresh ms, and
// lets a header checkbox select every message of the list. The pages work without it.
(function () {
  "use strict";

  var every = Number(document.body.getAttribute("data-refresh")) || 5000;

  function refresh() {
    var parts = document.querySelectorAll("[data-live]");
    var pending = [];
    if (!document.hidden) {
      parts.forEach(function (el) {
        pending.push(
          fetch(el.getAttribute("data-live"), { credentials: "same-origin" })
            .then(function (r) {
              if (!r.ok) throw new Error(r.status);
              return r.text();
            })
            .then(function (html) {
              el.innerHTML = html;
              el.classList.remove("stale");
            })
            .catch(function () {
              el.classList.add("stale");
            })
        );
      });
    }
    Promise.all(pending).then(function () {
      setTimeout(refresh, every);
    });
  }
  if (document.querySelector("[data-live]")) setTimeout(refresh, every);

  document.addEventListener("change", function (e) {
    var box = e.target;
    var name = box.getAttribute && box.getAttribute("data-select-all");
    if (!name) return;
    box.form.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (c) {
      c.checked = box.checked;
    });
  });
})();
