// The torrent list: one row per torrent, keyed by info hash, updated in place on every
// poll (cells are rewritten only when their text changed), sorted and filtered here.
//
// Windowed: only the rows in view (and OVERSCAN more on each side) are in the document;
// two spacer rows stand for the others, so ten thousand torrents cost a few dozen rows
// of DOM and a scroll repaints only what comes into view. Every row has the same height
// (one line, no wrapping), measured from a rendered row.
//
// Hooks for tests and scripts: each row has data-hash (the 40- or 64-hex hash) and
// data-id; cells carry data-field ("name", "progress" as "42%", "state", ...); the row's
// buttons carry data-action ("start", "stop", "verify", "remove").

import { el, setText } from "./dom.js";
import * as fmt from "./format.js";

/** The fields the list shows: all that torrent-get is asked for on each poll. */
export const LIST_FIELDS = [
  "id",
  "hashString",
  "name",
  "status",
  "error",
  "errorString",
  "percentDone",
  "recheckProgress",
  "metadataPercentComplete",
  "sizeWhenDone",
  "rateDownload",
  "rateUpload",
  "eta",
  "uploadRatio",
  "peersConnected",
  "addedDate",
  "labels",
  "queuePosition",
];

const COLUMNS = [
  { key: "name", label: "Name", value: (t) => t.name.toLowerCase() },
  { key: "size", label: "Size", value: (t) => t.sizeWhenDone, text: (t) => fmt.size(t.sizeWhenDone) },
  { key: "progress", label: "Progress", value: (t) => t.percentDone },
  { key: "state", label: "State", value: (t) => fmt.stateText(t), text: (t) => fmt.stateText(t) },
  { key: "down", label: "Down", value: (t) => t.rateDownload, text: (t) => fmt.rate(t.rateDownload) },
  { key: "up", label: "Up", value: (t) => t.rateUpload, text: (t) => fmt.rate(t.rateUpload) },
  {
    key: "eta",
    label: "ETA",
    value: (t) => (t.eta < 0 ? Infinity : t.eta),
    text: (t) => (fmt.isRunning(t) ? fmt.eta(t.eta) : ""),
  },
  { key: "ratio", label: "Ratio", value: (t) => t.uploadRatio, text: (t) => fmt.ratio(t.uploadRatio) },
  { key: "peers", label: "Peers", value: (t) => t.peersConnected, text: (t) => String(t.peersConnected) },
  { key: "added", label: "Added", value: (t) => t.addedDate, text: (t) => fmt.date(t.addedDate) },
  { key: "labels", label: "Labels", value: (t) => t.labels.join(","), text: (t) => t.labels.join(", ") },
];

/** Rows kept in the document above and below the visible ones. */
const OVERSCAN = 15;
/** A row's height until one has been measured (px). */
const DEFAULT_ROW_HEIGHT = 29;

const ROW_ACTIONS = [
  ["start", "▶", "Start"],
  ["stop", "■", "Stop"],
  ["verify", "✓", "Verify"],
  ["remove", "✕", "Remove"],
];

