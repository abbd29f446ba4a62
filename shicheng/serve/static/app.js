// The clinician page: sends the case to /v1/consult/stream and renders the answer as it arrives.
// Model text is only ever set with textContent, never as HTML: it is untrusted.
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const SECTION_ORDER = CONFIG.sections.map((s) => s.key);
const SECTION_TITLE = Object.fromEntries(CONFIG.sections.map((s) => [s.key, `${s.zh} ${s.en}`]));
const LEVEL_ORDER = { error: 0, warning: 1, notice: 2 };
const FORM_TEXT_FIELDS = ["chief_complaint", "present_illness", "history", "tongue", "pulse", "text",
  "previous_prescription"];

const $ = (id) => document.getElementById(id);
let taskTouched = false;

function apiKey() {
  return $("api_key").value.trim() || sessionStorage.getItem("shicheng-api-key") || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
    return JSON.stringify(body);
  } catch (_e) {
    return `${response.status} ${response.statusText}`;
  }
}

function showError(message) {
  const el = $("form-error");
  el.textContent = message;
  el.hidden = !message;
}

function needKey(message) {
  // The key field sits at the top of the form, and is brought into view: the clinician must see it.
  $("api-key-row").hidden = false;
  $("api-key-message").textContent = `— ${message}`;
  showError(`${message} — enter the API key and try again.`);
  $("api-key-row").scrollIntoView({ block: "nearest" });
  $("api_key").focus();
}

// ---- masters and tasks ----------------------------------------------------------------------------------
async function loadMasters() {
  const select = $("master");
  const response = await fetch("/v1/models", { headers: authHeaders() });
  if (response.status === 401) {
    select.replaceChildren(new Option("(API key needed)", ""));
    needKey(await errorMessage(response));
    return;
  }
  if (!response.ok) {
    showError(`could not list masters: ${await errorMessage(response)}`);
    return;
  }
  const body = await response.json();
  select.replaceChildren();
  for (const model of body.data) {
    const m = model.master;
    const label = m ? `${m.name} · ${m.school}${m.fictional ? " (fictional)" : ""}` : "通用 Generic (no master)";
    const option = new Option(label, m ? m.id : "");
    option.title = label;
    select.appendChild(option);
  }
  // A master is the point of the page: preselect the first one when the model has any.
  if (select.options.length > 1) select.selectedIndex = 1;
}

function fillTasks() {
  const select = $("task");
  for (const t of CONFIG.tasks) select.appendChild(new Option(`${t.zh} (${t.value})`, t.value));
  select.value = "full_chain";
  select.addEventListener("change", () => { taskTouched = true; });
  // A follow-up asks for the modification task unless the clinician chose a task.
  $("previous_prescription").addEventListener("input", (e) => {
    if (!taskTouched) select.value = e.target.value.trim() ? "modification" : "full_chain";
  });
}

// ---- the request --------------------------------------------------------------------------------------
function requestBody() {
  // Sex, age and pregnancy are sent only when given: otherwise the server reads them from the text.
  const body = { task: $("task").value };
  if ($("sex").value !== "unknown") body.sex = $("sex").value;
  if ($("pregnant").checked) body.pregnant = true;
  const master = $("master").value;
  if (master) body.master = master;
  const age = $("age").value.trim();
  if (age !== "") body.age = Number(age);
  for (const name of FORM_TEXT_FIELDS) {
    const value = $(name).value.trim();
    if (value) body[name] = value;
  }
  const maxTokens = $("max_tokens").value.trim();
  if (maxTokens) body.max_tokens = Number(maxTokens);
  const temperature = $("temperature").value.trim();
  if (temperature) body.temperature = Number(temperature);
  return body;
}

// Server-sent events over a POST (EventSource only does GET): read the stream, split on blank lines.
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function consult(event) {
  event.preventDefault();
  showError("");
  const key = $("api_key").value.trim();
  if (key) sessionStorage.setItem("shicheng-api-key", key);
  const button = $("submit");
  button.disabled = true;
  resetAnswer();
  setStatus("waiting for the model…");
  let raw = "";
  try {
    const response = await fetch("/v1/consult/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify(requestBody()),
    });
    if (response.status === 401) { needKey(await errorMessage(response)); return; }
    if (!response.ok) { showError(`${response.status}: ${await errorMessage(response)}`); return; }
    setStatus("generating…");
    for await (const ev of sseEvents(response)) {
      if (ev.type === "delta") {
        raw += ev.text;
        renderLive(raw);
      } else if (ev.type === "result") {
        renderResult(ev.consultation);
      } else if (ev.type === "error") {
        showError(ev.message);
      }
    }
    setStatus("done");
  } catch (e) {
    showError(`request failed: ${e.message}`);
    setStatus("");
  } finally {
    button.disabled = false;
  }
}

