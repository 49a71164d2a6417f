// Edit tasks: a live word-level diff of the annotator's version against the original response.
// Built with DOM nodes and textContent only (never innerHTML), so any text stays inert under the CSP.
(function () {
  "use strict";
  var MAX_CELLS = 4000000;  // LCS table size beyond which the middle is shown as one replacement

  function tokens(text) {
    return text.match(/\s+|[^\s]+/g) || [];
  }

  function lcsOps(a, b) {
    var n = a.length, m = b.length, i, j;
    var table = [];
    for (i = 0; i <= n; i++) { table.push(new Uint32Array(m + 1)); }
    for (i = n - 1; i >= 0; i--) {
      for (j = m - 1; j >= 0; j--) {
        table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
      }
    }
    var ops = [];
    i = 0; j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) { ops.push(["same", a[i]]); i++; j++; }
      else if (table[i + 1][j] >= table[i][j + 1]) { ops.push(["del", a[i]]); i++; }
      else { ops.push(["ins", b[j]]); j++; }
    }
    for (; i < n; i++) { ops.push(["del", a[i]]); }
    for (; j < m; j++) { ops.push(["ins", b[j]]); }
    return ops;
  }

  function diff(before, after) {
    var a = tokens(before), b = tokens(after);
    var start = 0;
    while (start < a.length && start < b.length && a[start] === b[start]) { start++; }
    var endA = a.length, endB = b.length;
    while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
    var midA = a.slice(start, endA), midB = b.slice(start, endB), middle;
    if ((midA.length + 1) * (midB.length + 1) > MAX_CELLS) {
      middle = midA.map(function (t) { return ["del", t]; }).concat(midB.map(function (t) { return ["ins", t]; }));
    } else {
      middle = lcsOps(midA, midB);
    }
    var head = a.slice(0, start).map(function (t) { return ["same", t]; });
    var tail = a.slice(endA).map(function (t) { return ["same", t]; });
    return head.concat(middle, tail);
  }

  function merged(ops) {
    var out = [];
    ops.forEach(function (op) {
      var last = out[out.length - 1];
      if (last && last[0] === op[0]) { last[1] += op[1]; } else { out.push([op[0], op[1]]); }
    });
    return out;
  }

  var original = document.getElementById("edit-original");
  var area = document.getElementById("edit-text");
  var view = document.getElementById("edit-diff");
  var summary = document.getElementById("edit-diff-summary");
  if (!original || !area || !view || !summary) { return; }
  var before = original.textContent;

  function render() {
    var ops = merged(diff(before, area.value.replace(/\r\n/g, "\n")));
    var added = 0, removed = 0;
    while (view.firstChild) { view.removeChild(view.firstChild); }
    ops.forEach(function (op) {
      var node = op[0] === "same" ? document.createTextNode(op[1]) : document.createElement(op[0]);
      if (op[0] !== "same") {
        node.textContent = op[1];
        var words = (op[1].match(/[^\s]+/g) || []).length;
        if (op[0] === "ins") { added += words; } else { removed += words; }
      }
      view.appendChild(node);
    });
    summary.textContent = added || removed ? "+" + added + " words, -" + removed + " words" : "no changes yet";
  }

  var pending = null;
  area.addEventListener("input", function () {
    if (pending !== null) { window.clearTimeout(pending); }
    pending = window.setTimeout(function () { pending = null; render(); }, 60);
  });
  area.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { area.blur(); }
  });
  render();
})();
