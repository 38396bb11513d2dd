// jobq dashboard: optional niceties. Every page and action works without this file.
"use strict";

// Ask before destructive actions: <form data-confirm="...">.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form && form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// Reload the overview every few seconds while the "refresh" box is ticked (remembered).
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("autorefresh");
  if (!box) {
    return;
  }
  var key = "jobq-autorefresh";
  var seconds = Number(box.getAttribute("data-seconds")) || 5;
  var timer = null;
  box.checked = window.localStorage.getItem(key) !== "off";
  function arm() {
    window.clearTimeout(timer);
    if (box.checked) {
      timer = window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
    }
  }
  box.addEventListener("change", function () {
    window.localStorage.setItem(key, box.checked ? "on" : "off");
    arm();
  });
  arm();
});