export class TorrentList {
  /**
   * @param table the <table>; its <thead> gets the sortable headers.
   * @param handlers { onAction(action, ids), onSelectionChange(ids), onOpen(id) }
   */
  constructor(table, handlers) {
    this.table = table;
    this.tbody = table.tBodies[0];
    this.handlers = handlers;
    this.torrents = new Map(); // id -> torrent
    this.rows = new Map(); // id -> <tr>, for the rows in the document only
    this.selected = new Set();
    this.anchor = null; // the row a shift-click range starts from
    this.sort = { key: "queue", dir: 1 };
    this.filter = { state: "all", label: "", search: "" };
    this.visible = []; // ids in display order
    this.scroller = table.parentNode; // the element that scrolls
    this.rowHeight = DEFAULT_ROW_HEIGHT;
    this.measured = false;
    this.window = { start: 0, end: 0 };
    const spacer = () => el("tr", { className: "spacer", attrs: { "aria-hidden": "true" } }, el("td", { colSpan: COLUMNS.length + 2 }));
    this.padTop = spacer();
    this.padBottom = spacer();
    this.tbody.append(this.padTop, this.padBottom);
    this._buildHeader();
    this.tbody.addEventListener("click", (e) => this._onClick(e));
    this.tbody.addEventListener("dblclick", (e) => {
      const row = e.target.closest("tr[data-id]");
      if (row && !e.target.closest("button, input")) this.handlers.onOpen(Number(row.dataset.id));
    });
    let queued = false;
    const repaint = () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => {
        queued = false;
        this._paint();
      });
    };
    this.scroller.addEventListener("scroll", repaint, { passive: true });
    window.addEventListener("resize", repaint);
  }

  _buildHeader() {
    const all = el("input", { type: "checkbox", title: "Select all shown (Ctrl+A)", className: "select-all" });
    all.addEventListener("change", () => (all.checked ? this.selectAll() : this.setSelection([])));
    this.selectAllBox = all;
    const cells = [el("th", { className: "sel" }, all)];
    for (const col of COLUMNS) {
      const button = el("button", { type: "button", className: "sort" }, col.label);
      button.addEventListener("click", () => this.sortBy(col.key));
      cells.push(el("th", { className: `col-${col.key}`, dataset: { sort: col.key } }, button));
    }
    cells.push(el("th", { className: "col-actions" }, el("span", { className: "visually-hidden" }, "Actions")));
    this.table.tHead.replaceChildren(el("tr", {}, ...cells));
  }

  sortBy(key) {
    this.sort = this.sort.key === key ? { key, dir: -this.sort.dir } : { key, dir: key === "name" ? 1 : -1 };
    for (const th of this.table.tHead.querySelectorAll("th[data-sort]")) {
      const active = th.dataset.sort === this.sort.key;
      th.setAttribute("aria-sort", active ? (this.sort.dir > 0 ? "ascending" : "descending") : "none");
    }
    this.render();
  }

  setFilter(filter) {
    Object.assign(this.filter, filter);
    this.render();
  }

  /** Replace the whole list with `torrents` (every torrent the daemon has). */
  update(torrents) {
    const seen = new Set();
    for (const t of torrents) {
      seen.add(t.id);
      this.torrents.set(t.id, t);
      const row = this.rows.get(t.id);
      if (row) this._fillRow(row, t); // the others are filled when they come into view
    }
    for (const id of [...this.torrents.keys()]) {
      if (!seen.has(id)) {
        this.torrents.delete(id);
        this.rows.get(id)?.remove();
        this.rows.delete(id);
        this.selected.delete(id);
      }
    }
    this.render();
  }

  labels() {
    const out = new Set();
    for (const t of this.torrents.values()) for (const l of t.labels) out.add(l);
    return [...out].sort();
  }

  _matches(t) {
    const f = this.filter;
    if (f.state !== "all") {
      if (f.state === "active") {
        if (!(t.rateDownload > 0 || t.rateUpload > 0)) return false;
      } else if (fmt.stateKey(t) !== f.state) return false;
    }
    if (f.label && !t.labels.includes(f.label)) return false;
    if (f.search && !t.name.toLowerCase().includes(f.search.toLowerCase())) return false;
    return true;
  }

  /** Filter, sort and put the rows in order (moving only rows that are out of place). */
  render() {
    const col = COLUMNS.find((c) => c.key === this.sort.key);
    const value = col ? col.value : (t) => t.queuePosition;
    const dir = this.sort.dir;
    const shown = [...this.torrents.values()].filter((t) => this._matches(t));
    shown.sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      if (va < vb) return -dir;
      if (va > vb) return dir;
      return a.id - b.id;
    });
    this.visible = shown.map((t) => t.id);
    const shownSet = new Set(this.visible);
    this._paint();
    // A torrent hidden by the filter stays selected only while it is shown.
    const before = this.selected.size;
    for (const id of [...this.selected]) if (!shownSet.has(id)) this.selected.delete(id);
    if (before !== this.selected.size) this._selectionChanged();
    this.selectAllBox.checked = this.visible.length > 0 && this.selected.size === this.visible.length;
    const empty = this.table.parentNode.querySelector(".empty");
    if (empty) {
      empty.hidden = this.visible.length > 0;
      setText(
        empty,
        this.torrents.size
          ? "No torrent matches the search or filters."
          : "No torrents yet: drop .torrent files or magnet links here, or press a to add.",
      );
    }
  }

  /** The range of `visible` that is in view, with the overscan. */
  _range() {
    const n = this.visible.length;
    const h = this.rowHeight;
    const head = this.table.tHead.offsetHeight;
    const top = Math.max(0, this.scroller.scrollTop - head);
    const height = this.scroller.clientHeight || window.innerHeight;
    const start = Math.max(0, Math.floor(top / h) - OVERSCAN);
    const end = Math.min(n, Math.ceil((top + height) / h) + OVERSCAN);
    return { start: Math.min(start, end), end };
  }

  /** Put the rows of the visible range in the document, in order; drop the others. */
  _paint() {
    const { start, end } = this._range();
    this.window = { start, end };
    const ids = this.visible.slice(start, end);
    const wanted = new Set(ids);
    for (const [id, row] of this.rows) {
      if (!wanted.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    let cursor = this.padTop.nextElementSibling;
    for (const id of ids) {
      let row = this.rows.get(id);
      if (!row) {
        const t = this.torrents.get(id);
        row = this._makeRow(t);
        this._fillRow(row, t);
        this._showSelected(row, this.selected.has(id));
        this.rows.set(id, row);
      }
      if (row === cursor) cursor = cursor.nextElementSibling;
      else this.tbody.insertBefore(row, cursor);
    }
    this.padTop.style.height = `${start * this.rowHeight}px`;
    this.padBottom.style.height = `${(this.visible.length - end) * this.rowHeight}px`;
    if (!this.measured && ids.length) {
      const h = this.rows.get(ids[0]).getBoundingClientRect().height;
      if (h > 0) {
        this.measured = true;
        if (Math.abs(h - this.rowHeight) > 0.5) {
          this.rowHeight = h;
          this._paint();
        }
      }
    }
  }

  /** Scroll so that the `index`th visible row is in view. */
  _reveal(index) {
    const head = this.table.tHead.offsetHeight;
    const y = index * this.rowHeight;
    const view = this.scroller.clientHeight - head;
    const top = this.scroller.scrollTop;
    if (y < top) this.scroller.scrollTop = y;
    else if (y + this.rowHeight > top + view) this.scroller.scrollTop = y + this.rowHeight - view;
    this._paint();
  }

  _makeRow(t) {
    const row = el("tr", { dataset: { hash: t.hashString, id: String(t.id) }, tabIndex: -1 });
    const box = el("input", { type: "checkbox", className: "row-select", attrs: { "aria-label": "Select" } });
    row.append(el("td", { className: "sel" }, box));
    const cells = {};
    for (const col of COLUMNS) {
      let td;
      if (col.key === "progress") {
        cells.bar = el("progress", { max: 1, value: 0 });
        cells.progress = el("span", { dataset: { field: "progress" } });
        td = el("td", { className: "col-progress" }, cells.bar, cells.progress);
      } else {
        td = el("td", { className: `col-${col.key}`, dataset: { field: col.key } });
        cells[col.key] = td;
      }
      row.append(td);
    }
    const actions = el("td", { className: "col-actions" });
    for (const [action, symbol, title] of ROW_ACTIONS) {
      actions.append(
        el("button", { type: "button", title, dataset: { action }, attrs: { "aria-label": title } }, symbol),
      );
    }
    row.append(actions);
    row._cells = cells;
    row._box = box;
    return row;
  }

  _fillRow(row, t) {
    const c = row._cells;
    setText(c.name, t.name);
    c.name.title = t.name;
    for (const col of COLUMNS) if (col.text) setText(c[col.key], col.text(t));
    const checking = t.status === fmt.STATUS.CHECK;
    const fraction = checking ? t.recheckProgress : t.percentDone;
    if (c.bar.value !== fraction) c.bar.value = fraction;
    setText(c.progress, fmt.percent(t.percentDone));
    const key = fmt.stateKey(t);
    if (row.dataset.state !== key) row.dataset.state = key;
    c.state.title = t.errorString || "";
    const running = fmt.isRunning(t);
    row.querySelector('[data-action="start"]').disabled = running;
    row.querySelector('[data-action="stop"]').disabled = !running;
  }

  _onClick(e) {
    const row = e.target.closest("tr[data-id]");
    if (!row) return;
    const id = Number(row.dataset.id);
    const button = e.target.closest("button[data-action]");
    if (button) {
      this.handlers.onAction(button.dataset.action, [id]);
      return;
    }
    if (e.target.classList.contains("row-select")) {
      if (e.target.checked) this.selected.add(id);
      else this.selected.delete(id);
      this.anchor = id;
      this._selectionChanged();
      return;
    }
    if (e.shiftKey && this.anchor !== null) {
      const a = this.visible.indexOf(this.anchor);
      const b = this.visible.indexOf(id);
      if (a >= 0 && b >= 0) {
        const [lo, hi] = a < b ? [a, b] : [b, a];
        this.setSelection(this.visible.slice(lo, hi + 1), false);
        return;
      }
    }
    if (e.ctrlKey || e.metaKey) {
      if (this.selected.has(id)) this.selected.delete(id);
      else this.selected.add(id);
      this.anchor = id;
      this._selectionChanged();
      return;
    }
    this.anchor = id;
    this.setSelection([id], false);
  }

  setSelection(ids, moveAnchor = true) {
    this.selected = new Set(ids);
    if (moveAnchor) this.anchor = ids.length ? ids[ids.length - 1] : null;
    this._selectionChanged();
  }

  selectAll() {
    this.setSelection(this.visible);
  }

  /** Move the selection one row up (-1) or down (+1). */
  step(delta) {
    if (!this.visible.length) return;
    const at = this.anchor === null ? -1 : this.visible.indexOf(this.anchor);
    const next = Math.max(0, Math.min(this.visible.length - 1, at < 0 ? 0 : at + delta));
    const id = this.visible[next];
    this.setSelection([id]);
    this._reveal(next);
  }

  _showSelected(row, on) {
    row.classList.toggle("selected", on);
    row.setAttribute("aria-selected", on ? "true" : "false");
    row._box.checked = on;
  }

  selectedIds() {
    return [...this.selected];
  }

  _selectionChanged() {
    for (const [id, row] of this.rows) this._showSelected(row, this.selected.has(id));
    this.selectAllBox.checked = this.visible.length > 0 && this.selected.size === this.visible.length;
    this.handlers.onSelectionChange(this.selectedIds());
  }
}
