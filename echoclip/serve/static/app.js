// The page of `echoclip serve`: plain DOM, no libraries. Server text is shown with
// textContent only, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

// A long report shows its first lines; a click shows it whole.
function report(text, tag) {
  const node = el(tag, text ?? "", "clamp");
  node.title = "click to show the whole report";
  node.addEventListener("click", () => node.classList.toggle("open"));
  return node;
}

function pct(p) {
  return p === null || p === undefined ? "–" : `${Math.round(100 * p)}%`;
}

async function answer(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new Error(detail || `the server answered ${response.status}`);
  }
  return body;
}

function say(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

// rows: {label, title, p, nb}; with `neighbours`, a fourth column holds each row's neighbour label
function bars(container, rows, neighbours) {
  container.replaceChildren();
  container.classList.toggle("nb", Boolean(neighbours));
  for (const row of rows) {
    const fill = el("div");
    fill.style.width = `${Math.round(100 * (row.p || 0))}%`;
    const bar = el("div", null, "bar");
    bar.append(fill);
    const label = el("span", row.label);
    if (row.title) label.title = row.title;
    container.append(label, bar, el("span", pct(row.p), "value"));
    if (neighbours) container.append(el("span", `nb ${pct(row.nb)}`, "value muted"));
  }
}

function showDraft(draft) {
  const box = $("draft");
  const body = $("draft-table").querySelector("tbody");
  body.replaceChildren();
  box.hidden = !draft;
  if (!draft) return;
  for (const s of draft.sections) {
    const tr = el("tr");
    const text = el("td");
    if (s.message) text.append(el("span", s.message, "muted"));
    else text.append(report(s.text, "div"));
    tr.append(
      el("td", s.heading),
      text,
      el("td", s.study_id ?? "–"),
      el("td", s.similarity === null || s.similarity === undefined ? "–" : s.similarity.toFixed(3), "num"),
      el("td", s.presence === null || s.presence === undefined ? "–" : s.presence.toFixed(2), "num"),
    );
    body.append(tr);
  }
}

function showVideoResult(result) {
  const v = result.video;
  $("preview").src = result.preview;
  $("video-info").textContent =
    result.level === "study"
      ? `one study of ${result.videos.length} videos (${result.videos.map((x) => x.file).join(", ")})` +
        (result.skipped.length ? `; ${result.skipped.length} files not read` : "")
      : `${v.file}: ${v.frames} frames, ${v.width}×${v.height}, ${v.fps.toFixed(1)} fps`;

  // the server's words when the video is unlike the training videos: its answers follow, marked
  const warning = $("ood-warning");
  const ood = result.ood;
  warning.textContent = ood && ood.out_of_distribution ? ood.warning : "";
  warning.hidden = !(ood && ood.out_of_distribution);
  $("video-results").classList.toggle("untrusted", !warning.hidden);

  const ef = result.findings.ejection_fraction;
  $("ef").textContent = ef ? `${Math.round(ef.value)}${ef.unit}` : "–";
  $("ef-sd").textContent = ef ? `± ${ef.sd.toFixed(1)}${ef.unit}` : "";

  // neighbour labels: the mean label of the k nearest reference reports, beside the prompts'
  const k = result.findings.neighbours_k;
  const efNb = $("ef-nb");
  efNb.hidden = !(k && ef && ef.neighbours !== null && ef.neighbours !== undefined);
  efNb.textContent = efNb.hidden ? "" : `neighbours: ${Math.round(ef.neighbours)}${ef.unit} (${k} nearest reports)`;
  const legend = $("nb-legend");
  legend.hidden = !k;
  legend.textContent = k ? `nb: the share of the ${k} nearest reference reports whose study has it` : "";

  const binary = result.findings.binary;
  const asBars = (group) =>
    binary
      .filter((b) => b.group === group)
      .map((b) => ({ label: b.name.replaceAll("_", " "), title: b.description, p: b.probability, nb: b.neighbours }));
  bars($("devices"), asBars("devices"), k);
  bars($("findings"), asBars("findings"), k);
  const view = result.findings.categorical.find((c) => c.name === "view");
  bars($("views"), view ? Object.entries(view.probabilities).map(([label, p]) => ({ label, p })) : []);

  const body = $("reports").querySelector("tbody");
  body.replaceChildren();
  for (const hit of result.results) {
    const text = el("td");
    text.append(report(hit.report, "div"));
    const tr = el("tr");
    tr.append(
      el("td", hit.rank, "num"),
      el("td", hit.score.toFixed(3), "num"),
      el("td", hit.study_id ?? "–"),
      text,
    );
    body.append(tr);
  }
  showDraft(result.draft);
  $("video-results").hidden = false;
}

async function upload(files) {
  // several files are one study: the server pools them into one answer
  const status = $("status");
  say(status, files.length > 1 ? `Reading ${files.length} files of one study…` : `Reading ${files[0].name}…`);
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  try {
    const result = await answer(await fetch("/api/search/video?k=5", { method: "POST", body: form }));
    showVideoResult(result);
    const t = result.timing_ms;
    say(status, `Done: decoded in ${t.decode} ms, embedded in ${t.embed} ms, searched in ${t.search} ms.`);
  } catch (e) {
    $("video-results").hidden = true;
    say(status, e.message, true);
  }
}

async function searchText(text) {
  const status = $("text-status");
  const grid = $("videos");
  say(status, "Searching…");
  try {
    const result = await answer(
      await fetch("/api/search/text", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text, k: 8 }),
      }),
    );
    grid.replaceChildren();
    for (const hit of result.results) {
      const card = el("div", null, "card");
      const img = el("img");
      img.alt = `a still of study ${hit.study_id ?? hit.row}`;
      img.addEventListener("error", () => img.replaceWith(el("div", "(no still: the file is not on the server)", "muted")));
      if (hit.thumbnail) img.src = hit.thumbnail;
      const caption = `#${hit.rank} · ${hit.score.toFixed(3)} · ${hit.study_id ?? ""}`;
      card.append(img, el("div", caption), report(hit.report, "div"));
      grid.append(card);
    }
    say(status, `${result.results.length} videos in ${(result.timing_ms.embed + result.timing_ms.search).toFixed(0)} ms.`);
  } catch (e) {
    say(status, e.message, true);
  }
}

async function showServed() {
  try {
    const h = await answer(await fetch("/api/health"));
    const sizes = Object.entries(h.indexes).map(([name, n]) => `${n.toLocaleString()} ${name}`).join(", ");
    $("served").textContent = `model ${h.model} on ${h.device} · index of ${sizes}`;
  } catch (e) {
    $("served").textContent = e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    if (e.target.files.length) upload([...e.target.files]);
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) upload([...e.dataTransfer.files]);
  });
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (text) searchText(text);
  });
  showServed();
});
