// The label surface: draws the held items, answers them from the keyboard or the class buttons, keeps the answers
// in an outbox (sessionStorage) with sequence numbers and sends every unacknowledged one as one trigger batch
// ("sync") until the data from Python acknowledges it. See app/label_surface/__init__.py for the data contract.
//
// Streamlit calls the default export again with new data after every rerun (after running the previous call's
// cleanup), so everything that must outlive a rerun lives in one Surface object per component key, kept at module
// level (the module is loaded once per page). One keydown listener on document (capture phase) serves them all.

const STORE_PREFIX = "wb-label-surface:";
const OWNER_PREFIX = "wb-label-surface-owner:";
const TEXT_INPUT_TYPES = new Set(["text", "password", "number", "search", "email", "url", "tel", ""]);
const MAX_CACHE = 60;
const surfaces = new Map();
let listening = false;
let activeSurface = null;

function newId() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  return "c" + Date.now().toString(36) + Math.random().toString(36).slice(2);
}

function readJSON(storage, key, fallback) {
  try {
    const raw = storage.getItem(key);
    return raw ? JSON.parse(raw) : fallback;
  } catch (e) {
    return fallback;
  }
}

function writeJSON(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch (e) {
    /* storage full or disabled: the outbox still lives in memory */
  }
}

// A real text field keeps its keys; a combobox (Streamlit's selectbox) does not once its list is closed.
function textFieldOf(event) {
  const path = event.composedPath ? event.composedPath() : [];
  const el = path.length ? path[0] : document.activeElement;
  if (!el || el.nodeType !== 1) return { text: false, combobox: null };
  const role = (el.getAttribute("role") || "").toLowerCase();
  if (role === "combobox") {
    const open = el.getAttribute("aria-expanded") === "true";
    return { text: open, combobox: el };
  }
  if (el.isContentEditable) return { text: true, combobox: null };
  const tag = el.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return { text: true, combobox: null };
  if (tag === "INPUT") {
    const type = (el.getAttribute("type") || "").toLowerCase();
    return { text: TEXT_INPUT_TYPES.has(type), combobox: null };
  }
  return { text: false, combobox: null };
}

function onKeyDown(event) {
  const surface = activeSurface;
  if (!surface || !surface.root || !surface.root.isConnected) return;
  surface.onKey(event);
}

class Surface {
  constructor(instance) {
    this.instance = instance;
    this.storeKey = STORE_PREFIX + instance;
    this.tab = newId();
    const saved = readJSON(sessionStorage, this.storeKey, null);
    let clientId = saved && saved.clientId;
    if (clientId && this.ownedElsewhere(clientId)) clientId = null; // a copied tab: its answers stay the other's
    if (clientId) {
      this.clientId = clientId;
      this.nextSeq = saved.nextSeq || 1;
      this.outbox = Array.isArray(saved.outbox) ? saved.outbox : [];
      this.seenRefusals = new Set(saved.seenRefusals || []);
    } else {
      this.clientId = newId();
      this.nextSeq = 1;
      this.outbox = [];
      this.seenRefusals = new Set();
    }
    this.persist();
    this.claimOwnership();
    this.items = new Map(); // entry id -> item (from the data, stamped with its project and annotator)
    this.cache = new Map(); // entry id -> item kept for undo after it left the data
    this.order = []; // entry ids the server holds for us, in its order
    this.current = null;
    this.paintedAt = Infinity;
    this.shownAt = 0;
    this.reopen = null; // entry id an undo asked back, not yet in the data
    this.tags = new Set();
    this.serverHistory = [];
    this.sessionLabels = 0;
    this.firstAnswerAt = null;
    this.lastSentMax = 0;
    this.inflightAt = 0;
    this.log = []; // accepted presses {seq, entry_id, kind, value, shown}: for tests and debugging
    this.ignored = []; // presses not taken {reason, key, shown}
    this.paints = []; // items drawn {entry_id, key_ts (the keydown's timeStamp, or null), drawn, painted}
    this.decoded = new Map(); // image URL -> an Image decoded ahead
    this.data = null;
    this.root = null;
    this.setTrigger = null;
    this.timers = [];
    this.store = null;
    this.notice = "";
  }

