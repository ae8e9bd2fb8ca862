/* Corral's web UI: signing in and out, decisions on approvals, cancelling a run.
   Every change goes through the JSON API with the session cookie and the X-Corral-UI header
   (the server refuses a cookie-authenticated change without it: no cross-site requests). */
(function () {
  "use strict";

  const UI_HEADER = "X-Corral-UI";

  /** Send a JSON request to the server; resolve to {ok, status, data, message}. */
  async function send(method, url, body) {
    const init = {
      method: method,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    };
    init.headers[UI_HEADER] = "1";
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      return { ok: false, status: 0, data: null, message: "The server could not be reached: " + error.message };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    let message = "";
    if (!response.ok) {
      message = data && data.detail ? data.detail : "The server answered " + response.status + ".";
    }
    return { ok: response.ok, status: response.status, data: data, message: message };
  }

  function say(element, text, kind) {
    if (!element) return;
    element.textContent = text;
    element.dataset.kind = kind || "";
  }

  /** Show each <time> in the browser's time zone; the UTC text stays as its tooltip. */
  function localTimes(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (node) {
      const moment = new Date(node.getAttribute("datetime"));
      if (isNaN(moment.getTime())) return;
      node.title = node.textContent;
      node.textContent = moment.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
      });
      node.dataset.local = "1";
    });
  }

  function setUpLogin() {
    const form = document.querySelector("form[data-login]");
    if (!form) return;
    const message = form.querySelector("[data-message]");
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const token = form.elements.token.value.trim();
      if (!token) {
        say(message, "Paste your API key (it starts with crl_).", "error");
        return;
      }
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      say(message, "Checking the key…", "");
      const answer = await send("POST", "/login", { token: token });
      if (answer.ok) {
        say(message, "Signed in as " + answer.data.principal + ".", "ok");
        window.location.assign(form.dataset.next || "/");
        return;
      }
      button.disabled = false;
      say(message, answer.message, "error");
    });
  }

  function setUpLogout() {
    document.querySelectorAll("[data-logout]").forEach(function (button) {
      button.addEventListener("click", async function () {
        await send("POST", "/logout");
        window.location.assign("/login");
      });
    });
  }

  /** Parse the edited arguments; null when the text is unchanged, or throw a readable error. */
  function editedArguments(area) {
    if (!area || area.value.trim() === area.defaultValue.trim()) return null;
    let parsed;
    try {
      parsed = JSON.parse(area.value);
    } catch (error) {
      throw new Error("The arguments are not valid JSON: " + error.message);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new Error("The arguments must be a JSON object: { \"name\": value, … }.");
    }
    return parsed;
  }

  function setUpDecisions() {
    document.querySelectorAll("form[data-decide]").forEach(function (form) {
      const approvalId = form.dataset.decide;
      const message = form.querySelector("[data-message]");
      const area = form.elements.arguments;
      const jsonError = form.querySelector("[data-json-error]");
      if (area) {
        area.addEventListener("input", function () {
          try {
            editedArguments(area);
            area.removeAttribute("aria-invalid");
            say(jsonError, "", "");
          } catch (error) {
            area.setAttribute("aria-invalid", "true");
            say(jsonError, error.message, "error");
          }
        });
      }
      form.addEventListener("submit", async function (event) {
        event.preventDefault();
        const approve = !(event.submitter && event.submitter.value === "reject");
        const reason = form.elements.reason.value.trim();
        if (!reason) {
          say(message, "Give a reason: it is recorded with your decision.", "error");
          form.elements.reason.focus();
          return;
        }
        const body = { approve: approve, reason: reason };
        let edited;
        try {
          edited = editedArguments(area);
        } catch (error) {
          say(message, error.message, "error");
          area.focus();
          return;
        }
        if (edited !== null) {
          if (!approve) {
            say(message, "Edited arguments apply only to an approval: undo the edit to reject.", "error");
            return;
          }
          body.arguments = edited;
        }
        const buttons = form.querySelectorAll("button");
        buttons.forEach(function (b) { b.disabled = true; });
        say(message, approve ? "Approving…" : "Rejecting…", "");
        const answer = await send(
          "POST", "/api/v1/approvals/" + encodeURIComponent(approvalId) + "/decision", body
        );
        if (!answer.ok) {
          buttons.forEach(function (b) { b.disabled = false; });
          say(message, answer.message, "error");
          return;
        }
        const decision = answer.data;
        const card = form.closest("[data-approval]");
        if (card) {
          card.dataset.status = decision.status;
          const badge = card.querySelector("[data-approval-badge] .badge");
          if (badge) {
            badge.textContent = decision.status;
            badge.className = "badge status-" + decision.status;
            badge.dataset.status = decision.status;
          }
        }
        const done = document.createElement("div");
        done.className = "decided";
        done.setAttribute("role", "status");
        const verb = decision.status === "approved" ? "Approved" : "Rejected";
        done.textContent = verb + " by " + decision.decided_by + ": “" + decision.reason + "”" +
          (decision.edited ? " (with edited arguments)" : "") +
          ". The run resumes when a worker picks it up.";
        form.replaceWith(done);
      });
    });
  }

  function setUpCancel() {
    document.addEventListener("click", async function (event) {
      const button = event.target.closest("[data-cancel-run]");
      if (!button) return;
      const runId = button.dataset.cancelRun;
      if (!window.confirm("Cancel this run and its unfinished child runs?")) return;
      button.disabled = true;
      const answer = await send("POST", "/api/v1/runs/" + encodeURIComponent(runId) + "/cancel");
      const message = document.querySelector(".run-head [data-message]");
      if (!answer.ok) {
        button.disabled = false;
        say(message, answer.message, "error");
        return;
      }
      say(message, "Cancelled.", "ok");
      document.dispatchEvent(new CustomEvent("corral:refresh"));
    });
  }

  window.corral = { send: send, localTimes: localTimes };

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    setUpLogin();
    setUpLogout();
    setUpDecisions();
    setUpCancel();
  });
})();
