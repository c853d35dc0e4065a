// The status page's one script: while something on the page is running (`data-live`), fetch
// the page again every two seconds and swap its content in place, keeping focus and scroll.
// Every page works without it (a <noscript> refresh does the same, more coarsely).
(function () {
  "use strict";
  var busy = false;
  function refresh() {
    if (busy || document.body.dataset.live !== "true" || document.hidden) return;
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.querySelector("main");
        var main = document.querySelector("main");
        if (!next || !main) return;
        var focused = document.activeElement && document.activeElement.id;
        main.innerHTML = next.innerHTML;
        var nav = document.querySelector("header nav"), nextNav = doc.querySelector("header nav");
        if (nav && nextNav) nav.innerHTML = nextNav.innerHTML;
        document.body.dataset.live = doc.body.dataset.live;
        document.title = doc.title;
        if (focused) { var el = document.getElementById(focused); if (el) el.focus(); }
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  setInterval(refresh, 2000);
})();
