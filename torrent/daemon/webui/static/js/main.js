// The page: polls the daemon, wires the list, the detail pane, the dialogs, the toolbar,
// drag-and-drop and the keyboard together, and says so when something fails.
//
// Polling, not a WebSocket: the Transmission RPC is request/response, every other
// front end of it polls, and a poll of the list's fields only (torrent-get in "table"
// form: one header row, then one array per torrent) is a few kB per hundred torrents.
// One poll every POLL_MS keeps the list live; after a failure the interval grows to
// RETRY_MAX_MS until the daemon answers again.

import { $, $$, el, setText } from "./dom.js";
import { DetailPane } from "./detail.js";
import * as fmt from "./format.js";
import { RateGraph } from "./graph.js";
import { LIST_FIELDS, TorrentList } from "./list.js";
import { ConnectionError, Rpc, RpcError, toBase64 } from "./rpc.js";

const POLL_MS = 1500;
const HIDDEN_POLL_MS = 10000; // while the tab is in the background
const RETRY_MAX_MS = 5000;
const SESSION_EVERY = 5; // session-get (free space, alt speed) every this many polls

const meta = document.querySelector('meta[name="transmission-session-id"]');
const rpc = new Rpc(meta ? meta.content : "");

const app = {
  rpc,
  session: {},
  failures: 0,
  lastOk: 0,
  polls: 0,
  timer: null,
  inFlight: false,
  again: false,
  report,
  refresh: () => poll(),
};

// ------------------------------------------------------------------ feedback

