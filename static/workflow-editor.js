// Live preview for the admin workflow editor: renders each step's unsaved content as the admin types.
// The editor works without this script; the Preview forms below it render saved steps on submit.
(() => {
  "use strict";

  const form = document.querySelector("form.workflow-form");
  const sample = document.getElementById("live-sample");
  const boxes = Array.from(document.querySelectorAll(".live-preview"));
  if (!form || !sample || boxes.length === 0) return;

  const DELAY_MS = 300;
  const token = form.querySelector("input[name='_csrf_token']");
  const payload = document.getElementById("live-payload");
  const subscriber = document.getElementById("live-subscriber");
  const timers = new Map();
  // Each box shows the response to its latest request only, so a slow response cannot overwrite a newer one.
  const latest = new Map();
  sample.hidden = false;

  function fieldsOf(prefix) {
    const fields = new URLSearchParams();
    for (const element of form.elements) {
      if (element.name && element.name.startsWith(prefix)) {
        fields.append(element.name.slice(prefix.length), element.value);
      }
    }
    return fields;
  }

  function show(box, result) {
    box.replaceChildren();
    const heading = document.createElement("p");
    heading.className = "hint";
    heading.textContent = "Live preview";
    box.append(heading);
    if (result.error) {
      const error = document.createElement("pre");
      error.className = "error-text";
      error.textContent = result.error;
      box.append(error);
      return;
    }
    const list = document.createElement("dl");
    for (const [path, text] of result.rendered) {
      const term = document.createElement("dt");
      term.textContent = path;
      const value = document.createElement("dd");
      const rendered = document.createElement("pre");
      rendered.className = "rendered";
      rendered.textContent = text;
      value.append(rendered);
      list.append(term, value);
    }
    box.append(list);
  }

  async function refresh(box) {
    const fields = fieldsOf(box.dataset.prefix);
    fields.set("type", box.dataset.type);
    fields.set("payload", payload.value);
    fields.set("subscriber", subscriber.value);
    fields.set("name", form.elements.name ? form.elements.name.value : "");
    fields.set("workflowId", form.elements.workflowId ? form.elements.workflowId.value : "");
    if (token) fields.set("_csrf_token", token.value);
    const request = (latest.get(box) || 0) + 1;
    latest.set(box, request);
    try {
      const response = await fetch("/admin/workflows/live-preview", {
        method: "POST",
        body: fields,
        credentials: "same-origin",
      });
      const result = await response.json();
      if (latest.get(box) !== request) return;
      box.hidden = false;
      show(box, result);
    } catch (error) {
      if (latest.get(box) !== request) return;
      box.hidden = false;
      show(box, { error: `Preview failed: ${error.message}` });
    }
  }

  function schedule(box) {
    clearTimeout(timers.get(box));
    timers.set(box, setTimeout(() => refresh(box), DELAY_MS));
  }

  form.addEventListener("input", (event) => {
    const target = event.target;
    if (target === payload || target === subscriber || target.name === "name" || target.name === "workflowId") {
      boxes.forEach(schedule);
      return;
    }
    const box = boxes.find((candidate) => target.name && target.name.startsWith(candidate.dataset.prefix));
    if (box) schedule(box);
  });
  boxes.forEach(refresh);
})();
