/* The run page, live: it follows the run over server-sent events (/api/v1/events, events
   `run.updated` of the run and its child runs), and polls GET /api/v1/runs/{id} every 2 s when events are not available
   (every 10 s beside them, in case one is missed). On a change it fetches the page again and
   swaps the live part in place: no reload, and the steps a person opened stay open. */
(function () {
  "use strict";

  const FAST_POLL = 2000;
  const SLOW_POLL = 10000;

  function start() {
    const region = document.querySelector("[data-live-run]");
    if (!region) return;
    const runId = region.dataset.liveRun;
    const indicator = document.querySelector("[data-live-indicator]");
    let source = null;
    let timer = null;
    let refreshing = false;
    let queued = false;

    function runIds() {
      return new Set((region.dataset.runIds || "").split(" ").filter(Boolean));
    }
    function finished() {
      return region.dataset.finished === "true";
    }
    function show(text, mode) {
      if (!indicator) return;
      indicator.textContent = text;
      indicator.dataset.mode = mode;
    }

    async function refresh() {
      if (refreshing) {
        queued = true;
        return;
      }
      refreshing = true;
      try {
        const response = await fetch(window.location.pathname + window.location.search, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
        if (response.redirected && new URL(response.url).pathname === "/login") {
          window.location.assign(response.url);
          return;
        }
        if (!response.ok) return;
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.querySelector("[data-live-run]");
        if (!fresh) return;
        const open = Array.from(region.querySelectorAll("details[open][id]")).map(function (d) {
          return d.id;
        });
        region.replaceChildren.apply(region, Array.from(fresh.childNodes).map(function (node) {
          return document.importNode(node, true);
        }));
        ["runIds", "finished", "status", "updated"].forEach(function (key) {
          region.dataset[key] = fresh.dataset[key] || "";
        });
        open.forEach(function (id) {
          const details = document.getElementById(id);
          if (details) details.open = true;
        });
        if (window.corral) window.corral.localTimes(region);
        region.dispatchEvent(new CustomEvent("corral:updated", { bubbles: true }));
        if (finished()) stop();
      } catch (error) {
        /* the next event or poll tries again */
      } finally {
        refreshing = false;
        if (queued) {
          queued = false;
          refresh();
        }
      }
    }

    async function poll() {
      try {
        const response = await fetch("/api/v1/runs/" + encodeURIComponent(runId), {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (!response.ok) return;
        const run = await response.json();
        const updated = Date.parse(run.updated_at) / 1000;
        const known = parseFloat(region.dataset.updated);
        if (run.status !== region.dataset.status || Math.abs(updated - known) > 0.001) {
          await refresh();
        }
      } catch (error) {
        /* try again at the next tick */
      }
    }

    function pollEvery(ms) {
      window.clearInterval(timer);
      timer = window.setInterval(poll, ms);
    }

    function stop() {
      window.clearInterval(timer);
      timer = null;
      if (source) {
        source.close();
        source = null;
      }
      show("finished", "finished");
    }

    function listen() {
      if (!window.EventSource) return;
      source = new EventSource("/api/v1/events");
      source.addEventListener("open", function () {
        pollEvery(SLOW_POLL);
        show("live", "live");
      });
      source.addEventListener("run.updated", function (event) {
        let body = null;
        try {
          body = JSON.parse(event.data);
        } catch (error) {
          return;
        }
        /* The event's own data is in `data` ({id, type, tenant, time, data: {run_id, …}}). */
        const about = body && body.data && typeof body.data === "object" ? body.data : body;
        if (about && (about.run_id === runId || runIds().has(about.run_id))) refresh();
      });
      source.addEventListener("error", function () {
        if (source && source.readyState === EventSource.CLOSED) {
          source = null; /* no event stream here: poll */
        }
        if (finished()) return;
        pollEvery(FAST_POLL);
        show("live (checking every 2 s)", "polling");
      });
    }

    document.addEventListener("corral:refresh", refresh);
    window.addEventListener("pagehide", stop);
    if (finished()) {
      show("finished", "finished");
      return;
    }
    pollEvery(FAST_POLL);
    show("live (checking every 2 s)", "polling");
    listen();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
