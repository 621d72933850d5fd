// The live line refreshes itself: every data-refresh-s seconds the page is fetched again and its #live part
// replaced. A file of its own, since the console's Content-Security-Policy allows no inline script.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live) return;
  const every = 1000 * (Number(live.dataset.refreshS) || 10);
  async function refresh() {
    if (document.hidden) return;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin", cache: "no-store" });
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("live");
      if (!response.ok || !fresh || response.redirected) {
        window.location.reload(); // signed out, or the page is gone: show what the server says instead
        return;
      }
      document.getElementById("live").replaceWith(fresh);
    } catch (error) {
      // The server is unreachable for now: keep what is shown and try again at the next tick.
    }
  }
  window.setInterval(refresh, every);
})();
