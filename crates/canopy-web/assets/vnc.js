// The VM console page: connects noVNC's RFB client (vendored, served by this server) to the
// page's console WebSocket under /ui/ (authenticated by the session cookie; the server checks
// the Origin). The status line says "connected" once the RFB handshake is done.
const screen = document.getElementById("vnc-screen");
const status = document.getElementById("vnc-status");
const cad = document.getElementById("vnc-cad");

function show(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

function socketUrl(path) {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

async function main() {
  let RFB;
  try {
    RFB = (await import(screen.dataset.novnc)).default;
  } catch (e) {
    show("failed", "failed to load the VNC client: " + e);
    return;
  }
  const rfb = new RFB(screen, socketUrl(screen.dataset.ws));
  rfb.scaleViewport = true;
  rfb.background = "#222";
  rfb.addEventListener("connect", () => {
    show("connected", "connected");
    cad.disabled = false;
    rfb.focus();
  });
  rfb.addEventListener("disconnect", (e) => {
    cad.disabled = true;
    show(
      "disconnected",
      e.detail.clean
        ? "disconnected"
        : "disconnected: the connection failed or was refused (reload to try again)",
    );
  });
  rfb.addEventListener("securityfailure", (e) => {
    show("failed", "refused by the VM's VNC server: " + (e.detail.reason || e.detail.status));
  });
  rfb.addEventListener("desktopname", (e) => {
    screen.setAttribute("aria-label", "screen of " + e.detail.name);
  });
  cad.addEventListener("click", () => rfb.sendCtrlAltDel());
  // Close the console when the page goes away (the server also closes idle consoles).
  window.addEventListener("pagehide", () => rfb.disconnect());
}

main();
