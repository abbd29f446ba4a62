// Autosave for the rating page. The status says "saved" only after the server answered with the new
// version, so what the rater sees as saved is in the database; while the network is down the latest
// state is kept and sent again every few seconds, one request at a time, in order.
(function () {
  "use strict";
  const form = document.getElementById("rating-form");
  if (!form) return;
  const status = document.getElementById("save-status");
  const totalValue = document.getElementById("total-value");
  const secondsField = document.getElementById("seconds");
  const words = form.dataset;
  const position = form.dataset.position;
  const csrf = form.dataset.csrf;
  let inFlight = false, dirty = false, retryTimer = null;
  // Time on the page while it is visible, not yet acknowledged by the server.
  let pending = 0, shownAt = document.visibilityState === "visible" ? Date.now() : null;

  function elapsed() {
    if (shownAt !== null) { pending += (Date.now() - shownAt) / 1000; shownAt = Date.now(); }
    return pending;
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") shownAt = Date.now(); else { elapsed(); shownAt = null; }
  });

  function state() {
    const levels = {};
    form.querySelectorAll("fieldset.dimension").forEach(function (fs) {
      const checked = fs.querySelector("input[type=radio]:checked");
      levels[fs.dataset.key] = checked ? Number(checked.value) : null;
    });
    return { levels: levels, comment: document.getElementById("comment").value,
             cannot_judge: document.getElementById("cannot_judge").checked };
  }

  function show(kind) {
    status.dataset.state = kind;
    status.textContent = { saved: words.wSaved, saving: words.wSaving, error: words.wUnsaved }[kind];
  }

  function send() {
    if (inFlight) { dirty = true; return; }
    inFlight = true; dirty = false;
    const seconds = elapsed();
    const body = Object.assign(state(), { seconds: seconds });
    show("saving");
    fetch("/api/rate/" + position, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body)
    }).then(function (resp) {
      if (resp.status === 401) { window.location = "/login?expired=1"; throw new Error("expired"); }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      return resp.json();
    }).then(function (saved) {
      pending = Math.max(0, pending - seconds);
      inFlight = false;
      totalValue.textContent = saved.total === null ? "—" : saved.total.toFixed(1);
      status.dataset.version = saved.version;
      if (dirty) send(); else show("saved");
    }).catch(function () {
      inFlight = false;
      show("error");
      clearTimeout(retryTimer);
      retryTimer = setTimeout(send, 2000);
    });
  }

  let typing = null;
  form.addEventListener("change", send);
  document.getElementById("comment").addEventListener("input", function () {
    clearTimeout(typing); typing = setTimeout(send, 600);
  });
  form.addEventListener("submit", function () { secondsField.value = elapsed().toFixed(1); pending = 0; });
  window.addEventListener("beforeunload", function (e) {
    if (inFlight || dirty || status.dataset.state === "error") { e.preventDefault(); e.returnValue = ""; }
  });
})();
