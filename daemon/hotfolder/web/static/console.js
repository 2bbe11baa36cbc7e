// The operator console: upload, follow, preview, download, retry, process again, delete.
// Every name comes from the share and is shown as text (textContent), never as markup.
"use strict";

const API = "/api/v1/";
const PARTS = {
  attention: ["failed", "quarantined", "waiting"],
  progress: ["queued", "running"],
  done: ["done"],
};
const DONE_SHOWN = 50;
const jobs = new Map();
let folders = [];
let events = null;

function $(id) { return document.getElementById(id); }

function element(tag, props, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children || []) node.append(child);
  return node;
}

function say(text) { $("status").textContent = text; }

// Answers and events can cross: what an upload's answer says may be older than an event.
function remember(job) {
  const known = jobs.get(job.id);
  if (!known || known.updated <= job.updated) jobs.set(job.id, job);
}

async function call(path, options) {
  const response = await fetch(API + path, Object.assign({ credentials: "same-origin" }, options));
  if (response.status === 401 && path !== "session") {
    showLogin();
    throw new Error("the token is needed");
  }
  if (!response.ok) {
    let words = response.status + " " + response.statusText;
    try { words = (await response.json()).error || words; } catch (e) { /* not JSON */ }
    throw new Error(words);
  }
  return response.status === 204 ? null : response.json();
}

function showLogin() {
  $("console").hidden = true;
  $("login").hidden = false;
  if (events) { events.close(); events = null; }
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  try {
    await call("session", { method: "POST", headers: { "Content-Type": "application/json" },
                            body: JSON.stringify({ token: $("token").value }) });
    $("token").value = "";
    $("login-error").textContent = "";
    start();
  } catch (error) {
    $("login-error").textContent = error.message;
  }
}

async function start() {
  try {
    folders = await call("folders");
  } catch (error) {
    say(error.message);
    return;
  }
  $("login").hidden = true;
  $("console").hidden = false;
  const chooser = $("folder");
  const chosen = chooser.value;
  chooser.replaceChildren(...folders.map((f) =>
    element("option", { value: f.path, text: f.path + (f.description ? " - " + f.description : "") })));
  if (chosen) chooser.value = chosen;
  showSteps();
  follow();
}

function showSteps() {
  const folder = folders.find((f) => f.path === $("folder").value);
  $("folder-steps").textContent = folder ? folder.steps.join(", ") || "delivered unchanged" : "";
}

function follow() {
  if (events) events.close();
  events = new EventSource(API + "events");
  events.addEventListener("open", async () => {
    say("following the jobs");
    try {
      for (const job of await call("jobs?limit=200")) remember(job);
      render();
    } catch (error) { say(error.message); }
  });
  events.addEventListener("job", (message) => {
    const job = JSON.parse(message.data);
    remember(job);
    render();
  });
  events.addEventListener("error", () => say("reconnecting to the service..."));
}

async function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  form.append("folder", $("folder").value);
  for (const file of files) form.append("files", file, file.name);
  const result = $("upload-result");
  result.className = "";
  result.textContent = "sending " + files.length + " file(s)...";
  try {
    const sent = await call("uploads", { method: "POST", body: form });
    for (const job of sent) remember(job);
    result.textContent = "sent: " + sent.map((j) => j.name).join(", ");
    render();
  } catch (error) {
    result.className = "error";
    result.textContent = "not sent: " + error.message;
  }
}

function partOf(state) {
  return Object.keys(PARTS).find((part) => PARTS[part].includes(state));
}

