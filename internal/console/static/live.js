// The console's live page: arrivals as they happen, through server-sent events from
// /console/live/stream, prepended to the table the server rendered. Pause holds new
// rows back (counted on the button) until Resume. Without JavaScript the page still
// shows the newest arrivals on each load.
(function () {
  "use strict";
  var table = document.getElementById("arrivals");
  var button = document.getElementById("pause");
  var status = document.getElementById("live-status");
  if (!table || !button || !window.EventSource) { return; }
  var paused = false, held = [];
  var after = table.getAttribute("data-after") || "0";
  button.hidden = false;

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }
  function show(a) {
    var row = document.createElement("tr");
    var idCell = document.createElement("td");
    var link = document.createElement("a");
    link.href = "/console/events/" + encodeURIComponent(a.id);
    link.textContent = a.id;
    idCell.appendChild(link);
    row.appendChild(idCell);
    cell(row, a.provider);
    cell(row, a.external_id);
    cell(row, a.received_at.replace("T", " ").replace(/\.\d+/, ""));
    table.tBodies[0].insertBefore(row, table.tBodies[0].firstChild);
    while (table.tBodies[0].rows.length > 500) { table.tBodies[0].deleteRow(-1); }
  }
  button.addEventListener("click", function () {
    paused = !paused;
    if (!paused) { held.forEach(show); held = []; }
    button.textContent = paused ? "Resume" : "Pause";
    button.setAttribute("aria-pressed", paused ? "true" : "false");
  });
  var source = new EventSource("/console/live/stream?after=" + encodeURIComponent(after));
  source.addEventListener("open", function () { status.textContent = "Live: new arrivals appear at the top."; });
  source.addEventListener("error", function () { status.textContent = "Reconnecting…"; });
  source.addEventListener("arrival", function (e) {
    var a = JSON.parse(e.data);
    if (paused) {
      held.push(a);
      button.textContent = "Resume (" + held.length + " new)";
    } else {
      show(a);
    }
  });
})();
