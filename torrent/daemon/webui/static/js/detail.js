// The detail pane of one torrent: general info with the pieces map, files (progress,
// wanted and priority), peers and trackers. It asks torrent-get only for the fields of the
// tab on show, for that torrent only, on each poll while the pane is open.

import { $, clear, el, setText } from "./dom.js";
import * as fmt from "./format.js";

const GENERAL_FIELDS = [
  "id",
  "name",
  "hashString",
  "totalSize",
  "sizeWhenDone",
  "percentDone",
  "pieceCount",
  "pieceSize",
  "pieces",
  "creator",
  "comment",
  "dateCreated",
  "addedDate",
  "doneDate",
  "downloadDir",
  "downloadedEver",
  "uploadedEver",
  "corruptEver",
  "uploadRatio",
  "isPrivate",
  "errorString",
  "magnetLink",
  "labels",
];

const TAB_FIELDS = {
  general: GENERAL_FIELDS,
  files: ["id", "name", "files", "fileStats"],
  peers: ["id", "name", "peers"],
  trackers: ["id", "name", "trackerStats"],
};

const PRIORITIES = [
  ["-1", "Low"],
  ["0", "Normal"],
  ["1", "High"],
];

export class DetailPane {
  /**
   * @param root the pane's element (with its tab buttons and panels).
   * @param app { rpc, report(error, what), refresh() }
   */
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.id = null;
    this.tab = "general";
    this.fileRows = [];
    for (const button of root.querySelectorAll("[data-tab]")) {
      button.addEventListener("click", () => this.show(button.dataset.tab));
    }
    $("[data-close]", root).addEventListener("click", () => this.close());
    $(".files tbody", root).addEventListener("change", (e) => this._onFileChange(e));
  }

  get isOpen() {
    return !this.root.hidden;
  }

  open(id) {
    if (this.id !== id) {
      this.id = id;
      this._resetPanels();
    }
    this.root.hidden = false;
    document.body.classList.add("detail-open");
    this.refresh();
  }

  close() {
    this.root.hidden = true;
    this.id = null;
    document.body.classList.remove("detail-open");
  }

  show(tab) {
    this.tab = tab;
    for (const button of this.root.querySelectorAll("[data-tab]")) {
      button.setAttribute("aria-selected", button.dataset.tab === tab ? "true" : "false");
    }
    for (const panel of this.root.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== tab;
    this.refresh();
  }

  _resetPanels() {
    clear($(".files tbody", this.root));
    this.fileRows = [];
    clear($(".peers tbody", this.root));
    clear($(".trackers tbody", this.root));
    setText($("[data-detail='title']", this.root), "");
  }

  async refresh() {
    if (!this.isOpen || this.id === null) return;
    const id = this.id;
    const tab = this.tab;
    let answer;
    try {
      answer = await this.app.rpc.call("torrent-get", { ids: [id], fields: TAB_FIELDS[tab] });
    } catch (err) {
      this.app.report(err, "details");
      return;
    }
    if (this.id !== id || this.tab !== tab) return; // the user moved on meanwhile
    const t = answer.torrents && answer.torrents[0];
    if (!t) {
      this.close();
      return;
    }
    setText($("[data-detail='title']", this.root), t.name);
    if (tab === "general") this._general(t);
    else if (tab === "files") this._files(t);
    else if (tab === "peers") this._peers(t);
    else this._trackers(t);
  }

  _general(t) {
    const values = {
      hash: t.hashString,
      size: `${fmt.size(t.totalSize)} (${fmt.size(t.sizeWhenDone)} wanted)`,
      pieces: `${t.pieceCount} × ${fmt.size(t.pieceSize)}`,
      progress: fmt.percent(t.percentDone),
      downloaded: fmt.size(t.downloadedEver),
      uploaded: `${fmt.size(t.uploadedEver)} (ratio ${fmt.ratio(t.uploadRatio)})`,
      corrupt: fmt.size(t.corruptEver),
      location: t.downloadDir,
      added: fmt.date(t.addedDate),
      completed: fmt.date(t.doneDate),
      created: `${fmt.date(t.dateCreated)}${t.creator ? ` by ${t.creator}` : ""}`,
      comment: t.comment || "–",
      privacy: t.isPrivate ? "Private (trackers only)" : "Public",
      labels: t.labels.join(", ") || "–",
      error: t.errorString || "–",
      magnet: t.magnetLink,
    };
    for (const [key, text] of Object.entries(values)) {
      const node = $(`[data-info='${key}']`, this.root);
      if (node) setText(node, text);
    }
    drawPieces($("canvas.pieces", this.root), t.pieces, t.pieceCount);
  }

  _files(t) {
    const tbody = $(".files tbody", this.root);
    if (this.fileRows.length !== t.files.length) {
      clear(tbody);
      // Multi-file names start with the torrent's name: show the path inside it.
      const prefix = `${t.name}/`;
      this.fileRows = t.files.map((f, index) => {
        const shown = f.name.startsWith(prefix) ? f.name.slice(prefix.length) : f.name;
        const wanted = el("input", { type: "checkbox", dataset: { file: String(index), kind: "wanted" } });
        const priority = el(
          "select",
          { dataset: { file: String(index), kind: "priority" }, attrs: { "aria-label": "Priority" } },
          ...PRIORITIES.map(([value, label]) => el("option", { value }, label)),
        );
        const bar = el("progress", { max: 1, value: 0 });
        const pct = el("span");
        const row = el(
          "tr",
          {},
          el("td", { className: "file-wanted" }, wanted),
          el("td", { className: "file-name", title: f.name }, shown),
          el("td", { className: "num" }, fmt.size(f.length)),
          el("td", { className: "col-progress" }, bar, pct),
          el("td", {}, priority),
        );
        tbody.append(row);
        return { wanted, priority, bar, pct };
      });
    }
    t.files.forEach((f, i) => {
      const row = this.fileRows[i];
      const stats = t.fileStats[i];
      const fraction = f.length ? f.bytesCompleted / f.length : 1;
      row.bar.value = fraction;
      setText(row.pct, fmt.percent(fraction));
      // Leave a control alone while the user is on it.
      if (document.activeElement !== row.wanted) row.wanted.checked = Boolean(stats.wanted);
      if (document.activeElement !== row.priority) row.priority.value = String(stats.priority);
    });
  }

  async _onFileChange(e) {
    const target = e.target;
    const index = Number(target.dataset.file);
    if (!Number.isInteger(index) || this.id === null) return;
    const args = { ids: [this.id] };
    if (target.dataset.kind === "wanted") args[target.checked ? "files-wanted" : "files-unwanted"] = [index];
    else args[{ "-1": "priority-low", 0: "priority-normal", 1: "priority-high" }[target.value]] = [index];
    try {
      await this.app.rpc.call("torrent-set", args);
    } catch (err) {
      this.app.report(err, "changing the file");
    }
    this.refresh();
  }

  _peers(t) {
    const tbody = $(".peers tbody", this.root);
    const rows = t.peers.map((p) =>
      el(
        "tr",
        {},
        el("td", {}, p.address.includes(":") ? `[${p.address}]:${p.port}` : `${p.address}:${p.port}`),
        el("td", {}, p.clientName || "–"),
        el("td", { title: peerFlagsTitle(p) }, p.flagStr || ""),
        el(
          "td",
          { dataset: { field: "encrypted" }, title: p.isEncrypted ? "Encrypted (MSE, RC4)" : "Not encrypted" },
          p.isEncrypted ? "RC4" : "–",
        ),
        el("td", { className: "num" }, fmt.rate(p.rateToClient)),
        el("td", { className: "num" }, fmt.rate(p.rateToPeer)),
        el("td", { className: "num" }, fmt.percent(p.progress)),
      ),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 7, className: "none" }, "No peers connected")));
    tbody.replaceChildren(...rows);
  }

  _trackers(t) {
    const tbody = $(".trackers tbody", this.root);
    // The daemon walks the tiers until one tracker answers: the others wait their turn.
    const anyAnswered = t.trackerStats.some((s) => s.lastAnnounceSucceeded);
    const now = Date.now() / 1000;
    const rows = t.trackerStats.map((s) => {
      let status = "Not announced yet";
      if (s.hasAnnounced) {
        status = s.lastAnnounceSucceeded
          ? `${s.lastAnnounceResult} (${s.lastAnnouncePeerCount} peers)`
          : `Failed: ${s.lastAnnounceResult}`;
      } else if (anyAnswered) status = "Standby (another tracker answered)";
      const next = s.nextAnnounceTime > now ? `in ${fmt.duration(s.nextAnnounceTime - now)}` : "–";
      return el(
        "tr",
        { className: s.hasAnnounced && !s.lastAnnounceSucceeded ? "failed" : "" },
        el("td", { className: "num" }, String(s.tier + 1)),
        el("td", { className: "tracker-url", title: s.announce }, s.announce),
        el("td", {}, status),
        el("td", {}, s.lastAnnounceTime ? fmt.date(s.lastAnnounceTime) : "–"),
        el("td", {}, next),
        el("td", { className: "num" }, s.seederCount >= 0 ? String(s.seederCount) : "–"),
        el("td", { className: "num" }, s.leecherCount >= 0 ? String(s.leecherCount) : "–"),
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colSpan: 7, className: "none" }, "No trackers")));
    tbody.replaceChildren(...rows);
  }
}

