// The label grid: a page of thumbnails, all ticked; the labeler unticks the ones that are not the page's class and
// accepts the page with one key. Each ticked thumbnail becomes its own answer (the item on screen, the class on
// screen when the key went down), numbered with this tab's sequence numbers and kept in an outbox (sessionStorage)
// that is sent as one trigger batch ("sync") until the data from Python acknowledges it. See
// app/label_grid/__init__.py for the data contract.
//
// Streamlit calls the default export again with new data after every rerun, so what must outlive a rerun lives in
// one Grid object per component key, at module level. One keydown listener on document serves them all.

const STORE_PREFIX = "wb-label-grid:";
const TEXT_INPUT_TYPES = new Set(["text", "password", "number", "search", "email", "url", "tel", ""]);
const grids = new Map();
let listening = false;
let activeGrid = null;

function newId() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  return "g" + Date.now().toString(36) + Math.random().toString(36).slice(2);
}

function readJSON(key) {
  try {
    const raw = sessionStorage.getItem(key);
    return raw ? JSON.parse(raw) : null;
  } catch (e) {
    return null;
  }
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// A key typed into a text field (or an open selectbox list) is the field's, not the grid's.
function inTextField(event) {
  const path = event.composedPath ? event.composedPath() : [];
  const el = path.length ? path[0] : document.activeElement;
  if (!el || el.nodeType !== 1) return false;
  if ((el.getAttribute("role") || "").toLowerCase() === "combobox") return el.getAttribute("aria-expanded") === "true";
  if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
  return el.tagName === "INPUT" && TEXT_INPUT_TYPES.has((el.getAttribute("type") || "").toLowerCase());
}

class Grid {
  constructor(instance) {
    this.instance = instance;
    this.storeKey = STORE_PREFIX + instance;
    const saved = readJSON(this.storeKey);
    this.clientId = (saved && saved.clientId) || newId();
    this.nextSeq = (saved && saved.nextSeq) || 1;
    this.outbox = (saved && Array.isArray(saved.outbox)) ? saved.outbox : [];
    this.seenRefusals = new Set((saved && saved.seenRefusals) || []);
    // context (the data's "context": the class or the item the page was chosen for) -> item ids left unticked on
    // an accepted page: sent with every batch, so the next pages of that context do not show them again
    this.passed = (saved && saved.passed) || {};
    this.data = null;
    this.pageKey = null;
    this.items = []; // the thumbnails on screen, in order
    this.ticked = new Set(); // item ids ticked
    this.cursor = 0;
    this.pageClass = null;
    this.waiting = false; // accepted: nothing is on screen until the next page comes
    this.paintedAt = Infinity;
    this.shownAt = 0;
    this.inflightAt = 0;
    this.log = []; // accepted pages {seqs, shown, ticked, page_class, page_key}: for tests and the benchmark
    this.ignored = []; // keys not taken {reason, key}
    this.pages = 0; // pages painted
    this.timers = [];
    this.root = null;
    this.persist();
  }

  persist() {
    try {
      sessionStorage.setItem(this.storeKey, JSON.stringify({ clientId: this.clientId, nextSeq: this.nextSeq,
        outbox: this.outbox, seenRefusals: Array.from(this.seenRefusals).slice(-200), passed: this.passed }));
    } catch (e) {
      /* storage full or disabled: the outbox still lives in memory */
    }
  }

  settings() {
    const d = (this.data && this.data.settings) || {};
    return { guard_ms: d.guard_ms ?? 120, resend_ms: d.resend_ms ?? 2500 };
  }

  attach(parentElement, setTriggerValue) {
    const root = parentElement.querySelector(".lg-root");
    this.setTrigger = setTriggerValue;
    activeGrid = this;
    if (root !== this.root) {
      this.root = root;
      this.el = {
        title: root.querySelector(".lg-title"), unsent: root.querySelector(".lg-unsent"),
        classes: root.querySelector(".lg-classes"), accept: root.querySelector(".lg-accept"),
        notice: root.querySelector(".lg-notice"), grid: root.querySelector(".lg-grid"),
        placeholder: root.querySelector(".lg-placeholder"), legend: root.querySelector(".lg-legend"),
      };
      root.addEventListener("click", (event) => this.onClick(event));
      this.builtFor = null;
      if (this.data) this.paint();
    }
    this.detach();
    this.timers.push(setInterval(() => this.maybeResend(), Math.max(500, Math.floor(this.settings().resend_ms / 2))));
  }

  detach() {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  // ----- data from Python -------------------------------------------------------------------------------------------
  update(data) {
    const first = this.data === null;
    this.data = data;
    if (data.client_id === this.clientId) {
      const acked = data.acked_seq || 0;
      this.outbox = this.outbox.filter((a) => a.seq > acked);
      this.nextSeq = Math.max(this.nextSeq, acked + 1);
      this.inflightAt = 0;
      for (const r of data.refusals || []) {
        if (this.seenRefusals.has(r.seq)) continue;
        this.seenRefusals.add(r.seq);
        this.setNotice(`Not stored: ${r.reason}`);
      }
      this.persist();
    }
    if (data.error) this.setNotice(data.error);
    if (this.builtFor !== `${data.project_id}:${(data.classes || []).length}`) this.buildControls();
    if (data.page_key !== this.pageKey || this.waiting) this.showPage(data);
    this.drawStatus();
    this.root.dataset.ready = "1";
    if (first && this.outbox.length) this.send();
  }

  showPage(data) {
    const pending = new Set(this.outbox.map((a) => a.entry_id));
    this.pageKey = data.page_key;
    this.root.dataset.pageKey = data.page_key || "";
    this.pageClass = data.page_class ?? null;
    this.items = (data.items || []).filter((item) => !pending.has(item.item_id));
    this.ticked = new Set(this.items.filter((item) => !item.locked).map((item) => item.item_id));
    this.cursor = 0;
    this.waiting = false;
    this.paintedAt = Infinity; // no key counts until this page has been painted, and then only after the guard
    this.paint();
    const key = this.pageKey;
    requestAnimationFrame(() => requestAnimationFrame(() => {
      if (this.pageKey === key && !this.waiting) {
        this.paintedAt = performance.now();
        this.shownAt = Date.now();
        this.pages += 1;
      }
    }));
  }

  // ----- drawing ----------------------------------------------------------------------------------------------------
  buildControls() {
    const d = this.data;
    this.builtFor = `${d.project_id}:${(d.classes || []).length}`;
    this.el.classes.textContent = "";
    for (const c of d.classes || []) {
      const b = document.createElement("button");
      b.className = "lg-btn lg-class";
      b.type = "button";
      b.dataset.classIndex = String(c.index);
      b.append(document.createTextNode(c.name));
      if (c.key) {
        const k = document.createElement("kbd");
        k.textContent = c.key;
        b.append(k);
      }
      this.el.classes.append(b);
    }
    this.el.legend.innerHTML = ["a class key sets the page's class", "<kbd>←</kbd><kbd>→</kbd><kbd>↑</kbd><kbd>↓</kbd> move",
      "<kbd>Space</kbd> or a click ticks / unticks", "<kbd>Enter</kbd> labels every ticked item as the page's class",
      "unticked items stay unlabeled (back to the pool; not shown again here)", "keys work anywhere but in a text field"].join(" · ");
  }

  paint() {
    const el = this.el;
    if (!el) return;
    el.grid.textContent = "";
    this.items.forEach((item, n) => {
      const cell = document.createElement("div");
      cell.className = "lg-cell";
      cell.dataset.itemId = String(item.item_id);
      cell.dataset.index = String(n);
      cell.setAttribute("role", "gridcell");
      if (item.thumb) {
        const img = document.createElement("img");
        img.src = item.thumb;
        img.alt = item.caption || "";
        img.draggable = false;
        cell.append(img);
      }
      const mark = document.createElement("span");
      mark.className = "lg-mark";
      const cap = document.createElement("div");
      cap.className = "lg-cap";
      cap.textContent = item.locked ? `${item.caption}: ${item.locked}` : (item.seed ? `${item.caption} (this one)` : item.caption);
      cell.title = cap.textContent;
      cell.append(mark, cap);
      el.grid.append(cell);
    });
    el.placeholder.textContent = this.items.length ? "" : (this.waiting ? "Saving, then the next page…"
      : (this.data && this.data.empty_reason) || "Nothing to show.");
    this.drawMarks();
  }

  drawMarks() {
    const el = this.el;
    if (!el) return;
    for (const cell of el.grid.children) {
      const n = Number(cell.dataset.index);
      const item = this.items[n];
      const on = this.ticked.has(item.item_id);
      cell.classList.toggle("lg-ticked", on);
      cell.classList.toggle("lg-locked", !!item.locked);
      cell.classList.toggle("lg-seed", !!item.seed);
      cell.classList.toggle("lg-cursor", n === this.cursor);
      cell.dataset.ticked = on ? "1" : "0";
      cell.setAttribute("aria-selected", on ? "true" : "false");
      cell.querySelector(".lg-mark").textContent = item.locked ? "" : (on ? "✓" : "✗");
    }
    const names = (this.data.classes || []).map((c) => c.name);
    for (const b of el.classes.querySelectorAll(".lg-class")) {
      b.classList.toggle("lg-on", Number(b.dataset.classIndex) === this.pageClass);
    }
    const n = this.items.filter((item) => this.ticked.has(item.item_id)).length;
    const cls = this.pageClass === null ? "(pick a class)" : names[this.pageClass];
    el.accept.innerHTML = (n ? `Label ${n} as ${escapeHtml(cls)}` : "None of these: next page") + "<kbd>Enter</kbd>";
    el.accept.disabled = !this.items.length || this.pageClass === null || this.waiting;
    this.root.dataset.pageClass = this.pageClass === null ? "" : String(this.pageClass);
  }

  drawStatus() {
    const d = this.data;
    if (!this.el || !d) return;
    const what = { grid: "the model's likeliest items of one class", like: "an item and its nearest neighbours",
      items: "the items chosen" }[d.mode] || "";
    this.el.title.textContent = `${this.items.length} item${this.items.length === 1 ? "" : "s"}: ${what}`;
    this.el.unsent.textContent = this.outbox.length ? `${this.outbox.length} unsent` : "";
    this.root.dataset.unsent = String(this.outbox.length);
  }

  setNotice(text) {
    if (this.el) this.el.notice.textContent = text;
  }

  ignore(reason, key) {
    this.ignored.push({ reason, key, at: performance.now() });
    if (this.ignored.length > 200) this.ignored.shift();
  }

  // ----- input ------------------------------------------------------------------------------------------------------
  onKey(event) {
    if (event.defaultPrevented || event.altKey || event.metaKey || event.ctrlKey || inTextField(event)) return;
    const action = this.actionFor(event.key);
    if (!action) return;
    event.preventDefault();
    event.stopPropagation();
    if (event.repeat && action.kind !== "move") return this.ignore("auto-repeat", event.key);
    this.act(action, event.timeStamp, event.key);
  }

  actionFor(key) {
    if (!this.data) return null;
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -this.columns(), ArrowDown: this.columns() };
    if (key in moves) return { kind: "move", by: moves[key] };
    if (key === " ") return { kind: "toggle" };
    if (key === "Enter") return { kind: "accept" };
    const lower = key.length === 1 ? key.toLowerCase() : key;
    const cls = (this.data.classes || []).find((c) => c.key === lower);
    return cls ? { kind: "class", index: cls.index } : null;
  }

  columns() {
    const cells = this.el ? Array.from(this.el.grid.children) : [];
    if (!cells.length) return 1;
    const top = cells[0].offsetTop;
    const n = cells.filter((c) => c.offsetTop === top).length;
    return Math.max(1, n);
  }

  onClick(event) {
    const target = event.target.closest ? event.target : null;
    if (!target) return;
    const cell = target.closest(".lg-cell");
    if (cell && this.root.contains(cell)) {
      return this.act({ kind: "toggle", index: Number(cell.dataset.index) }, event.timeStamp, "click");
    }
    const button = target.closest("button");
    if (!button || !this.root.contains(button)) return;
    if (button.dataset.classIndex !== undefined) {
      return this.act({ kind: "class", index: Number(button.dataset.classIndex) }, event.timeStamp, "click");
    }
    if (button.dataset.action) this.act({ kind: button.dataset.action }, event.timeStamp, "click");
  }

  act(action, timeStamp, key) {
    if (action.kind === "class") {
      this.pageClass = action.index;
      return this.drawMarks();
    }
    if (this.waiting) return this.ignore("saving", key);
    if (!this.items.length) return this.ignore("nothing on screen", key);
    if (this.paintedAt === Infinity || timeStamp - this.paintedAt < this.settings().guard_ms) {
      return this.ignore("guard", key); // a press meant for the page before (a double press) or not yet seen
    }
    if (action.kind === "move") {
      this.cursor = Math.min(this.items.length - 1, Math.max(0, this.cursor + action.by));
      return this.drawMarks();
    }
    if (action.kind === "toggle") {
      const n = action.index ?? this.cursor;
      const item = this.items[n];
      this.cursor = n;
      if (!item || item.locked) return this.ignore("locked", key);
      if (this.ticked.has(item.item_id)) this.ticked.delete(item.item_id);
      else this.ticked.add(item.item_id);
      return this.drawMarks();
    }
    if (action.kind === "all" || action.kind === "none") {
      this.ticked = new Set(action.kind === "all" ? this.items.filter((i) => !i.locked).map((i) => i.item_id) : []);
      return this.drawMarks();
    }
    if (action.kind === "accept") return this.accept(key);
  }

  accept(key) {
    if (this.pageClass === null) {
      this.setNotice("Pick the class of the page first (its key or its button).");
      return this.ignore("no class", key);
    }
    const shown = this.items.map((item) => item.item_id);
    const ticked = this.items.filter((item) => this.ticked.has(item.item_id) && !item.locked);
    const d = this.data;
    const context = d.context || "";
    const passed = new Set(this.passed[context] || []);
    for (const item of this.items) if (!this.ticked.has(item.item_id) && !item.locked) passed.add(item.item_id);
    this.passed[context] = Array.from(passed).slice(-1000);
    const seconds = this.shownAt ? Math.round((Date.now() - this.shownAt) / 10) / 100 / ticked.length : null;
    const seqs = [];
    for (const item of ticked) {
      const a = { seq: this.nextSeq++, entry_id: item.item_id, kind: "label", value: [this.pageClass], seconds,
        project_id: d.project_id, annotator: d.annotator, arm: d.arm };
      seqs.push(a.seq);
      this.outbox.push(a);
    }
    this.persist();
    this.log.push({ seqs, shown, ticked: ticked.map((item) => item.item_id), page_class: this.pageClass,
      page_key: this.pageKey, at: performance.now() });
    const names = (d.classes || []).map((c) => c.name);
    this.setNotice(`Labeled ${ticked.length} as ${names[this.pageClass]}; ${shown.length - ticked.length} left unlabeled.`);
    this.waiting = true;
    this.items = [];
    this.ticked = new Set();
    this.paint();
    this.drawStatus();
    this.send(true);
  }

  // ----- sending ----------------------------------------------------------------------------------------------------
  send(always = false) {
    if (!this.setTrigger || !this.root || !this.root.isConnected || !(this.outbox.length || always)) return;
    this.inflightAt = Date.now();
    this.setTrigger("sync", { client_id: this.clientId, answers: this.outbox.slice(), passed: this.passed,
      sent_at: Date.now() });
  }

  maybeResend() {
    if (!this.outbox.length) return;
    if (this.inflightAt && Date.now() - this.inflightAt < this.settings().resend_ms) return;
    this.send();
  }
}

function onKeyDown(event) {
  const grid = activeGrid;
  if (grid && grid.root && grid.root.isConnected) grid.onKey(event);
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const instance = (data && data.instance) || "label_grid";
  let grid = grids.get(instance);
  if (!grid) {
    grid = new Grid(instance);
    grids.set(instance, grid);
  }
  if (!listening) {
    document.addEventListener("keydown", onKeyDown, true);
    listening = true;
  }
  grid.attach(parentElement, setTriggerValue);
  if (data) grid.update(data);
  globalThis.__labelGrids = grids;
  return () => grid.detach();
}
