// The overview's live updates (hub/web/templates/overview.html loads it when the live feed is on): every lane's
// row follows /events (server-sent events) in place, and the text and state filters act at once. Served by
// hub/web/assets.py; the page's Content-Security-Policy runs no inline script, so it reads what the page
// knows from the lanes table's data attributes (data-labels, data-events-url, data-alerts-url).
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  var table = document.getElementById("lanes"), live = document.getElementById("live");
  var labels = JSON.parse(table.getAttribute("data-labels"));
  var q = document.getElementById("filter-q"), st = document.getElementById("filter-state");
  var alertsUrl = table.getAttribute("data-alerts-url"), source = null, backoff = 5;
  function status(text, cls) { live.hidden = false; live.textContent = text; live.className = cls; }
  function fmt(ms) {
    if (ms === null || ms === undefined) { return "-"; }
    return new Date(ms).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }
  function filter() {
    var text = q.value.trim().toLowerCase(), state = st.value, rows = table.tBodies[0].rows, shown = 0, total = 0;
    var tiles = {ok: 0, low: 0, out: 0, trouble: 0};
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i], s = r.getAttribute("data-state");
      if (!s) { continue; }
      total++; tiles[s]++;
      var show = (!state || s === state) && (!text || r.getAttribute("data-search").indexOf(text) >= 0);
      r.hidden = !show; if (show) { shown++; }
    }
    document.getElementById("shown-count").textContent = shown + " of " + total + " lanes";
    for (var key in tiles) {
      var tile = document.querySelector('[data-tile="' + key + '"] strong');
      if (tile) { tile.textContent = tiles[key]; }
    }
  }
  function apply(lane) {
    var tr = document.getElementById("lane-" + lane.lane_id);
    if (!tr) { document.getElementById("new-lanes").hidden = false; return false; }
    var count = tr.querySelector("td.count"), changed = String(lane.count) !== count.getAttribute("data-count");
    count.setAttribute("data-count", lane.count); count.textContent = lane.count;
    var meter = tr.querySelector("meter");
    if (meter) { meter.value = lane.count; if (lane.capacity) { meter.max = lane.capacity; } }
    tr.querySelector("td.capacity span").textContent = lane.capacity === null ? "-" : lane.capacity;
    var last = tr.querySelector("td.last-change");
    last.setAttribute("data-ms", lane.last_change_ms === null ? "" : lane.last_change_ms);
    last.textContent = fmt(lane.last_change_ms);
    tr.setAttribute("data-state", lane.state);
    var badge = tr.querySelector("span.state");
    badge.className = "state " + lane.state; badge.textContent = labels[lane.state] || lane.state;
    var tags = tr.querySelector("td.tags");
    tags.setAttribute("data-tags", lane.tags_present);
    tags.querySelector("span").textContent = lane.tags_present;
    tags.querySelector("small.other").textContent = lane.tags_other_sku ? " (" + lane.tags_other_sku + " other SKU)" : "";
    tags.querySelector("small.read").textContent = lane.tags_present ? fmt(lane.tags_last_read_ms) : "";
    var cell = tr.querySelector("td.alerts");
    if (lane.open_alerts && alertsUrl) {
      var a = document.createElement("a"); a.href = alertsUrl; a.textContent = lane.open_alerts;
      cell.textContent = ""; cell.appendChild(a);
    } else { cell.textContent = lane.open_alerts; }
    if (changed) { tr.classList.remove("changed"); void tr.offsetWidth; tr.classList.add("changed"); }
    return true;
  }
  function receive(e) {
    var data = JSON.parse(e.data);
    data.lanes.forEach(apply);
    document.getElementById("open-alerts").textContent = data.open_alerts;
    filter();
  }
  function connect() {
    source = new EventSource(table.getAttribute("data-events-url"));
    source.addEventListener("snapshot", function (e) { backoff = 5; status("live", "on"); receive(e); });
    source.addEventListener("lanes", receive);
    source.addEventListener("signed-out", function () {  // disabled, demoted or signed out elsewhere: stop here
      source.close(); status("signed out", "off"); window.location.reload();  // the page sends us to the login
    });
    source.onerror = function () {
      status("reconnecting", "off");
      if (source.readyState === EventSource.CLOSED) {  // refused (503, signed out): try again later
        source.close();
        setTimeout(connect, backoff * 1000 * (0.5 + Math.random()));
        backoff = Math.min(backoff * 2, 120);
      }
    };
  }
  q.addEventListener("input", filter);
  st.addEventListener("change", filter);
  connect();
})();