function toast(text, kind = "info") {
  const node = el("div", { className: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  $("#toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 8000 : 3500);
}

/** Tell the user an action failed (or that the daemon cannot be reached). */
function report(err, what) {
  if (err instanceof RpcError) toast(`${what} failed: ${err.message}`, "error");
  else if (err instanceof ConnectionError) showUnreachable(err.message);
  else toast(`${what} failed: ${err}`, "error");
}

function showUnreachable(why) {
  const banner = $("#banner");
  const since = app.lastOk ? ` Last update ${fmt.duration((Date.now() - app.lastOk) / 1000)} ago.` : "";
  setText(banner, `Cannot reach the daemon (${why}). Retrying…${since}`);
  banner.hidden = false;
  document.body.classList.add("offline");
}

function hideUnreachable() {
  $("#banner").hidden = true;
  document.body.classList.remove("offline");
}

// ------------------------------------------------------------------ polling

function fromTable(rows) {
  const [names, ...values] = rows;
  return values.map((row) => Object.fromEntries(names.map((n, i) => [n, row[i]])));
}

async function poll() {
  // One poll at a time: an action asks for a fresh list while one may be on its way.
  if (app.inFlight) {
    app.again = true;
    return;
  }
  app.inFlight = true;
  clearTimeout(app.timer);
  let delay = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
  try {
    const wantSession = app.polls % SESSION_EVERY === 0 || !app.lastOk;
    const [list, stats, session] = await Promise.all([
      rpc.call("torrent-get", { fields: LIST_FIELDS, format: "table" }),
      rpc.call("session-stats"),
      wantSession ? rpc.call("session-get") : Promise.resolve(null),
    ]);
    app.polls++;
    app.failures = 0;
    app.lastOk = Date.now();
    hideUnreachable();
    list_.update(fromTable(list.torrents));
    updateLabelFilter();
    if (session) updateSession(session);
    updateTotals(stats);
    graph.add(stats.downloadSpeed, stats.uploadSpeed);
    if (detail.isOpen) detail.refresh();
  } catch (err) {
    app.failures++;
    delay = Math.min(RETRY_MAX_MS, POLL_MS * 2 ** app.failures);
    if (err instanceof ConnectionError) showUnreachable(err.message);
    else toast(`Updating the list failed: ${err.message}`, "error");
  } finally {
    app.inFlight = false;
    if (app.again) delay = 0;
    app.again = false;
    app.timer = setTimeout(poll, delay);
  }
}

function updateSession(session) {
  app.session = session;
  const alt = $("#alt-speed");
  alt.setAttribute("aria-pressed", session["alt-speed-enabled"] ? "true" : "false");
  alt.title = `Alternative speed limits (t): ${session["alt-speed-down"]} kB/s down, ${session["alt-speed-up"]} kB/s up`;
  setText($("#free-space"), `Free: ${fmt.size(session["download-dir-free-space"])}`);
  $("#free-space").title = session["download-dir"];
  setText($("#version"), session.version);
}

function updateTotals(stats) {
  setText($("#total-down"), `↓ ${fmt.rate(stats.downloadSpeed)}`);
  setText($("#total-up"), `↑ ${fmt.rate(stats.uploadSpeed)}`);
  const cur = stats["current-stats"];
  setText($("#session-totals"), `Session: ↓ ${fmt.size(cur.downloadedBytes)} ↑ ${fmt.size(cur.uploadedBytes)}`);
  setText($("#counts"), `${stats.torrentCount} torrents, ${stats.activeTorrentCount} running`);
}

let knownLabels = "";
function updateLabelFilter() {
  const labels = list_.labels();
  const key = JSON.stringify(labels);
  if (key === knownLabels) return;
  knownLabels = key;
  const select = $("#label-filter");
  const current = select.value;
  select.replaceChildren(
    el("option", { value: "" }, "All labels"),
    ...labels.map((l) => el("option", { value: l }, l)),
  );
  select.value = labels.includes(current) ? current : "";
  if (select.value !== current) list_.setFilter({ label: select.value });
}

// ------------------------------------------------------------------ actions

const METHODS = { start: "torrent-start", stop: "torrent-stop", verify: "torrent-verify" };

async function act(action, ids) {
  if (!ids.length && action !== "add") {
    toast("Select a torrent first", "info");
    return;
  }
  switch (action) {
    case "start":
    case "stop":
    case "verify":
      try {
        await rpc.call(METHODS[action], { ids });
      } catch (err) {
        report(err, action[0].toUpperCase() + action.slice(1));
      }
      poll();
      return;
    case "remove":
      return openRemove(ids);
    case "move":
      return openMove(ids);
    case "label":
      return openLabel(ids);
    default:
      return undefined;
  }
}

function names(ids) {
  return ids.map((id) => list_.torrents.get(id)?.name ?? `#${id}`);
}

function openRemove(ids) {
  const dialog = $("#remove-dialog");
  const shown = names(ids);
  setText($("[data-remove='count']", dialog), ids.length === 1 ? "this torrent" : `${ids.length} torrents`);
  $("[data-remove='names']", dialog).replaceChildren(...shown.slice(0, 10).map((n) => el("li", {}, n)));
  $("#remove-data").checked = false;
  dialog._ids = ids;
  dialog.showModal();
  $("#remove-confirm").focus();
}

async function confirmRemove() {
  const dialog = $("#remove-dialog");
  const ids = dialog._ids || [];
  const deleteData = $("#remove-data").checked;
  dialog.close();
  try {
    await rpc.call("torrent-remove", { ids, "delete-local-data": deleteData });
    toast(`Removed ${ids.length === 1 ? names(ids)[0] : `${ids.length} torrents`}${deleteData ? " and its data" : ""}`);
  } catch (err) {
    report(err, "Remove");
  }
  poll();
}

function openMove(ids) {
  const dialog = $("#move-dialog");
  dialog._ids = ids;
  $("#move-location").value = app.session["download-dir"] || "";
  dialog.showModal();
  $("#move-location").select();
}

async function confirmMove() {
  const dialog = $("#move-dialog");
  const location = $("#move-location").value.trim();
  if (!location) return;
  dialog.close();
  try {
    await rpc.call("torrent-set-location", { ids: dialog._ids, location, move: true });
    toast(`Moving to ${location}`);
  } catch (err) {
    report(err, "Move");
  }
  poll();
}

function openLabel(ids) {
  const dialog = $("#label-dialog");
  dialog._ids = ids;
  const first = list_.torrents.get(ids[0]);
  $("#label-input").value = first ? first.labels.join(", ") : "";
  dialog.showModal();
  $("#label-input").select();
}

async function confirmLabel() {
  const dialog = $("#label-dialog");
  const labels = $("#label-input")
    .value.split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  dialog.close();
  try {
    await rpc.call("torrent-set", { ids: dialog._ids, labels });
  } catch (err) {
    report(err, "Setting the labels");
  }
  poll();
}

// ------------------------------------------------------------------ adding

function openAdd() {
  const dialog = $("#add-dialog");
  $("#add-dir").value = app.session["download-dir"] || "";
  dialog.showModal();
}

/** Add .torrent files and magnet links / URLs; each outcome is told in a toast. */
async function addTorrents(files, links, options) {
  const base = {};
  if (options.dir) base["download-dir"] = options.dir;
  if (options.paused) base.paused = true;
  const jobs = [];
  for (const file of files) {
    jobs.push(
      file.arrayBuffer().then((buffer) => ({ what: file.name, args: { ...base, metainfo: toBase64(buffer) } })),
    );
  }
  for (const link of links) jobs.push(Promise.resolve({ what: link, args: { ...base, filename: link } }));
  let failed = 0;
  for (const job of jobs) {
    let what = "";
    try {
      const { what: name, args } = await job;
      what = name;
      const out = await rpc.call("torrent-add", args);
      if (out["torrent-added"]) toast(`Added ${out["torrent-added"].name}`);
      else if (out["torrent-duplicate"]) toast(`Already there: ${out["torrent-duplicate"].name}`);
    } catch (err) {
      failed++;
      report(err, `Adding ${what || "a file"}`);
    }
  }
  poll();
  return failed;
}

async function submitAdd(e) {
  e.preventDefault();
  const dialog = $("#add-dialog");
  const input = $("#add-file");
  const files = Array.from(input.files);
  const links = $("#add-links")
    .value.split(/\s+/)
    .map((s) => s.trim())
    .filter(Boolean);
  if (!files.length && !links.length) {
    toast("Choose a .torrent file or paste a magnet link or URL", "error");
    return;
  }
  const failed = await addTorrents(files, links, { dir: $("#add-dir").value.trim(), paused: $("#add-paused").checked });
  if (!failed) {
    input.value = "";
    $("#add-links").value = "";
    setText($("#add-chosen"), "");
    dialog.close();
  }
}

function setupDrop() {
  const overlay = $("#drop-overlay");
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).some((t) => t === "Files" || t === "text/uri-list" || t === "text/plain");
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    depth++;
    overlay.hidden = false;
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) overlay.hidden = true;
  });
  document.addEventListener("dragover", (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    const files = Array.from(e.dataTransfer.files).filter((f) => f.name.toLowerCase().endsWith(".torrent"));
    const text = e.dataTransfer.getData("text/uri-list") || e.dataTransfer.getData("text/plain") || "";
    const links = text.split(/\s+/).filter((s) => /^(magnet:|https?:\/\/)/i.test(s));
    if (!files.length && !links.length) {
      toast("Drop .torrent files or magnet links", "error");
      return;
    }
    addTorrents(files, links, { dir: "", paused: false });
  });
}

