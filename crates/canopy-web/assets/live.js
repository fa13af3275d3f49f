// Live updates of the deployments list and of a deployment's page (docs/UI.md, "Live updates").
// A progressive enhancement: without script the pages are the same, they just do not change.
// The server's stream (data-live-src) says only "changed"; this script then fetches the page it
// shows (same URL, so the same filters and page of rows) and swaps in the parts marked
// data-live (matched by id). At most one fetch runs at a time; a change during a fetch causes
// one more. Ages of last reports (data-seen, seconds since the epoch) are kept current here.
(function () {
  'use strict';
  var root = document.querySelector('[data-live-src]');
  if (!root || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var status = document.getElementById('live-status');
  function say(text) {
    if (status) {
      status.hidden = false;
      status.textContent = text;
    }
  }
  // The server's clock at render time, against ours, so ages do not depend on the client's clock.
  var skew = Number(root.getAttribute('data-now')) * 1000 - Date.now();
  function ages() {
    var now = (Date.now() + skew) / 1000;
    document.querySelectorAll('[data-seen]').forEach(function (el) {
      var s = Math.max(0, Math.floor(now - Number(el.getAttribute('data-seen'))));
      el.textContent = s < 60 ? s + ' s ago'
        : s < 3600 ? Math.floor(s / 60) + ' min ago'
        : s < 86400 ? Math.floor(s / 3600) + ' h ago'
        : Math.floor(s / 86400) + ' d ago';
    });
  }
  var busy = false;
  var again = false;
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: 'same-origin', redirect: 'manual' })
      .then(function (r) {
        if (!r.ok) {
          throw new Error('status ' + r.status);
        }
        return r.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, 'text/html');
        var fresh = doc.querySelector('[data-live-src]');
        if (fresh) {
          skew = Number(fresh.getAttribute('data-now')) * 1000 - Date.now();
        }
        document.querySelectorAll('[data-live]').forEach(function (el) {
          var next = el.id && doc.getElementById(el.id);
          if (next) {
            el.replaceWith(document.importNode(next, true));
          }
        });
        ages();
        say('Live: updated ' + new Date().toLocaleTimeString());
      })
      .catch(function (e) {
        say('Live update failed (' + e.message + '): reload the page');
      })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }
  var events = new EventSource(root.getAttribute('data-live-src'));
  events.addEventListener('hello', function () {
    say('Live');
  });
  events.addEventListener('changed', refresh);
  events.addEventListener('ended', function (e) {
    events.close();
    say('Live updates stopped: ' + e.data);
  });
  events.onerror = function () {
    if (events.readyState === EventSource.CLOSED) {
      say('Live updates unavailable: reload the page for news');
    }
  };
  window.setInterval(ages, 5000);
})();
