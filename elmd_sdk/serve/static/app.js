"use strict";
// ELMD web chat: streams the replies of POST /v1/chat/completions and shows each reply's emotion and probabilities;
// the emotion of each user message, with its probabilities, comes from POST /v1/decisions (utterance_emotion).

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "elmd-api-key";
const state = { model: null, history: [], controller: null };

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function headers() {
  const key = $("api-key").value.trim();
  const result = { "Content-Type": "application/json" };
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

// The server's {"error": {"message": ...}} as an Error (or the HTTP status when the body is not such an object).
async function failure(response) {
  let message = `HTTP ${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body.error?.message) message = `${body.error.message} (HTTP ${response.status})`;
  } catch {
    // not JSON: the status line says what happened
  }
  if (response.status === 401) message += " Enter the server's API key in the settings.";
  return new Error(message);
}

function showError(error) {
  $("error").textContent = `Error: ${error.message}`;
  $("error").hidden = false;
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) throw await failure(response);
  const model = (await response.json()).data[0];
  const select = $("emotion");
  const chosen = select.value;
  select.replaceChildren(new Option("auto (predicted)", "auto"), ...model.emotions.map((label) => new Option(label)));
  select.value = model.emotions.includes(chosen) ? chosen : "auto";
  $("video").disabled = !model.video;
  $("video-note").textContent = model.video
    ? "Sent with your next message."
    : "This model does not use video.";
  $("model").textContent = `model ${model.id} · ${model.emotions.length} emotions`;
  state.model = model;
  return model;
}

function connect() {
  $("error").hidden = true;
  loadModel().catch((error) => {
    $("model").textContent = "not connected";
    showError(error);
  });
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function requestBody(model, text) {
  const body = { model: model.id, messages: [...state.history, { role: "user", content: text }], stream: true };
  const background = $("background").value.trim();
  if (background) body.background = background;
  if ($("emotion").value !== "auto") body.emotion = $("emotion").value;
  const file = $("video").files[0];
  if (file && !$("video").disabled) body.video = { data: await readBase64(file), filename: file.name };
  return body;
}

function scrollDown() {
  $("conversation").scrollTop = $("conversation").scrollHeight;
}

function addUser(text) {
  const bubble = element("div", "user");
  const bars = element("ul", "bars");
  bars.setAttribute("aria-label", "Your emotion's probabilities");
  bubble.append(element("span", "emotion"), element("p", "text", text), bars);
  const file = $("video").files[0];
  if (file && !$("video").disabled) bubble.append(element("p", "attachment", `📎 ${file.name}`));
  $("conversation").append(bubble);
  return bubble;
}

function addBot() {
  const bot = element("article", "bot");
  bot.setAttribute("aria-busy", "true");
  const bars = element("ul", "bars");
  bars.setAttribute("aria-label", "Emotion probabilities");
  bot.append(element("span", "emotion"), element("p", "text"), bars);
  $("conversation").append(bot);
  scrollDown();
  return bot;
}

function showEmotion(bot, label, scores) {
  bot.dataset.emotion = label;
  bot.querySelector(".emotion").textContent = label;
  const rows = Object.entries(scores).map(([name, p]) => {
    const row = element("li", name === label ? "bar chosen" : "bar");
    row.dataset.emotion = name;
    const track = element("span", "track");
    const fill = element("span", "fill");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(fill);
    row.append(element("span", "name", name), track, element("span", "percent", `${Math.round(100 * p)}%`));
    return row;
  });
  bot.querySelector(".bars").replaceChildren(...rows);
}

// The emotion of the user's last message as the model reads it (the utterance_emotion decision), on their bubble;
// left out when the model cannot tell it (a refusal: no retrieval) or the request fails (the reply still comes).
async function showUserEmotion(model, body, bubble) {
  const choices = model.emotions.map((value) => ({ value }));
  const question = { type: "choice", name: "utterance_emotion", instructions: "The user's emotion.", choices };
  const system = body.background ? [{ role: "system", content: body.background }] : [];
  const response = await fetch("/v1/decisions", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify({ model: model.id, input: [...system, ...body.messages], questions: [question] }),
  });
  if (!response.ok) return;
  const [answer] = (await response.json()).answers;
  if (answer?.type !== "choice") return;
  showEmotion(bubble, answer.choice, Object.fromEntries(answer.probabilities.map((p) => [p.value, p.probability])));
  bubble.dataset.done = "true";
}

// Reads the SSE stream into `bot` as it arrives; returns the whole reply text at "data: [DONE]".
async function streamReply(body, bot, signal) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(), body: JSON.stringify(body), signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const text = bot.querySelector(".text");
  let pending = "";
  let reply = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("The reply stream ended before [DONE].");
    const lines = (pending + value).split("\n");
    pending = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return reply;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices[0]?.delta;  // the usage chunk has no choices
      if (delta?.emotion) showEmotion(bot, delta.emotion, delta.emotion_scores ?? {});
      if (chunk.choices[0]?.finish_reason === "length") bot.classList.add("cut");
      if (delta?.content) {
        reply += delta.content;
        text.textContent = reply;
        scrollDown();
      }
    }
  }
}

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || state.controller) return;
  const controller = new AbortController();
  state.controller = controller;
  $("send").disabled = true;
  $("error").hidden = true;
  $("message").value = "";
  const user = addUser(text);
  const bot = addBot();
  try {
    const model = state.model ?? (await loadModel());
    const body = await requestBody(model, text);
    showUserEmotion(model, body, user).catch(() => {});
    const reply = await streamReply(body, bot, controller.signal);
    state.history.push({ role: "user", content: text }, { role: "assistant", content: reply });
    $("video").value = "";
    bot.removeAttribute("aria-busy");
    bot.dataset.done = "true";
  } catch (error) {
    user.remove();
    bot.remove();
    if (!controller.signal.aborted) {
      showError(error);
      if (!$("message").value) $("message").value = text;
    }
  } finally {
    state.controller = null;
    $("send").disabled = false;
  }
}

function newConversation() {
  state.controller?.abort();
  state.history = [];
  $("conversation").replaceChildren();
  $("error").hidden = true;
  $("message").focus();
}

$("composer").addEventListener("submit", send);
$("message").addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  $("composer").requestSubmit();
});
$("new").addEventListener("click", newConversation);
$("api-key").value = localStorage.getItem(KEY_STORAGE) ?? "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  connect();
});
connect();
