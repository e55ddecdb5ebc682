// Quiver UI: refreshes a page in place while it shows something running.
// The server marks such pages with <main data-live="true">; each refresh
// keeps open <details> sections open and the scroll position where it was.
// Asks before submitting a form marked data-confirm.
(function () {
  "use strict";
  var PERIOD_MS = 2000;

  function openDetails(root) {
    var open = {};
    root.querySelectorAll("details[id]").forEach(function (d) {
      open[d.id] = d.open;
    });
    return open;
  }

  function refresh() {
    var main = document.getElementById("main");
    if (!main || main.getAttribute("data-live") !== "true") {
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Quiver-Refresh": "1" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("refresh failed: " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (!next) {
          return;
        }
        var open = openDetails(main);
        var y = window.scrollY;
        main.innerHTML = next.innerHTML;
        main.setAttribute("data-live", next.getAttribute("data-live") || "false");
        main.querySelectorAll("details[id]").forEach(function (d) {
          if (Object.prototype.hasOwnProperty.call(open, d.id)) {
            d.open = open[d.id];
          }
        });
        window.scrollTo(0, y);
      })
      .catch(function () {
        // The scheduler may be restarting; the next tick tries again.
      })
      .then(function () {
        window.setTimeout(refresh, PERIOD_MS);
      });
  }

  window.setTimeout(refresh, PERIOD_MS);

  // Forms that do something drastic (cancel a job) carry data-confirm with
  // the question; listened for here, since the page allows no inline script.
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
})();