  // ----- ownership of the client id: a reload keeps it, a duplicated tab gets a new one ---------------------------
  ownedElsewhere(clientId) {
    const owner = readJSON(localStorage, OWNER_PREFIX + clientId, null);
    return !!owner && owner.tab !== this.tab && Date.now() - owner.at < 6000;
  }

  claimOwnership() {
    writeJSON(localStorage, OWNER_PREFIX + this.clientId, { tab: this.tab, at: Date.now() });
  }

  persist() {
    writeJSON(sessionStorage, this.storeKey, {
      clientId: this.clientId, nextSeq: this.nextSeq, outbox: this.outbox,
      seenRefusals: Array.from(this.seenRefusals).slice(-200),
    });
  }

  // ----- mounting ---------------------------------------------------------------------------------------------------
  attach(parentElement, setTriggerValue) {
    const root = parentElement.querySelector(".ls-root");
    const fresh = root !== this.root;
    this.root = root;
    this.setTrigger = setTriggerValue;
    activeSurface = this;
    if (fresh) {
      this.el = {
        image: root.querySelector(".ls-image"),
        placeholder: root.querySelector(".ls-placeholder"),
        caption: root.querySelector(".ls-caption"),
        progress: root.querySelector(".ls-progress"),
        counter: root.querySelector(".ls-counter"),
        unsent: root.querySelector(".ls-unsent"),
        guess: root.querySelector(".ls-guess"),
        classes: root.querySelector(".ls-classes"),
        actions: root.querySelector(".ls-actions"),
        notice: root.querySelector(".ls-notice"),
        legend: root.querySelector(".ls-legend"),
        history: root.querySelector(".ls-history"),
      };
      root.addEventListener("click", (event) => this.onClick(event));
      this.builtFor = null;
      this.remounted = true; // Streamlit drew a new element: the item on screen is drawn into it again
      this.mounts = (this.mounts || 0) + 1;
    }
    this.startTimers();
  }