function peerFlagsTitle(p) {
  const words = [];
  if (p.isDownloadingFrom) words.push("D: downloading from this peer");
  if (p.isUploadingTo) words.push("U: uploading to this peer");
  if (p.isIncoming) words.push("I: the peer connected to us");
  if (p.isEncrypted) words.push("E: encrypted");
  if (p.isUTP) words.push("T: over uTP");
  return words.join("\n");
}

/** Draw a bitfield (base64, BEP 3 bit order) as a bar: each pixel column shows its share of pieces had. */
export function drawPieces(canvas, b64, count) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.floor(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.floor(canvas.clientHeight * ratio));
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = canvas.getContext("2d");
  const style = getComputedStyle(canvas);
  ctx.fillStyle = style.getPropertyValue("--missing").trim() || "#ddd";
  ctx.fillRect(0, 0, width, height);
  if (!count || !b64) return;
  const bits = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const have = (i) => (bits[i >> 3] >> (7 - (i & 7))) & 1;
  const color = style.getPropertyValue("--have").trim() || "#2563eb";
  for (let x = 0; x < width; x++) {
    const from = Math.floor((x * count) / width);
    const to = Math.max(from + 1, Math.floor(((x + 1) * count) / width));
    let n = 0;
    for (let i = from; i < to; i++) n += have(i);
    if (!n) continue;
    ctx.globalAlpha = 0.25 + (0.75 * n) / (to - from);
    ctx.fillStyle = color;
    ctx.fillRect(x, 0, 1, height);
  }
  ctx.globalAlpha = 1;
  canvas.title = `${count} pieces`;
}
