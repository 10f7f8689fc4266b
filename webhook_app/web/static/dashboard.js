// Refreshes the page's live region (#live) without a reload: every 2 s while a job on it is
// running, every 15 s on the first page of the list otherwise (new jobs appear), and not at all
// while the tab is hidden. The server renders the region; this script only swaps it in. The
// list's region carries an ETag: the browser asks with If-None-Match, an unchanged list is a 304
// that costs the server two version checks, and this script leaves the page as it is.
(function () {
  "use strict";
  var RUNNING_EVERY = 2000;
  var IDLE_EVERY = 15000;
  var timer = null;
  var shownTag = null;

  function region() {
    return document.getElementById("live");
  }

  function delay() {
    var live = region();
    if (!live) return null;
    if (live.dataset.running === "true") return RUNNING_EVERY;
    if (live.dataset.idle === "true") return IDLE_EVERY;
    return null;
  }

  function schedule() {
    clearTimeout(timer);
    var wait = delay();
    if (wait !== null && !document.hidden) timer = setTimeout(refresh, wait);
  }

  function refresh() {
    var live = region();
    if (!live) return;
    fetch(live.dataset.liveUrl, {
      credentials: "same-origin",
      cache: "no-cache",
      headers: { Accept: "text/html" },
    })
      .then(function (response) {
        // Signed out elsewhere (or the token was revoked): show the login form.
        if (response.redirected || !response.ok) {
          window.location.reload();
          return null;
        }
        var tag = response.headers.get("ETag");
        if (tag && tag === shownTag) return undefined;
        shownTag = tag;
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        if (html === undefined) {
          schedule();
          return;
        }
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (next) region().replaceWith(document.adoptNode(next));
        schedule();
      })
      .catch(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && delay() !== null) refresh();
    else clearTimeout(timer);
  });
  document.addEventListener("DOMContentLoaded", schedule);
})();
