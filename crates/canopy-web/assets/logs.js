// The logs pages: shows the log's last lines, and with "Follow" keeps reading the streamed
// answer of the page's stream path (?follow=true) and appends what comes. The stream ends when
// the page goes away (the fetch is aborted and the server drops the tunnel); the text kept on
// the page is bounded.
const out = document.getElementById("logs-output");
const status = document.getElementById("logs-status");
const follow = document.getElementById("logs-follow");
const KEEP = 1024 * 1024; // characters kept on the page
let running = null;

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

async function read(followIt) {
  if (running) {
    running.abort();
  }
  const abort = new AbortController();
  running = abort;
  out.textContent = "";
  const url = new URL(out.dataset.stream, window.location.href);
  url.searchParams.set("tail", out.dataset.tail);
  if (followIt) {
    url.searchParams.set("follow", "true");
  }
  show("loading", "loading");
  follow.textContent = followIt ? "Stop following" : "Follow";
  try {
    const r = await fetch(url, { signal: abort.signal, credentials: "same-origin" });
    if (!r.ok) {
      const text = await r.text();
      let message = text;
      try {
        message = JSON.parse(text).message || text;
      } catch (_) {
        // a page or plain text: shown as it is
      }
      show("failed", r.status + ": " + message);
      return;
    }
    show(followIt ? "following" : "loaded", followIt ? "following" : "loaded");
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        break;
      }
      append(decoder.decode(value, { stream: true }));
    }
    show("ended", followIt ? "the stream ended" : "loaded");
  } catch (e) {
    if (!abort.signal.aborted) {
      show("failed", "failed: " + e);
    }
  } finally {
    if (running === abort) {
      running = null;
      follow.textContent = "Follow";
    }
  }
}

follow.disabled = false;
follow.addEventListener("click", () => {
  if (running && follow.textContent === "Stop following") {
    running.abort();
    running = null;
    follow.textContent = "Follow";
    show("stopped", "stopped");
  } else {
    read(true);
  }
});
window.addEventListener("pagehide", () => running && running.abort());
read(false);