function setStatus(text) { $("status").textContent = text; }

// ---- rendering ----------------------------------------------------------------------------------------
function resetAnswer() {
  $("sections").replaceChildren();
  $("findings").hidden = true;
  $("findings-list").replaceChildren();
  $("no-findings").hidden = true;
  $("safety-coverage").hidden = true;
  $("patient-facts").hidden = true;
  $("prescription").hidden = true;
  $("changes").hidden = true;
  $("missing").hidden = true;
  $("raw").hidden = true;
  $("meta").textContent = "";
}

function headingKey(line) {
  // "## 辨证", "**辨证：**", "【处方】", "1. 方解：" -> a section key, or null for an ordinary line.
  const m = line.match(/^\s*(?:#{1,6}\s*)?(?:\*\*|__)?\s*(?:[(\[【〔]?[0-9一二三四五六七八九十]{1,2}[)\].、．\]】〕]?\s*)?(?:\*\*|__)?\s*[【\[〔]?([^:：】\]〕*#]{1,40}?)[】\]〕]?\s*(?:\*\*|__)?\s*[:：]?\s*(?:\*\*|__)?\s*$/);
  if (!m) return null;
  const name = m[1].normalize("NFKC").toLowerCase().replace(/\s+/g, " ").trim();
  return CONFIG.headings[name] || null;
}

// A tolerant reading of the partial answer, for display while it streams; the server's parse is final.
function liveSections(raw) {
  const sections = {};
  let rest = raw;
  const open = raw.search(/<\s*think\s*>/i);
  if (open >= 0) {
    const after = raw.slice(raw.indexOf(">", open) + 1);
    const close = after.search(/<\s*\/\s*think\s*>/i);
    sections.reasoning = close >= 0 ? after.slice(0, close) : after;
    rest = close >= 0 ? after.slice(after.indexOf(">", close) + 1) : "";
  }
  rest = rest.replace(/<\s*\/?\s*output\s*>/gi, "");
  let current = null;
  for (const line of rest.split("\n")) {
    const key = headingKey(line);
    if (key) { current = key; sections[key] = sections[key] || ""; continue; }
    if (current) sections[current] += `${line}\n`;
  }
  return sections;
}

function sectionElement(key) {
  let el = document.querySelector(`.answer-section[data-key="${key}"]`);
  if (el) return el;
  el = document.createElement("section");
  el.className = "answer-section";
  el.dataset.key = key;
  const title = document.createElement("h3");
  title.textContent = SECTION_TITLE[key] || key;
  const body = document.createElement("div");
  body.className = "body";
  el.append(title, body);
  // Keep the canonical order whatever order the model writes in.
  const container = $("sections");
  const later = [...container.children].find((c) => SECTION_ORDER.indexOf(c.dataset.key) > SECTION_ORDER.indexOf(key));
  container.insertBefore(el, later || null);
  return el;
}

function renderSections(sections, live) {
  for (const key of SECTION_ORDER) {
    if (!(key in sections)) continue;
    const el = sectionElement(key);
    el.classList.toggle("live", live);
    el.querySelector(".body").textContent = sections[key].trim();
  }
}

function renderLive(raw) {
  renderSections(liveSections(raw), true);
  $("raw-text").textContent = raw;
}

function renderResult(c) {
  $("sections").replaceChildren();
  renderSections(c.sections || {}, false);
  renderFindings(c.findings || [], c.prescription, c.safety);
  renderPatient(c.patient_facts || []);
  renderPrescription(c.prescription, c.prescription_unparsed || []);
  renderChanges(c.changes);
  if (c.missing && c.missing.length) {
    $("missing").textContent = `回答缺少 Missing from the answer: ${c.missing.map((k) => SECTION_TITLE[k] || k).join(", ")}`;
    $("missing").hidden = false;
  }
  $("raw-text").textContent = c.raw_text || "";
  $("raw").hidden = false;
  const t = c.timings || {};
  const tokens = c.prompt_tokens || c.completion_tokens
    ? `tokens: prompt ${c.prompt_tokens}, completion ${c.completion_tokens}` : "tokens: not reported by the backend";
  $("meta").textContent = tokens +
    (t.seconds != null ? ` · ${t.seconds.toFixed(2)} s` : "") +
    (t.first_token_s != null ? ` · first token ${t.first_token_s.toFixed(2)} s` : "") +
    ` · ${c.disclaimer || CONFIG.disclaimer}`;
}

const FIELD_ZH = { sex: "性别 sex", age: "年龄 age", pregnant: "妊娠 pregnancy" };
const SOURCE_ZH = { flag: "表单 form", header: "病历标题 header", text: "病历原文 text", case: "病例 case" };

function factValue(f) {
  if (f.field === "sex") return { male: "男 male", female: "女 female" }[f.value] || f.value;
  if (f.field === "pregnant") return f.value ? "妊娠 pregnant" : "未妊娠 not pregnant";
  return `${f.value}岁`;
}

function renderPatient(facts) {
  // Which patient facts the safety check used, and where each came from.
  const el = $("patient-facts");
  el.replaceChildren();
  el.appendChild(document.createTextNode("安全检查所用患者信息 Patient facts used by the safety check: "));
  if (!facts.length) {
    el.appendChild(document.createTextNode("none found — sex, age and pregnancy unknown, pregnancy rules not applied"));
  }
  for (const f of facts) {
    const span = document.createElement("span");
    span.className = "fact";
    span.dataset.field = f.field;
    span.dataset.source = f.source;
    const where = SOURCE_ZH[f.source] || f.source;
    span.textContent = `${FIELD_ZH[f.field] || f.field}: ${factValue(f)} (${where}${f.evidence ? `: “${f.evidence}”` : ""})`;
    el.appendChild(span);
  }
  el.hidden = false;
}

function renderCoverage(safety) {
  // Never "no findings" alone: say which herbs had no dose range and which names were not recognised.
  const el = $("safety-coverage");
  if (!safety) { el.hidden = true; return; }
  const notDosed = safety.not_dose_checked || [];
  const unknown = safety.unrecognised || [];
  el.textContent = `未核剂量 Not dose-checked: ${notDosed.join("、") || "无 none"} · ` +
    `未识别药名 Not recognised: ${unknown.join("、") || "无 none"}`;
  el.hidden = false;
}

function renderFindings(findings, prescription, safety) {
  const list = $("findings-list");
  list.replaceChildren();
  const sorted = [...findings].sort((a, b) => LEVEL_ORDER[a.level] - LEVEL_ORDER[b.level]);
  for (const f of sorted) {
    const li = document.createElement("li");
    li.className = `finding level-${f.level}`;
    li.dataset.rule = f.rule;
    const level = document.createElement("span");
    level.className = "level";
    level.textContent = `${f.level} · ${f.rule}`;
    const message = document.createElement("span");
    message.textContent = f.message;
    li.append(level, message);
    list.appendChild(li);
  }
  $("findings").hidden = sorted.length === 0;
  const herbs = prescription && prescription.herbs && prescription.herbs.length;
  $("no-findings").textContent = "未发现安全问题 No safety findings — within what was checked:";
  $("no-findings").hidden = !(sorted.length === 0 && herbs);
  if (herbs) renderCoverage(safety); else $("safety-coverage").hidden = true;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function renderPrescription(rx, unparsed) {
  const section = $("prescription");
  if (!rx || !rx.herbs || !rx.herbs.length) { section.hidden = true; return; }
  $("formula-name").textContent = rx.formula_name ? `· ${rx.formula_name}` : "";
  const body = $("rx-table").querySelector("tbody");
  body.replaceChildren();
  for (const h of rx.herbs) {
    const tr = document.createElement("tr");
    const dose = h.dose != null ? `${h.dose}${h.unit || ""}` : "";
    tr.append(cell(h.name || h.raw), cell(h.base || "unknown", h.base ? "" : "unknown"), cell(dose),
      cell(h.grams), cell(h.note));
    body.appendChild(tr);
  }
  $("administration").textContent = rx.administration ? `用法 Administration: ${rx.administration}` : "";
  $("unparsed").textContent = unparsed.length ? `未能识别 Not understood: ${unparsed.join(" | ")}` : "";
  $("unparsed").hidden = !unparsed.length;
  section.hidden = false;
}

function renderChanges(changes) {
  if (!changes) { $("changes").hidden = true; return; }
  $("changes-added").textContent = `加 Added: ${(changes.added || []).join("、") || "无 none"}`;
  $("changes-removed").textContent = `去 Removed: ${(changes.removed || []).join("、") || "无 none"}`;
  $("changes").hidden = false;
}

// ---- start --------------------------------------------------------------------------------------------
fillTasks();
$("case-form").addEventListener("submit", consult);
$("api_key").addEventListener("change", () => { showError(""); loadMasters(); });
loadMasters().catch((e) => showError(`could not list masters: ${e.message}`));
