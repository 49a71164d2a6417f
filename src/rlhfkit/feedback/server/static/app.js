// Annotation page helpers: keyboard shortcuts, time spent, one submission per page, click/drag ranking.
(function () {
  "use strict";
  var form = document.getElementById("answer-form");
  if (!form) { return; }
  var started = performance.now();
  var timeField = form.querySelector('input[name="time_spent_ms"]');

  form.addEventListener("submit", function (event) {
    if (form.dataset.sent === "1") { event.preventDefault(); return; }
    form.dataset.sent = "1";
    timeField.value = String(Math.round(performance.now() - started));
    form.classList.add("sending");
  });

  function buttonFor(key) {
    var buttons = form.querySelectorAll("button[data-key]");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].getAttribute("data-key") === key) { return buttons[i]; }
    }
    return null;
  }

  function typing(target) {
    if (!target || !target.tagName) { return false; }
    var tag = target.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" || (tag === "INPUT" && target.type !== "radio");
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var key = event.key.toLowerCase();
    if (form.dataset.kind === "rating" && /^[0-9]$/.test(key)) {
      var radio = form.querySelector('input[data-rating="' + key + '"]');
      if (radio) { radio.checked = true; radio.focus(); event.preventDefault(); }
      return;
    }
    var button = buttonFor(key);
    if (button) {
      event.preventDefault();
      form.requestSubmit(button);
    }
  });

  // A strength of preference is optional: clicking the chosen one again clears it.
  form.querySelectorAll("label.strength-opt").forEach(function (label) {
    var radio = label.querySelector("input");
    label.addEventListener("mousedown", function () { radio.dataset.was = radio.checked ? "1" : ""; });
    radio.addEventListener("click", function () {
      if (radio.dataset.was === "1") { radio.checked = false; }
      radio.dataset.was = "";
    });
  });

  var list = document.getElementById("rank-list");
  if (!list) { return; }
  function items() { return Array.prototype.slice.call(list.querySelectorAll("li.rankable")); }
  function select(li) { return li.querySelector('select[name="rank"]'); }
  function refresh() {
    items().forEach(function (li) { li.classList.toggle("ranked", select(li).value !== ""); });
  }
  list.addEventListener("click", function (event) {
    var li = event.target.closest("li.rankable");
    if (!li || event.target.closest("select, label")) { return; }
    var sel = select(li);
    if (sel.value) {
      var removed = Number(sel.value);
      items().forEach(function (other) {
        var s = select(other);
        if (s.value && Number(s.value) > removed) { s.value = String(Number(s.value) - 1); }
      });
      sel.value = "";
    } else {
      sel.value = String(items().filter(function (o) { return select(o).value !== ""; }).length + 1);
    }
    refresh();
  });
  list.addEventListener("change", refresh);
  document.getElementById("rank-reset").addEventListener("click", function () {
    items().forEach(function (li) { select(li).value = ""; });
    refresh();
  });

  var dragged = null;
  list.addEventListener("dragstart", function (event) {
    dragged = event.target.closest("li.rankable");
    event.dataTransfer.effectAllowed = "move";
  });
  list.addEventListener("dragover", function (event) {
    var over = event.target.closest("li.rankable");
    if (!dragged || !over || over === dragged) { return; }
    event.preventDefault();
    var box = over.getBoundingClientRect();
    list.insertBefore(dragged, event.clientY > box.top + box.height / 2 ? over.nextSibling : over);
  });
  list.addEventListener("drop", function (event) {
    event.preventDefault();
    items().forEach(function (li, i) { select(li).value = String(i + 1); });
    dragged = null;
    refresh();
  });
})();
