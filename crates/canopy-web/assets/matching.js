// The deploy wizard's live count of the edges its labels match (a progressive enhancement:
// without script the review step shows the same). As labels are typed, after a short pause,
// it asks the console for the matching edges (one request at a time, the latest typed wins)
// and shows the server's answer, or its error, under the field.
(() => {
  const input = document.getElementById("labels");
  const out = document.getElementById("labels-matching");
  if (!input || !out) return;
  const url = out.dataset.url;
  let timer = null;
  let asked = 0;
  const ask = async () => {
    const mine = ++asked;
    const labels = input.value.trim();
    if (!labels) { out.textContent = ""; return; }
    try {
      const r = await fetch(url + "?labels=" + encodeURIComponent(labels), {
        credentials: "same-origin",
        headers: { "Accept": "text/plain" },
      });
      const text = await r.text();
      if (mine === asked) out.textContent = text;
    } catch (e) {
      if (mine === asked) out.textContent = "";
    }
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(ask, 300);
  });
  if (input.value.trim()) ask();
})();
