// The search page: calls the service's own JSON API (no external scripts; works offline).
"use strict";

const $ = (id) => document.getElementById(id);

function element(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

async function call(url, options = {}) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function watchHealth() {
  const status = $("status");
  try {
    await call("/health");
    const info = await call("/index");
    status.textContent = `${info.documents} documents · ${info.model.split("/").pop()} · layer ${info.layer}`;
    status.className = "status ready";
  } catch (error) {
    status.textContent = error.message;
    status.className = "status error";
    setTimeout(watchHealth, 1000);
  }
}

// The document text with the matched passage highlighted (offsets are character positions).
function highlighted(text, passage) {
  const node = element("p", { class: "text" });
  const start = Math.max(0, Math.min(passage.start, text.length));
  const end = Math.max(start, Math.min(passage.end, text.length));
  const wholeDocument = start === 0 && end === text.length;
  if (wholeDocument) {
    node.append(text);
    return node;
  }
  node.append(text.slice(0, start), element("mark", {}, text.slice(start, end)), text.slice(end));
  return node;
}

function showHits(hits) {
  const list = $("results");
  list.replaceChildren();
  for (const hit of hits) {
    const meta = element("div", { class: "meta" });
    for (const [key, value] of Object.entries(hit.metadata || {})) {
      if (key === "answer" || key === "answers" || key === "faq_id") continue;
      meta.append(element("span", {}, `${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`));
    }
    list.append(element("li", { class: "hit", "data-id": hit.id },
      element("header", {}, element("span", { class: "id" }, hit.id),
        element("span", { class: "score" }, hit.score.toFixed(3))),
      highlighted(hit.text, hit.passage), meta));
  }
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = $("search-query").value.trim();
  if (!q) return;
  const note = $("search-note");
  note.textContent = "searching…";
  try {
    const started = performance.now();
    const result = await call(`/search?q=${encodeURIComponent(q)}&k=${$("search-k").value}&full_text=true`);  // the page shows the whole document
    showHits(result.hits);
    note.textContent = result.hits.length
      ? `${result.hits.length} results in ${Math.round(performance.now() - started)} ms`
      : "no matching documents";
  } catch (error) {
    $("results").replaceChildren();
    note.textContent = error.message;
  }
});

$("faq-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("faq-question").value.trim();
  if (!question) return;
  const box = $("faq-answer");
  box.replaceChildren(element("p", { class: "note" }, "thinking…"));
  try {
    const reply = await call("/faq/answer", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ question }),
    });
    if (reply.confident) {
      box.replaceChildren(element("div", { class: "answer", id: "faq-confident" },
        element("h2", {}, reply.match.question),
        element("p", {}, reply.match.answer || "(no answer text)"),
        element("p", { class: "matched" }, `score ${reply.match.score.toFixed(3)}`)));
    } else {
      const closest = element("ul");
      for (const m of reply.runners_up) closest.append(element("li", {}, m.question));
      box.replaceChildren(element("div", { class: "unsure", id: "faq-unsure" },
        element("h2", {}, "Not sure."),
        element("p", {}, "None of the answers fits well enough. The closest questions are:"), closest));
    }
  } catch (error) {
    box.replaceChildren(element("p", { class: "note" }, error.message));
  }
});

for (const tab of document.querySelectorAll(".tabs button")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".tabs button")) {
      other.setAttribute("aria-selected", String(other === tab));
      $(other.dataset.panel).hidden = other !== tab;
    }
  });
}

watchHealth();