  detach() {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  startTimers() {
    this.detach();
    const s = this.settings();
    this.timers.push(setInterval(() => {
      if (document.visibilityState === "visible") this.send(true);
    }, s.heartbeat_ms));
    this.timers.push(setInterval(() => this.claimOwnership(), 2000));
    this.timers.push(setInterval(() => this.maybeResend(), Math.max(500, Math.floor(s.resend_ms / 2))));
    this.timers.push(setInterval(() => this.drawCounter(), 5000));
  }

  settings() {
    const d = (this.data && this.data.settings) || {};
    return {
      guard_ms: d.guard_ms ?? 120,
      repress_ms: d.repress_ms ?? 350,
      heartbeat_ms: d.heartbeat_ms ?? 15000,
      resend_ms: d.resend_ms ?? 2500,
      accept_keys: d.accept_keys ?? ["Enter", " "],
    };
  }

  // ----- data from Python -------------------------------------------------------------------------------------------
  update(data) {
    const first = this.data === null;
    this.data = data;
    const store = `${data.project_id}:${data.annotator}`;
    if (store !== this.store) { // another project or annotator: its items are not ours to show
      this.store = store;
      this.items.clear();
      this.order = [];
      this.showItem(null);
      this.reopen = null;
      this.builtFor = null;
    }
    if (data.client_id === this.clientId) {
      const acked = data.acked_seq || 0;
      const before = this.outbox.length;
      this.outbox = this.outbox.filter((a) => a.seq > acked);
      if (this.outbox.length !== before) this.persist();
      this.inflightAt = 0;
      for (const r of data.refusals || []) {
        if (this.seenRefusals.has(r.seq)) continue;
        this.seenRefusals.add(r.seq);
        this.setNotice(`Not stored: ${r.reason}`);
        const hit = this.log.find((entry) => entry.seq === r.seq && entry.kind === "label");
        if (hit) this.sessionLabels = Math.max(0, this.sessionLabels - 1);
      }
      this.persist();
    } else {
      this.inflightAt = 0;
    }
    if (data.error) this.setNotice(data.error);
    this.serverHistory = data.history || [];
    for (const item of data.items || []) {
      const stamped = { ...item, project_id: data.project_id, annotator: data.annotator };
      this.items.set(item.entry_id, stamped);
      this.remember(stamped);
    }
    const heldIds = new Set((data.items || []).map((i) => i.entry_id));
    for (const id of Array.from(this.items.keys())) if (!heldIds.has(id)) this.items.delete(id);
    const answered = this.answeredSet();
    this.order = (data.items || []).map((i) => i.entry_id).filter((id) => !answered.has(id));
    if (this.builtFor !== store) this.buildControls();
    if (this.remounted) {
      this.remounted = false;
      if (this.current) this.paint(this.current);
    }
    // The item on screen stays unless the server no longer holds it for us (and no undo of ours is on its way).
    if (this.current) {
      const id = this.current.entry_id;
      const undoPending = this.outbox.some((a) => a.kind === "undo" && a.entry_id === id);
      if (!heldIds.has(id) && !undoPending && this.current.project_id === data.project_id) {
        this.setNotice(`${this.current.caption || "That item"} went back to the queue (your hold on it ran out).`);
        this.showItem(null);
      }
    }
    if (this.reopen !== null && heldIds.has(this.reopen)) {
      const wanted = this.reopen;
      this.reopen = null;
      this.showItem(this.items.get(wanted));
    }
    if (!this.current && this.reopen === null) this.showItem(this.nextItem());
    this.predecode();
    this.drawStatus();
    this.drawHistory();
    this.root.dataset.ready = "1";
    if (first || this.outbox.some((a) => a.seq > this.lastSentMax)) this.send(false);
  }

  remember(item) {
    this.cache.delete(item.entry_id);
    this.cache.set(item.entry_id, item);
    while (this.cache.size > MAX_CACHE) this.cache.delete(this.cache.keys().next().value);
  }

  // entry ids answered here and not taken back (replaying the unacknowledged outbox in order)
  answeredSet() {
    const set = new Set();
    for (const a of this.outbox) {
      if (a.kind === "undo") set.delete(a.entry_id);
      else set.add(a.entry_id);
    }
    return set;
  }

  nextItem() {
    const answered = this.answeredSet();
    const currentId = this.current ? this.current.entry_id : null;
    for (const id of this.order) {
      if (id !== currentId && !answered.has(id) && this.items.has(id)) return this.items.get(id);
    }
    return null;
  }

  // ----- drawing ----------------------------------------------------------------------------------------------------
  showItem(item, causeTs = null) {
    this.current = item || null;
    this.tags = new Set();
    this.paintedAt = Infinity; // no press counts until this item has been painted, and then only after the guard
    if (!this.el) return;
    this.paint(item);
    const record = item ? { entry_id: item.entry_id, key_ts: causeTs, drawn: performance.now(), painted: null } : null;
    if (record) {
      this.paints.push(record); // for the benchmark: key down -> the next image painted
      if (this.paints.length > 2000) this.paints.shift();
    }
    requestAnimationFrame(() => {
      // this frame holds the new image; a task queued from its rAF runs once the frame was painted
      setTimeout(() => { if (record) record.painted = performance.now(); }, 0);
      requestAnimationFrame(() => { // the second frame starts once the first (with the new image) was painted
        if (this.current === item) {
          this.paintedAt = performance.now();
          this.shownAt = Date.now();
        }
      });
    });
  }

  // decode the images of the held items ahead, so the one drawn at the next key press is ready in that frame
  predecode() {
    const keep = new Set();
    for (const id of this.order.slice(0, 8)) {
      const item = this.items.get(id);
      if (!item || !item.image) continue;
      keep.add(item.image);
      if (!this.decoded.has(item.image)) {
        const im = new Image();
        im.src = item.image;
        if (im.decode) im.decode().catch(() => {});
        this.decoded.set(item.image, im);
      }
    }
    for (const url of Array.from(this.decoded.keys())) if (!keep.has(url)) this.decoded.delete(url);
  }

  // draw `item` (or the empty state) into the element; the same item drawn again keeps its paint time
  paint(item) {
    const el = this.el;
    if (item && item.image) {
      el.image.src = item.image;
      el.image.dataset.entryId = String(item.entry_id);
      el.placeholder.textContent = "";
    } else {
      el.image.removeAttribute("src");
      el.image.dataset.entryId = item ? String(item.entry_id) : "";
      el.placeholder.textContent = item ? `${item.caption}: ${item.problem || "cannot be shown"} — skip it (s).`
        : this.emptyText();
    }
    el.caption.textContent = item ? (item.chosen_by ? `${item.caption} · chosen by: ${item.chosen_by}` : item.caption) : "";
    this.drawGuess();
    this.drawTags();
  }

  emptyText() {
    if (this.reopen !== null) return "Bringing the item back…";
    const d = this.data;
    if (!d) return "Loading…";
    return d.empty_reason || "Waiting for items…";
  }

  buildControls() {
    const d = this.data;
    const el = this.el;
    this.builtFor = this.store;
    el.classes.textContent = "";
    for (const c of d.classes || []) {
      const b = document.createElement("button");
      b.className = "ls-btn ls-class";
      b.type = "button";
      b.dataset.classIndex = String(c.index);
      b.append(document.createTextNode(c.name));
      const p = document.createElement("span");
      p.className = "ls-p";
      b.append(p);
      if (c.key) {
        const k = document.createElement("kbd");
        k.textContent = c.key;
        b.append(k);
      }
      el.classes.append(b);
    }
    el.actions.textContent = "";
    const multi = d.task === "multi_label";
    const actions = multi
      ? [["submit", "Submit", "Enter"], ["none", "None of these", "Shift+N"], ["skip", "Skip", "s"], ["undo", "Undo", "u"]]
      : [["accept", "Accept guess", this.acceptLabel()], ["skip", "Skip", "s"], ["undo", "Undo", "u"]];
    if (d.more_like_this) actions.push(["like", "More like this", null]);
    for (const [action, text, key] of actions) {
      const b = document.createElement("button");
      b.className = "ls-btn ls-action";
      b.type = "button";
      b.dataset.action = action;
      b.append(document.createTextNode(text));
      if (key) {
        const k = document.createElement("kbd");
        k.textContent = key;
        b.append(k);
      }
      el.actions.append(b);
    }
    const keys = (d.classes || []).filter((c) => c.key)
      .map((c) => (c.key === c.name.toLowerCase() ? `<kbd>${c.key}</kbd>` : `<kbd>${c.key}</kbd> ${escapeHtml(c.name)}`));
    const rows = multi
      ? ["class keys toggle tags", "<kbd>Enter</kbd> submit", "<kbd>Shift+N</kbd> none of these",
        "<kbd>Space</kbd> the model's tags"]
      : ["a class key labels", `<kbd>${escapeHtml(this.acceptLabel())}</kbd> accept the model's guess`];
    el.legend.innerHTML = [...rows, "<kbd>s</kbd> skip", "<kbd>u</kbd>/<kbd>Backspace</kbd>/<kbd>Ctrl+Z</kbd> undo (walks back)",
      "keys work anywhere but in a text field", keys.join(" · ")].join(" · ");
    this.drawGuess();
  }

  acceptLabel() {
    return this.settings().accept_keys.map((k) => (k === " " ? "Space" : k)).join("/");
  }

  drawGuess() {
    const el = this.el;
    if (!el || !this.data) return;
    const item = this.current;
    const guess = item && item.guess;
    for (const b of el.classes.querySelectorAll(".ls-class")) {
      b.classList.remove("ls-guessed");
      b.querySelector(".ls-p").textContent = "";
    }
    const accept = el.actions.querySelector('[data-action="accept"]');
    if (accept) accept.disabled = !(guess && guess.length);
    if (!guess) {
      el.guess.textContent = item ? "No model guess yet (before the first training)." : "";
      return;
    }
    const names = (this.data.classes || []).map((c) => c.name);
    const top = guess.map((g) => `${names[g.class]} ${(100 * g.p).toFixed(0)}%`).join(", ");
    el.guess.textContent = `Model guess: ${top}`;
    const marked = this.data.task === "multi_label" ? (item.guess_tags || []) : [guess[0].class];
    for (const g of guess) {
      const b = el.classes.querySelector(`[data-class-index="${g.class}"]`);
      if (!b) continue;
      b.querySelector(".ls-p").textContent = `${(100 * g.p).toFixed(0)}%`;
      if (marked.includes(g.class)) b.classList.add("ls-guessed");
    }
  }

  drawTags() {
    if (!this.el) return;
    for (const b of this.el.classes.querySelectorAll(".ls-class")) {
      b.classList.toggle("ls-on", this.tags.has(Number(b.dataset.classIndex)));
    }
  }

  drawStatus() {
    const d = this.data;
    const el = this.el;
    if (!el || !d) return;
    const r = d.round;
    el.progress.textContent = d.progress ?? (r ? `round ${r.index}: ${r.done} of ${r.total}` : "");
    const unsent = this.outbox.length;
    el.unsent.textContent = unsent ? `${unsent} unsent` : "";
    this.root.dataset.unsent = String(unsent);
    this.drawCounter();
    if (!this.current) el.placeholder.textContent = this.emptyText();
  }

  drawCounter() {
    if (!this.el) return;
    const n = this.sessionLabels;
    let rate = "";
    if (n && this.firstAnswerAt) {
      const minutes = Math.max((Date.now() - this.firstAnswerAt) / 60000, 1 / 60);
      rate = ` · ${(n / minutes).toFixed(1)} per minute`;
    }
    this.el.counter.textContent = `${n} label${n === 1 ? "" : "s"} this session${rate}`;
  }

  historyEntries() {
    // the server's live answers (newest first), then what the outbox changes on top of them
    const list = this.serverHistory.slice().reverse();
    for (const a of this.outbox) {
      if (a.kind === "undo") {
        for (let i = list.length - 1; i >= 0; i--) {
          if (list[i].entry_id === a.entry_id) { list.splice(i, 1); break; }
        }
      } else {
        list.push({ entry_id: a.entry_id, kind: a.kind, value: a.value, label: a.label, thumb: a.thumb,
          caption: a.caption, project_id: a.project_id, annotator: a.annotator, pending: true });
      }
    }
    return list.slice(-20); // oldest first
  }

  drawHistory() {
    const el = this.el;
    if (!el) return;
    el.history.textContent = "";
    for (const h of this.historyEntries()) {
      const cell = document.createElement("div");
      cell.className = "ls-hist" + (h.pending ? " ls-pending" : "");
      cell.dataset.entryId = String(h.entry_id);
      cell.title = `${h.caption || ""}: ${h.label}`;
      const img = document.createElement("img");
      if (h.thumb) img.src = h.thumb;
      img.alt = "";
      const span = document.createElement("span");
      span.textContent = h.label;
      cell.append(img, span);
      el.history.append(cell);
    }
  }

  setNotice(text) {
    this.notice = text;
    if (this.el) this.el.notice.textContent = text;
  }

  // ----- input ------------------------------------------------------------------------------------------------------
  onKey(event) {
    if (event.defaultPrevented) return;
    const field = textFieldOf(event);
    if (field.text) return;
    const action = this.actionFor(event);
    if (!action) return;
    event.preventDefault();
    event.stopPropagation();
    if (field.combobox) field.combobox.blur(); // after a sidebar pick the keys label, and the box is left alone
    if (event.repeat) {
      this.ignore("auto-repeat", event.key);
      return;
    }
    this.act(action, event.timeStamp, event.key);
  }

  actionFor(event) {
    const key = event.key;
    if (event.altKey || event.metaKey) return null;
    if (event.ctrlKey) return key === "z" || key === "Z" ? { kind: "undo" } : null;
    const d = this.data;
    if (!d) return null;
    const multi = d.task === "multi_label";
    if (multi && event.shiftKey && (key === "N" || key === "n")) return { kind: "none" };
    if (key === "Backspace" || key === "u" || key === "U") return { kind: "undo" };
    if (key === "s" || key === "S") return { kind: "skip" };
    if (multi && key === "Enter") return { kind: "submit" };
    if (multi && key === " ") return { kind: "accept" };
    if (!multi && this.settings().accept_keys.includes(key)) return { kind: "accept" };
    const lower = key.length === 1 ? key.toLowerCase() : key;
    const cls = (d.classes || []).find((c) => c.key === lower);
    if (cls) return { kind: "class", index: cls.index };
    return null;
  }

  onClick(event) {
    const button = event.target.closest ? event.target.closest("button") : null;
    if (!button || !this.root.contains(button)) return;
    let action = null;
    if (button.dataset.classIndex !== undefined) action = { kind: "class", index: Number(button.dataset.classIndex) };
    else if (button.dataset.action) action = { kind: button.dataset.action };
    if (action) this.act(action, event.timeStamp, "click");
  }

  ignore(reason, key) {
    this.ignored.push({ reason, key, shown: this.current ? this.current.entry_id : null, at: performance.now(),
      since_paint: this.sincePaint });
    if (this.ignored.length > 200) this.ignored.shift();
  }

  act(action, timeStamp, key) {
    if (action.kind === "like") { // the item on screen and its nearest neighbours, on the grid page
      if (this.current && this.setTrigger) this.setTrigger("like", { item_id: this.current.item_id });
      return;
    }
    this.keyTs = timeStamp;
    this.sincePaint = timeStamp - this.paintedAt; // ms the item on screen had been painted when the key went down
    if (action.kind === "undo") {
      if (timeStamp - this.paintedAt < this.settings().guard_ms || this.paintedAt === Infinity) {
        if (this.current) return this.ignore("guard", key);
      }
      return this.undo();
    }
    const item = this.current;
    if (!item) return this.ignore("nothing on screen", key);
    if (this.paintedAt === Infinity || timeStamp - this.paintedAt < this.settings().guard_ms) {
      return this.ignore("guard", key);
    }
    const multi = this.data.task === "multi_label";
    // The same answer again this soon after the last one (a "did it register?" press: the image already changed)
    // would land on the next item; a tag toggle answers nothing, so it is never taken for one.
    this.signature = `${action.kind}:${action.index ?? ""}`;
    const last = this.lastAnswer;
    if (!(multi && action.kind === "class") && last && last.signature === this.signature
        && timeStamp - last.at < this.settings().repress_ms) {
      return this.ignore("re-press", key);
    }
    const names = (this.data.classes || []).map((c) => c.name);
    if (action.kind === "skip") return this.answer(item, "skip", null, "skipped");
    if (!item.image) return this.ignore("no image: only skip", key);
    if (action.kind === "accept") {
      if (!item.guess || !item.guess.length) return this.ignore("no guess", key);
      if (multi) return this.answer(item, "label", (item.guess_tags || []).slice().sort((a, b) => a - b), null);
      return this.answer(item, "label", [item.guess[0].class], null);
    }
    if (multi) {
      if (action.kind === "class") {
        if (this.tags.has(action.index)) this.tags.delete(action.index);
        else this.tags.add(action.index);
        this.drawTags();
        return;
      }
      if (action.kind === "none") return this.answer(item, "label", [], "none of these");
      if (action.kind === "submit") {
        return this.answer(item, "label", Array.from(this.tags).sort((a, b) => a - b), null);
      }
      return;
    }
    if (action.kind === "class") return this.answer(item, "label", [action.index], names[action.index]);
  }

  answer(item, kind, value, label) {
    const names = (this.data.classes || []).map((c) => c.name);
    const text = label ?? (kind === "skip" ? "skipped" : (value || []).map((k) => names[k]).join(", ") || "none");
    const a = {
      seq: this.nextSeq++,
      entry_id: item.entry_id,
      kind,
      value,
      seconds: this.shownAt ? Math.round((Date.now() - this.shownAt) / 10) / 100 : null,
      project_id: item.project_id,
      annotator: item.annotator,
      label: text,
      caption: item.caption,
      thumb: item.thumb || null,
    };
    this.outbox.push(a);
    this.persist();
    this.log.push({ seq: a.seq, entry_id: a.entry_id, kind, value, shown: Number(this.el.image.dataset.entryId),
      since_paint: this.sincePaint, at: this.keyTs });
    if (kind === "label") {
      this.sessionLabels += 1;
      if (!this.firstAnswerAt) this.firstAnswerAt = Date.now();
    }
    this.setNotice("");
    this.lastAnswer = { signature: this.signature, at: this.keyTs };
    this.showItem(this.nextItem(), this.keyTs); // the next held item, drawn in the same frame as this key press
    this.drawStatus();
    this.drawHistory();
    this.send(false);
  }

  undo() {
    const history = this.historyEntries();
    const last = history[history.length - 1];
    if (!last || last.entry_id === null || last.entry_id === undefined) {
      this.setNotice("Nothing to undo.");
      return;
    }
    const a = {
      seq: this.nextSeq++, entry_id: last.entry_id, kind: "undo", value: null, seconds: null,
      project_id: last.project_id ?? this.data.project_id, annotator: last.annotator ?? this.data.annotator,
      label: "undo", caption: last.caption,
    };
    this.outbox.push(a);
    this.persist();
    this.log.push({ seq: a.seq, entry_id: a.entry_id, kind: "undo", value: null,
      shown: this.current ? this.current.entry_id : null });
    if (last.kind === "label" && last.pending) this.sessionLabels = Math.max(0, this.sessionLabels - 1);
    const cached = this.cache.get(last.entry_id);
    if (cached && cached.image && cached.project_id === this.data.project_id) {
      this.showItem(cached); // the item comes back on screen at once; the server holds it again on the undo
    } else {
      this.reopen = last.entry_id;
      this.showItem(null);
    }
    this.setNotice(`Undone: ${last.caption || "item"} (${last.label}).`);
    this.drawStatus();
    this.drawHistory();
    this.send(false);
  }

  // ----- sending ----------------------------------------------------------------------------------------------------
  held() {
    const ids = new Set(this.order);
    if (this.current) ids.add(this.current.entry_id);
    return Array.from(ids);
  }

  send(heartbeat) {
    if (!this.setTrigger || !this.root || !this.root.isConnected) return;
    if (!heartbeat && !this.outbox.length && this.data) return;
    const maxSeq = this.outbox.length ? this.outbox[this.outbox.length - 1].seq : 0;
    const answers = this.outbox.map(({ seq, entry_id, kind, value, seconds, project_id, annotator }) => (
      { seq, entry_id, kind, value, seconds, project_id, annotator }));
    this.lastSentMax = Math.max(this.lastSentMax, maxSeq);
    this.inflightAt = answers.length ? Date.now() : this.inflightAt;
    this.setTrigger("sync", {
      client_id: this.clientId, answers, held: this.held(), visible: document.visibilityState === "visible",
      sent_at: Date.now(), heartbeat: !!heartbeat,
    });
  }

  maybeResend() {
    if (!this.outbox.length) return;
    if (this.inflightAt && Date.now() - this.inflightAt < this.settings().resend_ms) return;
    this.send(false);
  }
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function onVisibility() {
  if (document.visibilityState === "visible" && activeSurface) activeSurface.send(true);
}

function onPageHide() {
  for (const s of surfaces.values()) {
    try {
      localStorage.removeItem(OWNER_PREFIX + s.clientId); // a reload of this tab may take its client id back
    } catch (e) {
      /* ignore */
    }
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const instance = (data && data.instance) || "label_surface";
  let surface = surfaces.get(instance);
  if (!surface) {
    surface = new Surface(instance);
    surfaces.set(instance, surface);
  }
  if (!listening) {
    document.addEventListener("keydown", onKeyDown, true);
    document.addEventListener("visibilitychange", onVisibility);
    window.addEventListener("pagehide", onPageHide);
    listening = true;
  }
  surface.attach(parentElement, setTriggerValue);
  if (data) surface.update(data);
  globalThis.__labelSurfaces = surfaces;
  return () => surface.detach();
}