function render() {
  const lists = { attention: [], progress: [], done: [] };
  const newest = [...jobs.values()].sort((a, b) => (a.created < b.created ? 1 : -1));
  for (const job of newest) lists[partOf(job.state)].push(job);
  lists.done = lists.done.slice(0, DONE_SHOWN);
  for (const [part, list] of Object.entries(lists)) {
    const target = $(part);
    const focused = document.activeElement && target.contains(document.activeElement)
      ? document.activeElement : null;
    const existing = new Map([...target.children].map((li) => [li.dataset.id, li]));
    const items = list.map((job) => {
      const old = existing.get(job.id);
      return old && old.dataset.key === key(job) ? old : jobItem(job);
    });
    target.replaceChildren(...items);
    if (focused && document.contains(focused)) focused.focus();
    $(part + "-count").textContent = "(" + list.length + ")";
  }
}

function key(job) { return job.state + "|" + (job.reason || "") + "|" + job.updated; }

function jobItem(job) {
  const li = element("li", { class: "job", "data-id": job.id, "data-state": job.state,
                             "data-key": key(job) });
  li.append(element("div", { class: "head" }, [
    element("span", { class: "name", text: job.name }),
    element("span", { class: "state", text: job.state }),
    element("span", { class: "folder", text: job.folder ? job.folder + "/" : "inbox" }),
    element("time", { class: "time", datetime: job.updated,
                      text: new Date(job.updated).toLocaleTimeString() }),
  ]));
  if (job.reason) li.append(element("p", { class: "reason", text: job.reason }));
  const folder = folders.find((f) => f.path === job.folder);
  if (folder) {
    li.append(element("p", { class: "steps", text: "steps: " + (folder.steps.join(", ") || "none") }));
  }
  if (job.state === "done") {
    li.append(element("div", { class: "previews" }, ["before", "after"].map((side) =>
      element("figure", {}, [
        element("img", { src: API + "jobs/" + job.id + "/preview?side=" + side, loading: "lazy",
                         alt: side + " " + job.name }),
        element("figcaption", { text: side }),
      ]))));
  }
  li.append(actions(job));
  return li;
}

function actions(job) {
  const row = element("div", { class: "actions" });
  const path = "jobs/" + job.id;
  if (job.state === "done") {
    row.append(element("a", { class: "button", href: API + path + "/download", download: "",
                              text: "Download" }));
  }
  if (job.state === "failed") {
    row.append(element("button", { type: "button", text: "Retry",
                                   onclick: () => act(path + "/retry", "POST") }));
  }
  if (job.state === "done") {
    const chooser = element("select", { "aria-label": "folder to process " + job.name + " again in" },
      folders.map((f) => element("option", { value: f.path, text: f.path })));
    const steps = element("input", { type: "text", class: "again-steps", placeholder: "or steps: invert+png",
                                     "aria-label": "steps to process " + job.name + " again with" });
    row.append(chooser, steps, element("button", { type: "button", text: "Process again",
      onclick: () => act(path + "/process", "POST",
                         steps.value.trim() ? { steps: steps.value.trim() } : { folder: chooser.value }) }));
  }
  if (PARTS.attention.includes(job.state) && job.state !== "waiting" || job.state === "done") {
    row.append(element("button", { type: "button", text: "Delete", onclick: () => remove(job) }));
  }
  return row;
}

async function act(path, method, body) {
  try {
    const options = { method };
    if (body) Object.assign(options, { headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify(body) });
    const job = await call(path, options);
    if (job) remember(job);
    render();
  } catch (error) { say(error.message); }
}

async function remove(job) {
  let path = "jobs/" + job.id;
  if (job.state === "quarantined") {
    if (!window.confirm("Delete the quarantined file " + job.name + " for good?")) return;
    path += "?quarantine=yes";
  }
  try {
    await call(path, { method: "DELETE" });
    jobs.delete(job.id);
    render();
    say(job.name + " deleted");
  } catch (error) { say(error.message); }
}

function setUp() {
  $("login").addEventListener("submit", login);
  $("folder").addEventListener("change", showSteps);
  $("picker").addEventListener("change", (event) => {
    upload([...event.target.files]);
    event.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    upload([...event.dataTransfer.files]);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("picker").click(); }
  });
  start();
}

setUp();
