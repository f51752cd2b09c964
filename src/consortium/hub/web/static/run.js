/* The run page's live curves: follows /runs/{id}/events (server-sent events) and redraws the SVG charts and
   tables the server rendered, with the geometry of hub/web/charts.py. No eval, no inline code, no libraries. */
(function () {
  "use strict";
  var WIDTH = 320, HEIGHT = 160, PAD = 24;
  var GROUPS = [["test", "test"], ["federated_eval", "federated"], ["train", "train"]];
  var SVG = "http://www.w3.org/2000/svg";
  var root = document.getElementById("live-run");
  if (!root || root.dataset.live !== "yes" || !window.EventSource) { return; }
  var total = parseInt(root.dataset.rounds, 10);
  var rounds = {};
  JSON.parse(root.dataset.initial).forEach(function (r) { rounds[r.round] = r; });

  function ordered() {
    return Object.keys(rounds).map(Number).sort(function (a, b) { return a - b; })
      .map(function (n) { return rounds[n]; });
  }

  function series() {
    var found = {}, keys = [], list = ordered();
    function add(key, title, number, value) {
      if (!found[key]) { found[key] = {title: title, points: []}; keys.push(key); }
      found[key].points.push([number, value]);
    }
    GROUPS.forEach(function (g) {
      list.forEach(function (r) {
        if (g[0] === "federated_eval" && r.federated_eval_pending) { return; }
        Object.keys(r[g[0]] || {}).sort().forEach(function (name) {
          add(g[0] + "." + name, g[1] + " " + name, r.round, r[g[0]][name]);
        });
      });
    });
    list.forEach(function (r) { add("wall_s", "round time (s)", r.round, r.wall_s); });
    return keys.map(function (k) { return {key: k, title: found[k].title, points: found[k].points}; });
  }

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (a) { node.setAttribute(a, attrs[a]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function fmt(value, digits) { return Number(value.toPrecision(digits)).toString(); }

  function figure(s) {
    var values = s.points.map(function (p) { return p[1]; });
    var low = Math.min.apply(null, values), high = Math.max.apply(null, values);
    var spanX = Math.max(total - 1, 1), h = HEIGHT - 2 * PAD;
    var coords = s.points.map(function (p) {
      var x = PAD + (p[0] - 1) / spanX * (WIDTH - 2 * PAD);
      var y = HEIGHT - PAD - (high === low ? h / 2 : (p[1] - low) / (high - low) * h);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    var fig = document.createElement("figure");
    fig.className = "chart";
    fig.dataset.key = s.key;
    var caption = document.createElement("figcaption");
    var strong = document.createElement("strong");
    strong.textContent = fmt(values[values.length - 1], 4);
    caption.appendChild(document.createTextNode(s.title + ": "));
    caption.appendChild(strong);
    var svg = el("svg", {viewBox: "0 0 " + WIDTH + " " + HEIGHT, role: "img", "aria-label": s.title + " by round"});
    svg.appendChild(el("line", {"class": "axis", x1: PAD, y1: HEIGHT - PAD, x2: WIDTH - PAD, y2: HEIGHT - PAD}));
    svg.appendChild(el("line", {"class": "axis", x1: PAD, y1: PAD, x2: PAD, y2: HEIGHT - PAD}));
    svg.appendChild(el("text", {x: 2, y: 20}, fmt(high, 3)));
    svg.appendChild(el("text", {x: 2, y: HEIGHT - 4}, fmt(low, 3)));
    svg.appendChild(el("text", {x: WIDTH - PAD, y: HEIGHT - 4, "text-anchor": "end"}, "round " + total));
    svg.appendChild(el("polyline", {points: coords.join(" ")}));
    fig.appendChild(caption);
    fig.appendChild(svg);
    return fig;
  }

  function metrics(values) {
    return Object.keys(values || {}).sort().map(function (k) { return k + " " + values[k].toFixed(4); }).join(" ");
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function roundRow(r) {
    var body = document.querySelector("#rounds-table tbody");
    var row = body.querySelector('tr[data-round="' + r.round + '"]');
    if (!row) {
      row = document.createElement("tr");
      row.dataset.round = r.round;
      row.dataset.shownAt = String(Date.now());
      body.appendChild(row);
    }
    row.textContent = "";
    cell(row, String(r.round));
    cell(row, metrics(r.test));
    cell(row, r.federated_eval_pending ? "pending" : metrics(r.federated_eval));
    cell(row, r.participants.join(", "));
    cell(row, r.dropped.join(", ") || "none");
    cell(row, r.wall_s.toFixed(2) + " s");
  }

  function redraw() {
    var box = document.getElementById("charts");
    box.textContent = "";
    series().forEach(function (s) { box.appendChild(figure(s)); });
  }

  function showNodes(data) {
    var body = document.querySelector("#nodes-table tbody");
    body.textContent = "";
    data.nodes.forEach(function (n) {
      var row = document.createElement("tr");
      cell(row, n.org);
      cell(row, Object.keys(n.counts).sort().map(function (k) { return k + " " + n.counts[k]; }).join(" "));
      body.appendChild(row);
    });
    var list = document.getElementById("refusals");
    list.textContent = "";
    data.refusals.forEach(function (f) {
      var item = document.createElement("li");
      item.textContent = f.org + ", round " + f.round + " (" + f.kind + "): " + f.status + ": " + f.reason;
      list.appendChild(item);
    });
  }

  function showRun(run) {
    document.getElementById("run-status").textContent = run.status;
    document.getElementById("run-round").textContent = run.current_round;
    document.getElementById("run-error").textContent = run.error || "none";
    if (run.model_id) {
      var cellModel = document.getElementById("run-model"), link = document.createElement("a");
      link.href = "/models/" + run.model_id;
      link.textContent = "Model " + run.model_id;
      cellModel.textContent = "";
      cellModel.appendChild(link);
    }
  }

  var source = new EventSource(root.dataset.stream + "?after=" + encodeURIComponent(root.dataset.after));
  source.addEventListener("round", function (e) {
    var r = JSON.parse(e.data);
    rounds[r.round] = r;
    roundRow(r);
    redraw();
  });
  source.addEventListener("nodes", function (e) { showNodes(JSON.parse(e.data)); });
  source.addEventListener("run", function (e) { showRun(JSON.parse(e.data)); });
  source.addEventListener("end", function () {
    source.close();
    root.dataset.live = "ended";
    document.getElementById("live-note").textContent = "The run has stopped.";
  });
})();
