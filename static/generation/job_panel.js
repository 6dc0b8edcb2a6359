// The live training panel, which htmx refreshes every 2 s. After a failed refresh htmx keeps polling but
// leaves the panel as it was, so it would look current while it is not: say so until a refresh succeeds
// (the new panel replaces the note). A training no longer shown to this account (404) is not asked for again.
// A log the reader opened stays open across refreshes (htmx itself gives focus back to the element of the
// same id), opens on its newest lines and keeps its place: following the end if it was there, else where the
// reader left it. "Train my style" is sent once: a second click would only be refused. A quick training is not
// published by default.
(function () {
  "use strict";
  function panelOf(event) {
    var element = event.detail && event.detail.elt;
    return element && element.classList && element.classList.contains("job-panel") ? element : null;
  }
  function tell(panel, message) {
    var note = panel.querySelector(".job-connection");
    if (!note) {
      note = document.createElement("p");
      note.className = "job-connection field-errors";
      note.setAttribute("role", "status");
      panel.insertBefore(note, panel.firstChild);
    }
    note.textContent = message;
  }
  document.addEventListener("htmx:responseError", function (event) {
    var panel = panelOf(event);
    if (!panel) { return; }
    if (event.detail.xhr.status === 404) {
      panel.dataset.stopped = "true";
      tell(panel, panel.dataset.goneMessage);
    } else {
      tell(panel, panel.dataset.errorMessage);
    }
  });
  document.addEventListener("htmx:sendError", function (event) {
    var panel = panelOf(event);
    if (panel) { tell(panel, panel.dataset.offlineMessage); }
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var panel = panelOf(event);
    if (panel && panel.dataset.stopped) { event.preventDefault(); }
  });
  var logPlaces = {};  // panel id -> where its open log was read before the refresh
  function scrollToEnd(text) { text.scrollTop = text.scrollHeight; }
  document.addEventListener("htmx:beforeSwap", function (event) {
    var panel = panelOf(event);
    var log = panel && panel.querySelector("details.job-log");
    if (log && log.open && typeof event.detail.serverResponse === "string") {
      event.detail.serverResponse = event.detail.serverResponse.replace('<details class="job-log">', '<details class="job-log" open>');
      var text = log.querySelector(".log");
      logPlaces[panel.id] = { top: text.scrollTop, atEnd: text.scrollTop + text.clientHeight >= text.scrollHeight - 4 };
    }
  });
  document.addEventListener("htmx:load", function (event) {
    var panel = event.detail.elt;
    var place = panel && logPlaces[panel.id];
    var text = place && panel.querySelector("details.job-log[open] .log");
    delete logPlaces[panel && panel.id];
    if (!text) { return; }
    if (place.atEnd) { scrollToEnd(text); } else { text.scrollTop = place.top; }
  });
  document.addEventListener("toggle", function (event) {  // toggle does not bubble: caught on its way down
    var log = event.target;
    if (log.matches && log.matches("details.job-log") && log.open) { scrollToEnd(log.querySelector(".log")); }
  }, true);
  document.addEventListener("submit", function (event) {
    var button = event.target.querySelector("button[data-send-once]");
    if (!button) { return; }
    if (button.dataset.sent) { event.preventDefault(); return; }
    button.dataset.sent = "true";
    button.setAttribute("aria-disabled", "true");
  });
  // Quick is a first look: published by default, it would replace the artist's style with a rough one. Choosing it
  // unticks "Publish this version when it is ready", unless the artist set that box themselves; another preset
  // puts the default back.
  var preset = document.getElementById("preset");
  var publish = document.querySelector("input[name=publish_when_ready]");
  if (preset && publish) {
    var chosenByHand = false;
    publish.addEventListener("change", function () { chosenByHand = true; });
    preset.addEventListener("change", function () {
      if (!chosenByHand) { publish.checked = preset.value !== "quick"; }
    });
  }
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) { return; }  // back to this page from the browser's cache: the form can be sent again
    document.querySelectorAll("button[data-send-once][data-sent]").forEach(function (button) {
      delete button.dataset.sent;
      button.removeAttribute("aria-disabled");
    });
  });
})();