// ------------------------------------------------------------------ session settings

async function openSettings() {
  const dialog = $("#settings-dialog");
  let values;
  try {
    values = await rpc.call("session-get");
  } catch (err) {
    report(err, "Reading the settings");
    return;
  }
  updateSession(values);
  for (const input of $$("[data-key]", dialog)) {
    const value = values[input.dataset.key];
    if (input.type === "checkbox") input.checked = Boolean(value);
    else if ("minutes" in input.dataset) input.value = clockTime(value ?? 0);
    else input.value = value ?? "";
  }
  for (const group of $$("[data-days]", dialog)) {
    const days = values[group.dataset.days] ?? 0;
    for (const box of $$("input", group)) box.checked = (days & Number(box.value)) !== 0;
  }
  checkFreeSpace();
  dialog.showModal();
}

async function saveSettings(e) {
  e.preventDefault();
  const dialog = $("#settings-dialog");
  const changes = {};
  for (const input of $$("[data-key]", dialog)) {
    if (input.disabled) continue;
    const key = input.dataset.key;
    let value;
    if (input.type === "checkbox") value = input.checked;
    else if (input.type === "number") value = Number.parseInt(input.value, 10);
    else if ("minutes" in input.dataset) value = minutesOf(input.value);
    else value = input.value.trim();
    if ((input.type === "number" || "minutes" in input.dataset) && !Number.isInteger(value)) {
      const what = input.closest("label")?.textContent.trim() || input.getAttribute("aria-label") || key;
      toast(`${what}: ${input.type === "time" ? "a time of day" : "a whole number"}, please`, "error");
      input.focus();
      return;
    }
    if (value !== app.session[key]) changes[key] = value;
  }
  for (const group of $$("[data-days]", dialog)) {
    let days = 0;
    for (const box of $$("input", group)) if (box.checked) days |= Number(box.value);
    if (days !== app.session[group.dataset.days]) changes[group.dataset.days] = days;
  }
  try {
    if (Object.keys(changes).length) await rpc.call("session-set", changes);
    dialog.close();
    toast(Object.keys(changes).length ? "Settings saved" : "Nothing changed");
  } catch (err) {
    report(err, "Saving the settings");
  }
  app.polls = 0; // re-read the session on the next poll
  poll();
}

