// The duplicates view: groups from GET /api/duplicates, the suggested keeper first and
// marked, and a "Not duplicates" button that records the decision (POST
// /api/duplicates/decisions, with the API key typed on the page, never stored).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $("dup-form"), threshold: $("dup-threshold"), key: $("dup-key"),
    status: $("dup-status"), groups: $("dup-groups"), template: $("dup-group-template"),
  };

  function setStatus(text, isError = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle("error", isError);
  }

  async function api(url, options = {}) {
    const resp = await fetch(url, { credentials: "same-origin", ...options });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const err = new Error((body && body.error) || `HTTP ${resp.status}`);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  function formatBytes(n) {
    if (typeof n !== "number") return "";
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  function renderItem(item, keeper) {
    const li = document.createElement("li");
    li.className = "dup-item" + (item.id === keeper ? " keeper" : "");
    li.dataset.id = String(item.id);
    const a = document.createElement("a");
    a.href = item.file_url;
    a.target = "_blank";
    a.rel = "noopener";
    const img = document.createElement("img");
    img.alt = item.name || item.path;
    img.loading = "lazy";
    img.src = `${item.thumbnail_url}?size=256`;
    a.append(img);
    const cap = document.createElement("p");
    cap.className = "dup-caption";
    const label = item.id === keeper ? "Keep · " : "";
    cap.textContent = `${label}${item.path} · ${item.width}×${item.height} · ` +
      `${formatBytes(item.size)} · distance ${Number(item.distance).toFixed(4)}`;
    li.append(a, cap);
    return li;
  }

  function renderGroup(group) {
    const node = ui.template.content.firstElementChild.cloneNode(true);
    node.querySelector(".dup-kind").textContent =
      `${group.kind === "identical" ? "Identical files" : "Near-identical pictures"} (${group.count})`;
    const list = node.querySelector(".dup-items");
    for (const item of group.items) list.append(renderItem(item, group.keeper));
    const button = node.querySelector(".dup-distinct");
    if (group.kind === "identical") button.hidden = true;
    button.addEventListener("click", async () => {
      const key = ui.key.value.trim();
      const headers = { "Content-Type": "application/json" };
      if (key) headers.Authorization = `Bearer ${key}`;
      button.disabled = true;
      try {
        await api("/api/duplicates/decisions", {
          method: "POST", headers,
          body: JSON.stringify({ item_ids: group.items.map((i) => i.id), not_duplicates: true }),
        });
        node.remove();
        setStatus("Remembered: these are not duplicates.");
      } catch (err) {
        button.disabled = false;
        setStatus(err.status === 401 || err.status === 403
          ? "An API key with write access is needed: type it above." : err.message, true);
      }
    });
    return node;
  }

  async function load() {
    const t = ui.threshold.value.trim() || "0.01";
    setStatus("Looking for duplicates…");
    try {
      const body = await api(`/api/duplicates?${new URLSearchParams({ threshold: t })}`);
      ui.groups.replaceChildren(...body.groups.map(renderGroup));
      setStatus(`${body.groups.length} groups (${body.identical_groups} identical, ` +
        `${body.near_groups} near-identical) among ${body.items_compared} items.`);
    } catch (err) {
      ui.groups.replaceChildren();
      setStatus(err.status === 401 ? "An API key is needed: unlock the search page first." : err.message, true);
    }
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  load();
})();
