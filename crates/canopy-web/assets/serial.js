// The serial console page: a WebSocket under /ui/ (session cookie, Origin checked by the
// server) carrying the VM's serial console; what arrives is appended to the <pre>, a line
// typed in the input is sent with a newline. The output kept on the page is bounded.
const out = document.getElementById("serial-output");
const status = document.getElementById("serial-status");
const form = document.getElementById("serial-form");
const input = document.getElementById("serial-input");
const KEEP = 256 * 1024; // characters of output kept on the page

function show(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

function append(text) {
  let all = out.textContent + text;
  if (all.length > KEEP) {
    all = all.slice(all.length - KEEP);
  }
  out.textContent = all;
  out.scrollTop = out.scrollHeight;
}

const url = new URL(out.dataset.ws, window.location.href);
url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
const ws = new WebSocket(url.href);
ws.binaryType = "arraybuffer";
const decoder = new TextDecoder();
const encoder = new TextEncoder();
ws.addEventListener("open", () => show("connected", "connected"));
ws.addEventListener("message", (e) => {
  append(typeof e.data === "string" ? e.data : decoder.decode(e.data, { stream: true }));
});
ws.addEventListener("close", (e) => {
  show("disconnected", "disconnected" + (e.reason ? ": " + e.reason : ""));
});
form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (ws.readyState === WebSocket.OPEN) {
    ws.send(encoder.encode(input.value + "\n"));
    input.value = "";
  }
});
window.addEventListener("pagehide", () => ws.close());