/** Minutes after midnight as "HH:MM" (a time input's value), and back (NaN if empty). */
function clockTime(minutes) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(minutes / 60))}:${pad(minutes % 60)}`;
}
function minutesOf(text) {
  const m = /^(\d{1,2}):(\d{2})/.exec(text);
  return m ? Number(m[1]) * 60 + Number(m[2]) : Number.NaN;
}

let freeTimer = null;
function checkFreeSpace() {
  clearTimeout(freeTimer);
  freeTimer = setTimeout(async () => {
    const path = $("#settings-dir").value.trim();
    const out = $("#settings-free");
    if (!path) return setText(out, "");
    try {
      const answer = await rpc.call("free-space", { path });
      setText(out, `${fmt.size(answer["size-bytes"])} free of ${fmt.size(answer.total_size)}`);
    } catch (err) {
      setText(out, err instanceof RpcError ? err.message : "cannot tell");
    }
  }, 250);
}

async function toggleAltSpeed() {
  const on = !app.session["alt-speed-enabled"];
  try {
    await rpc.call("session-set", { "alt-speed-enabled": on });
    toast(on ? "Alternative speed limits on" : "Alternative speed limits off");
  } catch (err) {
    report(err, "Switching the speed limits");
  }
  app.polls = 0;
  poll();
}

// ------------------------------------------------------------------ keyboard

const SHORTCUTS = {
  a: () => openAdd(),
  s: () => act("start", list_.selectedIds()),
  p: () => act("stop", list_.selectedIds()),
  v: () => act("verify", list_.selectedIds()),
  m: () => act("move", list_.selectedIds()),
  l: () => act("label", list_.selectedIds()),
  t: () => toggleAltSpeed(),
  i: () => openDetailOfSelection(),
  Delete: () => act("remove", list_.selectedIds()),
  ArrowDown: () => list_.step(1),
  j: () => list_.step(1),
  ArrowUp: () => list_.step(-1),
  k: () => list_.step(-1),
  Enter: () => openDetailOfSelection(),
  "/": () => $("#search").focus(),
  "?": () => $("#help-dialog").showModal(),
  ",": () => openSettings(),
  Escape: () => (detail.isOpen ? detail.close() : list_.setSelection([])),
};

function onKey(e) {
  if (document.querySelector("dialog[open]")) return; // the dialog handles its own keys
  const target = e.target;
  if (target.closest && target.closest("input, textarea, select")) {
    if (e.key === "Escape") target.blur();
    return;
  }
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "a") {
    e.preventDefault();
    list_.selectAll();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const handler = SHORTCUTS[e.key];
  if (!handler) return;
  e.preventDefault();
  handler();
}

function openDetailOfSelection() {
  const ids = list_.selectedIds();
  if (ids.length) detail.open(ids[ids.length - 1]);
}

// ------------------------------------------------------------------ wiring

const list_ = new TorrentList($("#torrents"), {
  onAction: (action, ids) => act(action, ids),
  onSelectionChange: (ids) => {
    for (const b of $$("[data-bulk]")) if (b.dataset.bulk !== "add") b.disabled = !ids.length;
    setText($("#selection-count"), ids.length ? `${ids.length} selected` : "");
    if (ids.length === 1 && detail.isOpen) detail.open(ids[0]);
  },
  onOpen: (id) => detail.open(id),
});
const detail = new DetailPane($("#detail"), app);
const graph = new RateGraph($("#graph"));

for (const button of $$("[data-bulk]")) {
  button.addEventListener("click", () => {
    const action = button.dataset.bulk;
    if (action === "add") openAdd();
    else if (action === "details") openDetailOfSelection();
    else act(action, list_.selectedIds());
  });
}
$("#search").addEventListener("input", (e) => list_.setFilter({ search: e.target.value }));
$("#state-filter").addEventListener("change", (e) => list_.setFilter({ state: e.target.value }));
$("#label-filter").addEventListener("change", (e) => list_.setFilter({ label: e.target.value }));
$("#alt-speed").addEventListener("click", toggleAltSpeed);
$("#open-settings").addEventListener("click", openSettings);
$("#open-help").addEventListener("click", () => $("#help-dialog").showModal());
$("#add-form").addEventListener("submit", submitAdd);
$("#add-file").addEventListener("change", (e) => {
  setText($("#add-chosen"), Array.from(e.target.files, (f) => f.name).join(", "));
});
$("#remove-form").addEventListener("submit", (e) => {
  e.preventDefault();
  confirmRemove();
});
$("#move-form").addEventListener("submit", (e) => {
  e.preventDefault();
  confirmMove();
});
$("#label-form").addEventListener("submit", (e) => {
  e.preventDefault();
  confirmLabel();
});
$("#settings-form").addEventListener("submit", saveSettings);
$("#settings-dir").addEventListener("input", checkFreeSpace);
for (const button of $$("[data-dismiss]")) button.addEventListener("click", () => button.closest("dialog").close());
document.addEventListener("keydown", onKey);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) poll();
});
setupDrop();
list_.setSelection([]);
poll();
