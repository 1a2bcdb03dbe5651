// clipsearch search page. Plain ES2020, no dependencies, no inline handlers (CSP: script-src 'self').
// Talks to the JSON API only: /api/search, /api/search/image, /api/items/ID, /api/items/ID/similar,
// /api/moments/ID/similar (a video hit plays from its moment, its other moments are chapters),
// and /api/session, which trades an API key for a session cookie on servers that require keys
// for searching (the page never keeps the key: not in storage, not in the URL).
"use strict";

(() => {
  const PAGE_SIZE = 24;
  const IMAGE_EXT = /\.(jpe?g|png|webp|gif|bmp|tiff?|heic|heif|avif)$/i;
  const FALLBACK_ERRORS = {
    400: "The request was not understood.",
    401: "An API key is needed to search this server.",
    403: "The API key was refused.",
    404: "Not found.",
    413: "The image is too large to upload.",
    415: "This kind of file cannot be searched with.",
    429: "Too many searches; please wait a moment.",
    500: "The server failed to answer.",
    503: "The search service is not ready yet.",
  };
  const KEY_NEEDED = "This server needs an API key for searching. Enter it below.";

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $("search-form"),
    q: $("q"),
    pick: $("pick-image"),
    file: $("image-input"),
    example: $("example"),
    exampleImg: $("example-img"),
    exampleLabel: $("example-label"),
    exampleClear: $("example-clear"),
    filters: $("filter-form"),
    status: $("status"),
    results: $("results"),
    more: $("load-more"),
    sentinel: $("sentinel"),
    overlay: $("drop-overlay"),
    template: $("result-template"),
    dialog: $("preview"),
    pTitle: $("preview-title"),
    pClose: $("preview-close"),
    pImg: $("preview-img"),
    pVideo: $("preview-video"),
    pChaptersTitle: $("chapters-title"),
    pChapters: $("preview-chapters"),
    pMeta: $("preview-meta"),
    pOpen: $("preview-open"),
    pSimilar: $("preview-similar"),
    pTexts: $("preview-texts"),
    pStatus: $("preview-status"),
    keyForm: $("key-form"),
    keyInput: $("key-input"),
    keySubmit: $("key-submit"),
    keyMessage: $("key-message"),
    sessionBar: $("session-bar"),
    keyForget: $("key-forget"),
    onlyRelevant: $("only-relevant"),
    foldSimilar: $("fold-similar"),
    pOcr: $("preview-ocr"),
    pOcrTitle: $("ocr-title"),
    cutNote: $("cut-note"),
    cutText: $("cut-text"),
    showCut: $("show-cut"),
  };

  // query: {kind: "text", q} | {kind: "image", blob, name} | {kind: "item", id, name, thumb}
  //        | {kind: "moment", id, name, thumb}
  const state = {
    query: null,
    offset: 0,
    hasMore: false,
    loading: false,
    seq: 0,
    controller: null,
    shown: new Set(),
    exampleUrl: null,
    preview: { hit: null, opener: null, seq: 0 },
  };

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // ---- talking to the API --------------------------------------------------------
  async function api(url, options = {}) {
    let res;
    try {
      res = await fetch(url, { ...options, headers: { Accept: "application/json", ...options.headers } });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError("The server could not be reached. Is it running?", 0);
    }
    let body = null;
    if ((res.headers.get("Content-Type") || "").includes("json")) {
      try {
        body = await res.json();
      } catch (err) {
        if (err.name === "AbortError") throw err;
        body = null;
      }
    }
    if (!res.ok) {
      let message = errorText(body) || FALLBACK_ERRORS[res.status] || `The server answered ${res.status}.`;
      const retry = res.headers.get("Retry-After");
      if (res.status === 429 && retry) message += ` Try again in ${retry} s.`;
      throw new ApiError(message, res.status);
    }
    if (res.status === 204) return null;
    if (body === null) throw new ApiError("The server sent an answer this page cannot read.", res.status);
    return body;
  }

  function errorText(body) {
    if (!body) return "";
    const e = body.error;
    if (typeof e === "string") return e;
    if (e && typeof e.message === "string") return e.message;
    return typeof body.message === "string" ? body.message : "";
  }

  // Filter and sort values from the filter form, as API parameter pairs (empty ones left out).
  function filterParams() {
    const out = [];
    for (const [key, raw] of new FormData(ui.filters)) {
      const value = String(raw).trim();
      if (!value) continue;
      out.push([key, value]); // a plain "before" date includes that whole day (the API's rule)
    }
    if (!out.some(([k]) => k === "sort")) out.push(["sort", "score"]);
    return out;
  }

  function searchRequest(query, offset, signal) {
    const common = [["k", String(PAGE_SIZE)], ["offset", String(offset)],
      ["relevance", ui.onlyRelevant.checked ? "auto" : "off"], ...filterParams()];
    if (ui.foldSimilar && ui.foldSimilar.checked && query.kind !== "moment") {
      common.push(["collapse", "true"]);
    }
    if (query.kind === "image") {
      const body = new FormData();
      body.append("image", query.blob, query.name || "image");
      for (const [k, v] of common) body.append(k, v);
      return api("/api/search/image", { method: "POST", body, signal });
    }
    const params = new URLSearchParams(common);
    if (query.kind === "text") {
      params.set("q", query.q);
      return api(`/api/search?${params}`, { signal });
    }
    if (query.kind === "moment") {
      return api(`/api/moments/${encodeURIComponent(query.id)}/similar?${params}`, { signal });
    }
    return api(`/api/items/${encodeURIComponent(query.id)}/similar?${params}`, { signal });
  }

  // ---- searching -------------------------------------------------------------------
  async function runSearch({ append = false } = {}) {
    if (!state.query) return;
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    const seq = ++state.seq;
    const offset = append ? state.offset : 0;
    state.loading = true;
    ui.results.setAttribute("aria-busy", "true");
    ui.more.disabled = true;
    if (!append) setStatus(searchingText(state.query));
    try {
      const page = await searchRequest(state.query, offset, controller.signal);
      if (seq !== state.seq) return;
      if (!append) clearResults();
      const hits = Array.isArray(page.results) ? page.results : [];
      renderHits(hits);
      state.offset = (Number.isInteger(page.offset) ? page.offset : offset) +
        (Number.isInteger(page.k) ? page.k : PAGE_SIZE);
      state.hasMore = Boolean(page.has_more) && hits.length > 0;
      ui.more.hidden = !state.hasMore;
      setStatus(summaryText(page));
      showCutNote(page.relevance);
    } catch (err) {
      if (err.name === "AbortError" || seq !== state.seq) return;
      if (!append) clearResults();
      state.hasMore = false;
      ui.more.hidden = true;
      if (err.status === 401) {
        setStatus(KEY_NEEDED, true);
        askForKey({ focus: true });
      } else {
        setStatus(err.message, true);
      }
    } finally {
      if (seq === state.seq) {
        state.loading = false;
        state.controller = null;
        ui.results.removeAttribute("aria-busy");
        ui.more.disabled = false;
        if (state.hasMore) requestAnimationFrame(maybeLoadMore);
      }
    }
  }

  // How many hits the relevance cut-off hid, and a way to see them.
  function showCutNote(relevance) {
    const cut = relevance && Number.isInteger(relevance.cut) ? relevance.cut : 0;
    ui.cutNote.hidden = !(cut > 0 && ui.onlyRelevant.checked);
    if (!ui.cutNote.hidden) {
      ui.cutText.textContent = `${cut} less relevant result${cut === 1 ? "" : "s"} hidden.`;
    }
  }

  function describe(query) {
    if (query.kind === "text") return `“${query.q}”`;
    if (query.kind === "image") return query.name ? `images like ${query.name}` : "images like your picture";
    return `images like ${query.name || "item " + query.id}`;
  }

  function searchingText(query) {
    return `Searching for ${describe(query)}…`;
  }

  function summaryText(page) {
    const n = state.shown.size;
    if (!n) {
      const cut = page.relevance && page.relevance.cut > 0 && ui.onlyRelevant.checked;
      if (cut) return `No relevant images for ${describe(state.query)}.`;
      return `No images found for ${describe(state.query)}. Try other words or fewer filters.`;
    }
    const timings = page.timings_ms || {};
    const ms = Object.values(timings).reduce((a, b) => a + (Number(b) || 0), 0);
    const took = ms > 0 ? ` (${Math.round(ms)} ms)` : "";
    const more = state.hasMore ? " Scroll down for more." : "";
    return `${n} result${n === 1 ? "" : "s"} for ${describe(state.query)}${took}.${more}`;
  }

  function startTextSearch(text) {
    const q = text.trim();
    if (!q) {
      if (state.query && state.query.kind !== "text") return runSearch();
      setStatus("Type what you are looking for first.", true);
      ui.q.focus();
      return undefined;
    }
    state.query = { kind: "text", q };
    showExample(null);
    remember({ q });
    return runSearch();
  }

  function startImageSearch(blob, name) {
    if (!isImageFile(blob)) {
      setStatus("That file is not an image this page can search with.", true);
      return undefined;
    }
    state.query = { kind: "image", blob, name: name || blob.name || "pasted image" };
    ui.q.value = "";
    const url = URL.createObjectURL(blob);
    showExample(url, `Searching by example: ${state.query.name}`, true);
    remember({});
    window.scrollTo({ top: 0 });
    return runSearch();
  }

  function startItemSearch(hit, { focusResults = true } = {}) {
    state.query = { kind: "item", id: hit.id, name: displayName(hit), thumb: hit.thumbnail_url || null };
    ui.q.value = "";
    showExample(hit.thumbnail_url || null, `Images like ${displayName(hit)}`, false);
    remember({ like: String(hit.id) });
    const done = runSearch();
    window.scrollTo({ top: 0 });
    // Keyboard users continue from the new results: the next Tab reaches the first one.
    if (focusResults) ui.results.focus({ preventScroll: true });
    return done;
  }

  // Keep the text query (or item) in the address so it can be bookmarked and reloaded.
  function remember(params) {
    const search = new URLSearchParams(params).toString();
    const url = location.pathname + (search ? `?${search}` : "");
    if (url !== location.pathname + location.search) history.replaceState(null, "", url);
  }

  function showExample(url, label, ownsUrl) {
    if (state.exampleUrl) URL.revokeObjectURL(state.exampleUrl);
    state.exampleUrl = ownsUrl ? url : null;
    if (!url) {
      ui.example.hidden = true;
      ui.exampleImg.removeAttribute("src");
      return;
    }
    ui.exampleImg.src = url;
    ui.exampleLabel.textContent = label;
    ui.example.hidden = false;
  }

  function clearExample() {
    showExample(null);
    if (state.query && state.query.kind !== "text") {
      if (state.controller) state.controller.abort();
      state.query = null;
      clearResults();
      ui.more.hidden = true;
      remember({});
      setStatus("Search cleared.");
    }
    ui.q.focus();
  }

  function isImageFile(file) {
    if (!file) return false;
    if (file.type) return file.type.startsWith("image/") && file.type !== "image/svg+xml";
    return IMAGE_EXT.test(file.name || "");
  }

  function firstImage(files) {
    return Array.from(files || []).find(isImageFile) || null;
  }

  // ---- rendering results -------------------------------------------------------------
  function clearResults() {
    ui.results.replaceChildren();
    ui.cutNote.hidden = true;
    state.shown.clear();
    state.offset = 0;
  }

  function displayName(hit) {
    if (hit.name) return String(hit.name);
    const path = String(hit.path || "");
    return path.split(/[\\/]/).pop() || `item ${hit.id}`;
  }

  function formatScore(score) {
    return typeof score === "number" && Number.isFinite(score) ? score.toFixed(3) : "";
  }

  function renderHits(hits) {
    const frag = document.createDocumentFragment();
    for (const hit of hits) {
      if (hit == null || state.shown.has(hit.id)) continue; // the index changed between pages
      state.shown.add(hit.id);
      frag.append(renderHit(hit));
    }
    ui.results.append(frag);
  }

  function renderHit(hit) {
    const node = ui.template.content.firstElementChild.cloneNode(true);
    const name = displayName(hit);
    const score = formatScore(hit.score);
    const thumb = node.querySelector(".thumb");
    const img = node.querySelector("img");
    thumb.setAttribute("aria-label", `${name}${score ? `, score ${score}` : ""}. Open preview`);
    thumb.title = hit.path || name;
    if (hit.width && hit.height) {
      img.width = hit.width;
      img.height = hit.height;
    }
    img.loading = "lazy";
    img.addEventListener("error", () => node.classList.add("broken"), { once: true });
    if (hit.thumbnail_url) {
      img.src = sized(hit.thumbnail_url, 256);
      img.srcset = `${img.src} 1x, ${sized(hit.thumbnail_url, 512)} 2x`;
    }
    node.querySelector(".score").textContent = score;
    if (typeof hit.t_start === "number") {
      const clock = node.querySelector(".clock");
      clock.textContent = `${formatClock(hit.t_start)}–${formatClock(hit.t_end)}`;
      clock.hidden = false;
      thumb.setAttribute("aria-label", `${name} at ${clock.textContent}${score ? `, score ${score}` : ""}. Play from there`);
    }
    const label = node.querySelector(".name");
    label.textContent = name;
    label.title = hit.path || name;
    renderMatched(node.querySelector(".matched"), hit.matched);
    const similar = node.querySelector(".similar");
    similar.setAttribute("aria-label", `More like ${name}`);
    thumb.addEventListener("click", () => openPreview(hit, thumb));
    similar.addEventListener("click", () => startItemSearch(hit));
    node.dataset.id = String(hit.id);
    renderFold(node, hit);
    return node;
  }

  // "+n similar": near-duplicates folded into this hit; the button shows them after it.
  function renderFold(node, hit) {
    const members = Array.isArray(hit.similar) ? hit.similar : [];
    const button = node.querySelector(".fold");
    if (!button || !members.length) return;
    button.hidden = false;
    button.textContent = `+${members.length} similar`;
    button.setAttribute("aria-label", `Show ${members.length} near-duplicates of ${displayName(hit)}`);
    let shown = [];
    button.addEventListener("click", () => {
      if (shown.length) {
        shown.forEach((el) => el.remove());
        shown = [];
        button.setAttribute("aria-expanded", "false");
        button.textContent = `+${members.length} similar`;
        return;
      }
      let after = node;
      for (const m of members) {
        const el = renderHit({ ...m, matched: null });
        el.classList.add("folded");
        after.after(el);
        after = el;
        shown.push(el);
      }
      button.setAttribute("aria-expanded", "true");
      button.textContent = "Hide similar";
    });
  }

  // Which query words the item's words contain, by field: "Matched: acme, invoice (name)".
  function renderMatched(el, matched) {
    if (!matched || typeof matched !== "object") return;
    const parts = Object.entries(matched).filter(([, words]) => Array.isArray(words) && words.length);
    if (!parts.length) return;
    el.append("Matched: ");
    parts.forEach(([field, words], i) => {
      if (i) el.append("; ");
      words.forEach((w, j) => {
        if (j) el.append(", ");
        const mark = document.createElement("mark");
        mark.textContent = String(w);
        el.append(mark);
      });
      el.append(` (${field})`);
    });
  }

  // 75 -> "1:15", 3725 -> "1:02:05": a time in a video, whole seconds.
  function formatClock(seconds) {
    const s = Math.max(0, Math.floor(Number(seconds) || 0));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }

  function startMomentSearch(hit, moment) {
    const name = `${displayName(hit)} at ${formatClock(moment.t_start)}`;
    state.query = { kind: "moment", id: moment.id, name, thumb: moment.thumbnail_url || null };
    ui.q.value = "";
    showExample(moment.thumbnail_url || null, `More like ${name}`, false);
    remember({ moment: String(moment.id) });
    const done = runSearch();
    window.scrollTo({ top: 0 });
    ui.results.focus({ preventScroll: true });
    return done;
  }

  // A video plays from its best moment; every moment of it is a chapter link, the ones
  // that matched the search marked, each with "more like this moment".
  function showVideo(hit, moments) {
    const video = ui.pVideo;
    const start = typeof hit.t_start === "number" ? hit.t_start : 0;
    if (video.dataset.item !== String(hit.id)) {
      video.dataset.item = String(hit.id);
      video.src = `${hit.file_url}#t=${start}`;
    }
    const seek = (t) => {
      if (video.readyState >= 1) video.currentTime = t;
      else video.addEventListener("loadedmetadata", () => { video.currentTime = t; }, { once: true });
    };
    seek(start);
    ui.pImg.hidden = true;
    video.hidden = false;
    const matched = new Map([hit.moment, ...(hit.moments || [])].filter(Boolean).map((m) => [m.id, m]));
    ui.pChapters.replaceChildren();
    for (const m of moments.length ? moments : [...matched.values()]) {
      const li = document.createElement("li");
      if (matched.has(m.id)) li.className = "match";
      const go = document.createElement("button");
      go.type = "button";
      go.className = "link-button chapter";
      go.textContent = `${formatClock(m.t_start)}–${formatClock(m.t_end)}`;
      go.setAttribute("aria-label", `Play from ${formatClock(m.t_start)}`);
      go.addEventListener("click", () => { seek(m.t_start); video.play().catch(() => {}); });
      const like = document.createElement("button");
      like.type = "button";
      like.className = "link-button";
      like.textContent = "More like this moment";
      like.addEventListener("click", () => {
        state.preview.opener = null;
        closePreview();
        startMomentSearch(hit, m);
      });
      li.append(go, " ", like);
      ui.pChapters.append(li);
    }
    ui.pChapters.hidden = ui.pChaptersTitle.hidden = !ui.pChapters.children.length;
  }

  function hideVideo() {
    const video = ui.pVideo;
    video.pause();
    video.removeAttribute("src");
    delete video.dataset.item;
    video.load();
    video.hidden = true;
    ui.pImg.hidden = false;
    ui.pChapters.replaceChildren();
    ui.pChapters.hidden = ui.pChaptersTitle.hidden = true;
  }

  // The thumbnail URL asking for a given longest side (the API caches a few sizes).
  function sized(url, size) {
    const u = new URL(url, location.href);
    u.searchParams.set("size", String(size));
    return u.origin === location.origin ? u.pathname + u.search : u.href;
  }

  function maybeLoadMore() {
    if (!state.hasMore || state.loading) return;
    const rect = ui.sentinel.getBoundingClientRect();
    if (rect.top < window.innerHeight + 400) runSearch({ append: true });
  }

  function setStatus(message, isError = false) {
    ui.status.textContent = message;
    ui.status.classList.toggle("error", isError);
  }

  // ---- preview dialog -----------------------------------------------------------------
  function metaRow(term, value) {
    if (value === null || value === undefined || value === "") return;
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    ui.pMeta.append(dt, dd);
  }

  function formatDate(value) {
    if (!value) return "";
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) return String(value);
    return String(value).replace("T", " ").replace(/(:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/, "$1");
  }

  function formatBytes(n) {
    if (typeof n !== "number" || !Number.isFinite(n)) return "";
    const units = ["bytes", "KiB", "MiB", "GiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  function fillMeta(item, score) {
    ui.pMeta.replaceChildren();
    metaRow("Path", item.path);
    if (item.width && item.height) metaRow("Size", `${item.width} × ${item.height} px`);
    metaRow("Format", item.codec ? `${item.format} (${item.codec})` : item.format);
    if (typeof item.duration === "number") metaRow("Duration", formatClock(item.duration));
    metaRow("File size", formatBytes(item.size));
    metaRow("Taken", formatDate(item.captured_at));
    metaRow("Camera", item.camera);
    metaRow("Score", formatScore(score));
  }

  // The text OCR read in the image, when it read any.
  function fillOcr(ocr) {
    const text = ocr && typeof ocr.text === "string" ? ocr.text.trim() : "";
    ui.pOcr.textContent = text;
    ui.pOcr.hidden = !text;
    ui.pOcrTitle.hidden = !text;
    if (text && typeof ocr.confidence === "number") {
      ui.pOcr.title = `confidence ${ocr.confidence.toFixed(2)}`;
    }
  }

  function fillTexts(texts) {
    ui.pTexts.replaceChildren();
    for (const t of texts) {
      const li = document.createElement("li");
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = t.text;
      li.append(text);
      const score = formatScore(t.score);
      if (score) {
        const s = document.createElement("span");
        s.className = "text-score";
        s.textContent = score;
        s.setAttribute("aria-label", `score ${score}`);
        li.append(" ", s);
      }
      if (t.source) li.title = `source: ${t.source}`;
      ui.pTexts.append(li);
    }
  }

  async function openPreview(hit, opener) {
    const seq = ++state.preview.seq;
    state.preview.hit = hit;
    state.preview.opener = opener || null;
    const name = displayName(hit);
    ui.pTitle.textContent = name;
    // A fresh <img>, so the previous item's picture never shows while this one loads.
    const img = ui.pImg.cloneNode(false);
    img.removeAttribute("src");
    img.alt = name;
    if (hit.thumbnail_url) img.src = sized(hit.thumbnail_url, 1024);
    ui.pImg.replaceWith(img);
    ui.pImg = img;
    if (hit.media === "video") showVideo(hit, []);
    else hideVideo();
    ui.pOpen.href = hit.file_url || "#";
    ui.pOpen.hidden = !hit.file_url;
    fillMeta(hit, hit.score);
    fillOcr(null);
    ui.pTexts.replaceChildren();
    ui.pStatus.textContent = "Loading details…";
    ui.pStatus.classList.remove("error");
    if (!ui.dialog.open) ui.dialog.showModal();
    ui.pClose.focus();
    try {
      const item = await api(`/api/items/${encodeURIComponent(hit.id)}`);
      if (seq !== state.preview.seq) return;
      fillMeta({ ...hit, ...item }, hit.score);
      if (hit.media === "video" && Array.isArray(item.moments)) showVideo(hit, item.moments);
      if (item.file_url) {
        ui.pOpen.href = item.file_url;
        ui.pOpen.hidden = false;
      }
      fillOcr(item.ocr);
      const texts = Array.isArray(item.texts) ? item.texts : [];
      fillTexts(texts);
      ui.pStatus.textContent = texts.length ? "" : "No texts are indexed yet, so there are no captions to show.";
    } catch (err) {
      if (seq !== state.preview.seq) return;
      ui.pStatus.textContent = err.status === 401 ? "An API key is needed: close this preview and enter it." : err.message;
      ui.pStatus.classList.add("error");
      if (err.status === 401) askForKey({ focus: false });
    }
  }

  function closePreview() {
    if (ui.dialog.open) ui.dialog.close();
    hideVideo();
  }

  // ---- API key session -------------------------------------------------------------------
  // Thumbnails are plain <img> elements, which cannot send an Authorization header; the server
  // therefore trades the key for an HttpOnly cookie that the browser sends with every read.
  function askForKey({ focus }) {
    ui.sessionBar.hidden = true;
    ui.keyForm.hidden = false;
    if (focus && !ui.dialog.open) ui.keyInput.focus();
  }

  function keyMessage(text) {
    ui.keyMessage.textContent = text;
  }

  async function unlock(event) {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) {
      keyMessage("Enter the API key first.");
      ui.keyInput.focus();
      return;
    }
    // fetch() cannot put other characters in a header; such a key cannot be a valid one here.
    if (/[^\x20-\x7e\xa0-\xff]/.test(key)) {
      keyMessage("The API key was refused.");
      ui.keyInput.select();
      return;
    }
    keyMessage("");
    ui.keySubmit.disabled = true;
    try {
      await api("/api/session", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
    } catch (err) {
      keyMessage(err.status === 403 ? "The API key was refused."
        : err.status === 401 ? "Enter the API key first." : err.message);
      ui.keyInput.select();
      ui.keyInput.focus();
      return;
    } finally {
      ui.keySubmit.disabled = false;
    }
    ui.keyInput.value = "";
    ui.keyForm.hidden = true;
    ui.sessionBar.hidden = false;
    if (!state.query) {
      setStatus("Unlocked. Type a description, or drop or paste an image anywhere on the page.");
      ui.q.focus();
      return;
    }
    if (state.query.kind === "item" && state.query.thumb) ui.exampleImg.src = state.query.thumb;
    ui.results.focus({ preventScroll: true });
    runSearch(); // the search that needed the key
  }

  async function forgetKey() {
    if (state.controller) state.controller.abort();
    try {
      await api("/api/session", { method: "DELETE" });
    } catch (err) {
      setStatus(err.message, true);
      return;
    }
    clearResults();
    ui.more.hidden = true;
    state.hasMore = false;
    setStatus("The key was forgotten in this browser. Enter it again to search.");
    askForKey({ focus: true });
  }

  // On load: say at once when the server needs a key, and offer "forget" for a live session.
  async function checkSession() {
    let session;
    try {
      session = await api("/api/session");
    } catch (err) {
      return; // a failed search will still ask for the key when one is needed
    }
    if (!session.key_required) return; // an open server: nothing to unlock or forget
    if (session.active) {
      if (ui.keyForm.hidden) ui.sessionBar.hidden = false;
    } else {
      if (!state.query) setStatus(KEY_NEEDED);
      askForKey({ focus: false });
    }
  }

  // ---- events ---------------------------------------------------------------------------
  ui.keyForm.addEventListener("submit", unlock);
  ui.keyForget.addEventListener("click", forgetKey);
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    startTextSearch(ui.q.value);
  });

  ui.pick.addEventListener("click", () => ui.file.click());
  ui.file.addEventListener("change", () => {
    const file = ui.file.files && ui.file.files[0];
    if (file) startImageSearch(file, file.name);
    ui.file.value = ""; // choosing the same file again must fire "change" again
  });
  ui.exampleClear.addEventListener("click", clearExample);

  ui.filters.addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.query) runSearch();
  });
  ui.filters.addEventListener("reset", () => {
    // The form's values are reset after this event; search again once they are.
    setTimeout(() => state.query && runSearch(), 0);
  });
  ui.filters.elements.sort.addEventListener("change", () => state.query && runSearch());
  ui.onlyRelevant.addEventListener("change", () => state.query && runSearch());
  if (ui.foldSimilar) ui.foldSimilar.addEventListener("change", () => state.query && runSearch());
  ui.showCut.addEventListener("click", () => {
    ui.onlyRelevant.checked = false;
    if (state.query) runSearch();
  });
  ui.filters.elements.media.addEventListener("change", () => state.query && runSearch());

  ui.more.addEventListener("click", () => runSearch({ append: true }));
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) maybeLoadMore();
    }, { rootMargin: "400px 0px" }).observe(ui.sentinel);
  }

  ui.pClose.addEventListener("click", closePreview);
  ui.pSimilar.addEventListener("click", () => {
    const hit = state.preview.hit;
    state.preview.opener = null; // its button is about to be replaced
    closePreview();
    if (hit) startItemSearch(hit);
  });
  // A click on the backdrop lands on the <dialog> element itself.
  ui.dialog.addEventListener("click", (event) => {
    if (event.target === ui.dialog) closePreview();
  });
  ui.dialog.addEventListener("close", () => {
    state.preview.seq += 1; // ignore a details request still in flight
    hideVideo(); // Escape closes the dialog without closePreview(): stop the video here too
    const opener = state.preview.opener;
    state.preview.opener = null;
    if (opener && opener.isConnected) opener.focus();
  });

  // Drag and drop anywhere on the page; only files count (we never fetch dropped URLs).
  let dragDepth = 0;
  const carriesFiles = (event) => Array.from((event.dataTransfer && event.dataTransfer.types) || []).includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth += 1;
    ui.overlay.hidden = false;
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) ui.overlay.hidden = true;
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", (event) => {
    dragDepth = 0;
    ui.overlay.hidden = true;
    if (!carriesFiles(event)) return;
    event.preventDefault();
    const file = firstImage(event.dataTransfer.files);
    if (file) startImageSearch(file, file.name);
    else setStatus("Drop an image file (JPEG, PNG, WebP, GIF, BMP or TIFF).", true);
  });

  // Pasting an image (e.g. a screenshot) searches with it; pasting text behaves normally.
  document.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.files);
    if (!file) return;
    event.preventDefault();
    startImageSearch(file, file.name && file.name !== "image.png" ? file.name : "pasted image");
  });

  // ---- start -------------------------------------------------------------------------------
  const initial = new URLSearchParams(location.search);
  if (initial.get("q")) {
    ui.q.value = initial.get("q");
    startTextSearch(ui.q.value);
  } else if (/^\d+$/.test(initial.get("moment") || "")) {
    const id = Number(initial.get("moment"));
    state.query = { kind: "moment", id, name: `moment ${id}`, thumb: null };
    showExample(null, `More like moment ${id}`, false);
    runSearch();
  } else if (/^\d+$/.test(initial.get("like") || "")) {
    const id = Number(initial.get("like"));
    startItemSearch({ id, name: `item ${id}`, thumbnail_url: `/api/items/${id}/thumbnail` }, { focusResults: false });
  }
  if (!initial.get("like") && !initial.get("moment")) ui.q.focus();
  checkSession();
})();
